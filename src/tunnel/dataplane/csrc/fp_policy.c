/* Compiled data plane: listener policies that act inside the handshake. See fastplane.h.
 *
 *  - keylog_file: OpenSSL's keylog callback appends each NSS key-log line to the file
 *    Python opened (the header and the 0600 mode come from Python's set_keylog), one
 *    write per line as CPython's own callback does, never calling Python. CPython's
 *    callback reads its SSLSocket from the SSL's app data, which our SSL objects do not
 *    have: it is replaced on every context of the listener (SNI may switch to any of
 *    them), and only ever called for an SSL that is not ours.
 *  - deny_ja4: the message callback, having copied the first ClientHello, asks Python
 *    (one call) before OpenSSL parses it, as the Python plane's reader decides before
 *    OpenSSL sees a byte. A refused hello (a listed JA4, or one the reader refuses) gets
 *    the plaintext alert the Python plane sends (tunnel/dataplane/hello.py), whatever
 *    OpenSSL thought of it: OpenSSL's own output goes to a memory BIO from then on, and
 *    the client-hello callback stops it before any key exchange. Before OpenSSL reads a
 *    byte, the first bytes are peeked at: ones that cannot start a ClientHello (not TLS,
 *    SSLv2, over the reader's limits) get the reader's refusal too.
 */
#include "fastplane.h"

#include <sys/uio.h>

struct fp_policy {
    int keylog_fd;       /* -1: no keylog_file */
    PyObject *on_hello;  /* NULL: no deny_ja4; else on_hello(lid, id, hello, length, records) */
    PyObject *on_first;  /* with on_hello: on_first(lid, id, first bytes) */
};

#define PEEK_BYTES 9 /* a record header and a handshake header */
#define MAX_RECORD (16384 + 256) /* as the Python plane's reader (wire/clienthello.py) */
#define MAX_HELLO 16384

/* CPython's keylog callback, kept for the SSL objects of Python's own sockets. */
static SSL_CTX_keylog_cb_func python_keylog;

static void keylog_line(const SSL *s, const char *line) {
    conn *c = SSL_get_ex_data(s, conn_index);
    if (!c) {
        if (python_keylog)
            python_keylog(s, line);
        return;
    }
    struct fp_policy *pol = c->l ? c->l->policy : NULL;
    if (!pol || pol->keylog_fd < 0 || !line)
        return;
    /* OpenSSL's line is NUL-terminated text it formatted (hex secrets): not network data. */
    struct iovec iov[2] = {
        {.iov_base = (void *)line, .iov_len = strlen(line)},
        {.iov_base = "\n", .iov_len = 1},
    };
    ssize_t w;
    do { /* O_APPEND: one write per line, never interleaved with another worker's */
        w = writev(pol->keylog_fd, iov, 2);
    } while (w < 0 && errno == EINTR);
}

static void keylog_on(SSL_CTX *ctx) {
    if (!ctx)
        return;
    SSL_CTX_keylog_cb_func cur = SSL_CTX_get_keylog_callback(ctx);
    if (cur && cur != keylog_line)
        python_keylog = cur;
    SSL_CTX_set_keylog_callback(ctx, keylog_line);
}

static void keylog_off(SSL_CTX *ctx) {
    if (ctx && SSL_CTX_get_keylog_callback(ctx) == keylog_line)
        SSL_CTX_set_keylog_callback(ctx, python_keylog);
}

/* Stop OpenSSL at a refused ClientHello, before it answers (it answers into a sink). */
static int client_hello_cb(SSL *s, int *alert, void *arg) {
    (void)arg;
    conn *c = SSL_get_ex_data(s, conn_index);
    if (!c || !c->denied)
        return SSL_CLIENT_HELLO_SUCCESS;
    *alert = SSL_AD_HANDSHAKE_FAILURE; /* written to the sink, never seen by the client */
    return SSL_CLIENT_HELLO_ERROR;
}

/* Called by the message callback with the client's first ClientHello (c->hello, or only
 * its size in c->hello_len when too large to keep), before OpenSSL parses it: one Python
 * call decides. A refusal is remembered (c->denied, the reason) and whatever OpenSSL
 * writes from here on goes to a memory BIO: OpenSSL stops in client_hello_cb, or earlier
 * on a hello it cannot parse, and do_handshake sends the Python plane's alert instead. */
void hello_policy(conn *c, SSL *ssl) {
    struct fp_policy *pol = c->l->policy;
    if (!pol || !pol->on_hello)
        return;
    PyObject *hello;
    if (c->hello)
        hello = PyBytes_FromStringAndSize((const char *)c->hello, (Py_ssize_t)c->hello_len);
    else
        hello = (Py_INCREF(Py_None), Py_None);
    PyObject *d = NULL;
    if (hello)
        d = PyObject_CallFunction(pol->on_hello, "iKOni", c->l->lid, c->id, hello,
                                  (Py_ssize_t)(c->hello ? 0 : c->hello_len),
                                  (int)c->hello_records);
    Py_XDECREF(hello);
    int description;
    PyObject *reason;
    if (d && d != Py_None &&
        PyArg_ParseTuple(d, "iU;on_hello: None or (alert, reason)", &description, &reason) &&
        description >= 0 && description < 256) {
        Py_INCREF(reason);
        set_reason(c, reason);
        c->denied = 1;
        c->deny_alert = (unsigned char)description;
        BIO *sink = BIO_new(BIO_s_mem());
        if (sink)
            SSL_set0_wbio(ssl, sink); /* the write BIO (fp_out.c) does not own the fd */
    } else if (!d || PyErr_Occurred()) { /* a broken policy must not stop every handshake */
        PyErr_WriteUnraisable(pol->on_hello);
    }
    Py_XDECREF(d);
}

