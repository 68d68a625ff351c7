/* The JA4 fingerprint of a ClientHello handshake message, in C.
 *
 * Theory of operation: the compiled plane hands Python the client's ClientHello message
 * (fastplane.h), and the connection's log line, its PROXY TLV, deny_ja4 and ja4 routes
 * need its JA4. Computed in Python (tunnel.wire.clienthello + tunnel.wire.ja4) that was
 * most of the Python work of a connection; ja4(message) here gives the same answer:
 *  - the same parse and the same refusals as parse_handshake_message (limit 16384): any
 *    message that Python's reader refuses gives None here too, even where the refused
 *    part (a supported_groups list, say) does not enter the fingerprint;
 *  - then the same three parts as tunnel.wire.ja4.ja4 (GREASE left out, counts capped
 *    at 99, sorted lists hashed with SHA-256 and cut to 12 hex digits).
 * tests/unit/test_ja4_native.py holds the two equal, on real hellos and on generated ones.
 * Every length is checked against what remains before it is used; nothing is kept.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastplane.h"

#define JA4_LIMIT 16384 /* tunnel.wire.clienthello.DEFAULT_LIMIT */
#define EXT_SNI 0x0000
#define EXT_GROUPS 0x000A
#define EXT_SIGALGS 0x000D
#define EXT_ALPN 0x0010
#define EXT_VERSIONS 0x002B

typedef struct {
    const uint8_t *p; /* an extension's body, NULL when absent */
    size_t len;
} span;

typedef struct {
    unsigned legacy;
    uint16_t *ciphers, *exts; /* wire order, GREASE included */
    size_t n_ciphers, n_exts;
    span sni, alpn, sigalgs, groups, versions;
} hello_view;

static unsigned u16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

static int is_grease(unsigned v) { return (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff); }