/* Do the first bytes look like the start of a ClientHello the reader takes? Checks what
 * arrived of: handshake record (0x16), version major 3, record length 1..MAX_RECORD,
 * ClientHello (1), its length up to MAX_HELLO. Only bytes < n are read. */
static int looks_right(const unsigned char *b, ssize_t n) {
    if (n >= 1 && b[0] != 0x16)
        return 0;
    if (n >= 2 && b[1] != 3)
        return 0;
    if (n >= 5) {
        unsigned rec = (unsigned)b[3] << 8 | b[4];
        if (rec == 0 || rec > MAX_RECORD)
            return 0;
    }
    if (n >= 6 && b[5] != SSL3_MT_CLIENT_HELLO)
        return 0;
    if (n >= 9 && ((unsigned long)b[6] << 16 | (unsigned long)b[7] << 8 | b[8]) > MAX_HELLO)
        return 0;
    return 1;
}

/* deny_ja4, before OpenSSL reads a byte: the first bytes waiting on the socket (peeked,
 * not taken) must start a ClientHello the Python plane's reader would read, or the
 * connection is refused with its decode_error and its reason (Python words it, only for
 * bytes that look wrong). 1: refused (closed); 0: OpenSSL may go on. */
int hello_peek(plane *p, conn *c) {
    struct fp_policy *pol = c->l->policy;
    c->peeked = 1;
    if (!pol || !pol->on_first)
        return 0;
    unsigned char first[PEEK_BYTES];
    ssize_t n;
    do {
        n = recv(c->cfd, first, sizeof first, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        c->peeked = 0; /* nothing came yet (the handshake starts at accept): peek when it has */
        return 1;
    }
    if (n <= 0 || looks_right(first, n))
        return 0; /* EOF and errors are OpenSSL's to see */
    PyObject *d = PyObject_CallFunction(pol->on_first, "iKy#", c->l->lid, c->id,
                                        (const char *)first, (Py_ssize_t)n);
    int description;
    PyObject *reason;
    if (d && d != Py_None &&
        PyArg_ParseTuple(d, "iU;on_first: None or (alert, reason)", &description, &reason) &&
        description >= 0 && description < 256) {
        Py_INCREF(reason);
        set_reason(c, reason);
        Py_DECREF(d);
        c->deny_alert = (unsigned char)description;
        hello_refuse(p, c);
        return 1;
    }
    if (!d || PyErr_Occurred())
        PyErr_WriteUnraisable(pol->on_first);
    Py_XDECREF(d);
    return 0;
}

/* A refused ClientHello (do_handshake, once OpenSSL stopped): the plaintext fatal alert the
 * Python plane writes (TLS 1.2 record version), FIN and linger; the reason is set. */
void hello_refuse(plane *p, conn *c) {
    const unsigned char rec[7] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, c->deny_alert};
    ssize_t w;
    ERR_clear_error();
    do { /* a fresh socket's send buffer takes 7 bytes; a short write only loses the alert */
        w = send(c->cfd, rec, sizeof rec, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    c->fatal = 1;
    close_early(p, c, NULL);
}

/* set_policy(lid, keylog_fd, on_hello, on_first): keylog_fd (-1: none) is the plane's from
 * here on; on_hello (None: no deny_ja4) is called once per connection at its ClientHello,
 * on_first (with on_hello) only for first bytes that cannot start a ClientHello. */
PyObject *Plane_set_policy(plane *p, PyObject *args) {
    int lid, fd;
    PyObject *on_hello, *on_first;
    if (!PyArg_ParseTuple(args, "iiOO", &lid, &fd, &on_hello, &on_first))
        return NULL;
    listener *l = find_listener(p, lid);
    if (!l || l->policy) {
        if (fd >= 0)
            close(fd);
        return PyErr_Format(PyExc_ValueError, "listener %d: unknown or its policy is set", lid);
    }
    l->policy = calloc(1, sizeof *l->policy);
    if (!l->policy) {
        if (fd >= 0)
            close(fd);
        return PyErr_NoMemory();
    }
    l->policy->keylog_fd = fd;
    if (fd >= 0) {
        keylog_on(l->ctx);
        for (Py_ssize_t i = 0; i < l->nexact; i++)
            keylog_on(l->exact[i].ctx);
        for (Py_ssize_t i = 0; i < l->nwild; i++)
            keylog_on(l->wild[i].ctx);
    }
    if (on_hello != Py_None && on_first != Py_None) {
        Py_INCREF(on_hello);
        l->policy->on_hello = on_hello;
        Py_INCREF(on_first);
        l->policy->on_first = on_first;
        SSL_CTX_set_client_hello_cb(l->ctx, client_hello_cb, NULL);
    }
    Py_RETURN_NONE;
}

/* The plane goes: give the contexts back to Python as they were. */
void policy_release(listener *l) {
    struct fp_policy *pol = l->policy;
    if (!pol)
        return;
    if (pol->keylog_fd >= 0) {
        keylog_off(l->ctx);
        for (Py_ssize_t i = 0; l->exact && i < l->nexact; i++)
            keylog_off(l->exact[i].ctx);
        for (Py_ssize_t i = 0; l->wild && i < l->nwild; i++)
            keylog_off(l->wild[i].ctx);
        close(pol->keylog_fd);
    }
    if (pol->on_hello && l->ctx)
        SSL_CTX_set_client_hello_cb(l->ctx, NULL, NULL);
    Py_XDECREF(pol->on_hello);
    Py_XDECREF(pol->on_first);
    free(pol);
    l->policy = NULL;
}