static int cmp_u16(const void *a, const void *b) {
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* A 2-byte-length vector of 16-bit values filling the whole body (_u16_vector). */
static int valid_u16_vector(span s) {
    if (!s.p)
        return 1;
    if (s.len < 2 || u16(s.p) != s.len - 2)
        return 0;
    return s.len > 2 && (s.len - 2) % 2 == 0;
}

static int valid_server_name(span s) {
    if (s.len <= 2 || u16(s.p) != s.len - 2)
        return 0;
    size_t pos = 2, end = s.len;
    int host = 0;
    while (pos < end) {
        if (pos + 3 > end)
            return 0;
        unsigned kind = s.p[pos], len = u16(s.p + pos + 1);
        pos += 3;
        if (pos + len > end)
            return 0;
        const uint8_t *name = s.p + pos;
        pos += len;
        if (kind != 0)
            continue; /* only host_name is defined; others are skipped, as Python does */
        if (host || len == 0)
            return 0;
        for (unsigned i = 0; i < len; i++)
            if (name[i] == 0 || name[i] >= 0x80)
                return 0;
        host = 1;
    }
    return host;
}

/* Checks the ALPN body; *first / *first_len: the first protocol name. */
static int valid_alpn(span s, const uint8_t **first, size_t *first_len) {
    if (s.len <= 2 || u16(s.p) != s.len - 2)
        return 0;
    size_t pos = 2, end = s.len;
    while (pos < end) {
        size_t len = s.p[pos];
        if (len == 0 || pos + 1 + len > end)
            return 0;
        if (!*first) {
            *first = s.p + pos + 1;
            *first_len = len;
        }
        pos += 1 + len;
    }
    return 1;
}

static int valid_versions(span s) {
    if (!s.p)
        return 1;
    if (s.len == 0 || s.p[0] != s.len - 1)
        return 0;
    return s.len > 1 && (s.len - 1) % 2 == 0;
}

/* The body's ciphers and extensions, into v (arrays sized by the caller); 0 if refused. */
static int parse_body(const uint8_t *b, size_t end, hello_view *v) {
    if (end < 35 || b[34] > 32)
        return 0;
    v->legacy = u16(b);
    size_t pos = 35 + (size_t)b[34];
    if (pos + 2 > end)
        return 0;
    size_t len = u16(b + pos);
    pos += 2;
    if (pos + len > end || len % 2 || len == 0)
        return 0;
    for (size_t i = 0; i < len; i += 2)
        v->ciphers[v->n_ciphers++] = (uint16_t)u16(b + pos + i);
    pos += len;
    if (pos >= end || b[pos] == 0)
        return 0;
    pos += 1 + (size_t)b[pos];
    if (pos > end)
        return 0;
    if (pos == end)
        return 1; /* no extensions at all */
    if (pos + 2 > end)
        return 0;
    len = u16(b + pos);
    pos += 2;
    if (pos + len != end)
        return 0;
    while (pos < end) {
        if (pos + 4 > end)
            return 0;
        unsigned kind = u16(b + pos);
        len = u16(b + pos + 2);
        pos += 4;
        if (pos + len > end)
            return 0;
        v->exts[v->n_exts++] = (uint16_t)kind;
        span here = {b + pos, len};
        if (kind == EXT_SNI)
            v->sni = here;
        else if (kind == EXT_ALPN)
            v->alpn = here;
        else if (kind == EXT_SIGALGS)
            v->sigalgs = here;
        else if (kind == EXT_GROUPS)
            v->groups = here;
        else if (kind == EXT_VERSIONS)
            v->versions = here;
        pos += len;
    }
    return 1;
}

static int has_duplicates(const uint16_t *values, size_t n, uint16_t *scratch_area) {
    memcpy(scratch_area, values, n * sizeof *values);
    qsort(scratch_area, n, sizeof *scratch_area, cmp_u16);
    for (size_t i = 1; i < n; i++)
        if (scratch_area[i] == scratch_area[i - 1])
            return 1;
    return 0;
}

/* "002f,1301,..." of values, appended at text + *at (room checked by the caller). */
static void hex_list(char *text, size_t *at, const uint16_t *values, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        char *o = text + *at;
        if (i)
            *o++ = ',';
        o[0] = digits[values[i] >> 12];
        o[1] = digits[values[i] >> 8 & 15];
        o[2] = digits[values[i] >> 4 & 15];
        o[3] = digits[values[i] & 15];
        *at += (size_t)(o + 4 - (text + *at));
    }
}

/* The first 12 hex digits of SHA-256(text), or twelve zeros for an empty text. */
static int hash12(const char *text, size_t len, char out[12]) {
    static EVP_MD *sha256;
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    if (!len) {
        memset(out, '0', 12);
        return 1;
    }
    if (!sha256 && !(sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)))
        return 0;
    if (!EVP_Digest(text, len, md, NULL, sha256, NULL))
        return 0;
    for (int i = 0; i < 6; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    return 1;
}

static size_t drop_grease(uint16_t *values, size_t n) {
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_grease(values[i]))
            values[kept++] = values[i];
    return kept;
}

static const char *version_text(unsigned version) {
    switch (version) {
    case 0x0304: return "13";
    case 0x0303: return "12";
    case 0x0302: return "11";
    case 0x0301: return "10";
    case 0x0300: return "s3";
    case 0x0002: return "s2";
    default: return "00";
    }
}

static int alnum(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Part a, "t13d1516h2", into out (at least 11 bytes). */
static void part_a(const hello_view *v, size_t n_ciphers, size_t n_exts, int sni,
                   const uint8_t *alpn, size_t alpn_len, uint16_t *versions, size_t n_versions,
                   char *out) {
    unsigned version = v->legacy;
    if (n_versions) {
        version = 0;
        for (size_t i = 0; i < n_versions; i++)
            if (versions[i] > version)
                version = versions[i];
    }
    char a[3] = "00";
    if (alpn) {
        uint8_t head = alpn[0], tail = alpn[alpn_len - 1];
        static const char digits[] = "0123456789abcdef";
        if (alnum(head) && alnum(tail)) {
            a[0] = (char)head;
            a[1] = (char)tail;
        } else {
            a[0] = digits[head >> 4];
            a[1] = digits[tail & 15];
        }
    }
    snprintf(out, 11, "t%s%c%02u%02u%s", version_text(version), sni ? 'd' : 'i',
             (unsigned)(n_ciphers > 99 ? 99 : n_ciphers), (unsigned)(n_exts > 99 ? 99 : n_exts),
             a);
}

/* The JA4 of message (whole handshake message, header included), as a str; None if the
 * reader refuses it. Arrays are sized from the message: at most len/2 values each. */
static PyObject *ja4_of(const uint8_t *msg, size_t size) {
    if (size < 4 || msg[0] != 1)
        Py_RETURN_NONE;
    size_t length = (size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3];
    if (length > JA4_LIMIT || length != size - 4)
        Py_RETURN_NONE;
    size_t cap = length / 2 + 1;
    /* ciphers, extensions, sort room, sigalgs, versions: one allocation */
    uint16_t *mem = PyMem_Malloc(5 * cap * sizeof(uint16_t));
    char *text = PyMem_Malloc(5 * cap + 8);
    PyObject *result = NULL;
    if (!mem || !text) {
        PyErr_NoMemory();
        goto done;
    }
    hello_view v = {.ciphers = mem, .exts = mem + cap};
    uint16_t *sorted = mem + 2 * cap, *sigs = mem + 3 * cap, *versions = mem + 4 * cap;
    const uint8_t *alpn = NULL;
    size_t alpn_len = 0;
    if (!parse_body(msg + 4, length, &v) || has_duplicates(v.exts, v.n_exts, sorted) ||
        (v.sni.p && !valid_server_name(v.sni)) ||
        (v.alpn.p && !valid_alpn(v.alpn, &alpn, &alpn_len)) || !valid_u16_vector(v.sigalgs) ||
        !valid_u16_vector(v.groups) || !valid_versions(v.versions)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    size_t n_sigs = 0, n_versions = 0;
    for (size_t i = 2; v.sigalgs.p && i < v.sigalgs.len; i += 2)
        sigs[n_sigs++] = (uint16_t)u16(v.sigalgs.p + i);
    for (size_t i = 1; v.versions.p && i < v.versions.len; i += 2)
        versions[n_versions++] = (uint16_t)u16(v.versions.p + i);
    size_t n_ciphers = drop_grease(v.ciphers, v.n_ciphers);
    size_t n_exts = drop_grease(v.exts, v.n_exts);
    n_sigs = drop_grease(sigs, n_sigs);
    n_versions = drop_grease(versions, n_versions);
    int sni = 0;
    size_t listed = 0;
    for (size_t i = 0; i < n_exts; i++) {
        sni |= v.exts[i] == EXT_SNI;
        if (v.exts[i] != EXT_SNI && v.exts[i] != EXT_ALPN)
            sorted[listed++] = v.exts[i];
    }
    char a[11], hc[12], he[12];
    part_a(&v, n_ciphers, n_exts, sni, alpn, alpn_len, versions, n_versions, a);
    qsort(v.ciphers, n_ciphers, sizeof(uint16_t), cmp_u16);
    size_t at = 0;
    hex_list(text, &at, v.ciphers, n_ciphers);
    if (!hash12(text, at, hc))
        goto crypto_error;
    qsort(sorted, listed, sizeof(uint16_t), cmp_u16);
    at = 0;
    hex_list(text, &at, sorted, listed);
    if (listed && n_sigs) {
        text[at++] = '_';
        hex_list(text, &at, sigs, n_sigs);
    }
    if (!hash12(text, at, he))
        goto crypto_error;
    result = PyUnicode_FromFormat("%s_%.12s_%.12s", a, hc, he);
    goto done;
crypto_error:
    PyErr_SetString(PyExc_RuntimeError, "SHA-256 from libcrypto failed");
done:
    PyMem_Free(mem);
    PyMem_Free(text);
    return result;
}

PyObject *fp_ja4(PyObject *Py_UNUSED(m), PyObject *arg) {
    if (arg == Py_None)
        Py_RETURN_NONE;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = ja4_of(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return result;
}
