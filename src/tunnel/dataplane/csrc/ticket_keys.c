/* The session-ticket key callback in C: the module tunnel._native._ticketkeys.
 *
 * Why C: OpenSSL calls this callback for every ticket it issues (two per full TLS 1.3
 * handshake, one more when a resumed ticket is renewed) and for every ticket a client
 * brings back (each resumption). Through ctypes each call was a trip into Python (tunnel/_native/tickets.py keeps that version as the
 * fallback where this module is not built). The policy -- which keys, when the file is
 * re-read -- stays in Python (tunnel/tls/tickets.py); only the keys are here.
 *
 * Theory of operation:
 *  - A table holds the keys of one ticket key file: keys[0] encrypts new tickets, every
 *    key decrypts. Python replaces them all at once (set_keys) when the file changes; the
 *    old ones are wiped (OPENSSL_cleanse).
 *  - install() puts the table in the SSL_CTX's ex_data and sets the callback. OpenSSL
 *    calls the callback of the connection's initial context (its session_ctx), but the
 *    only context the callback can reach from the SSL is SSL_get_SSL_CTX(), which is the
 *    one an SNI callback switched to. Python installs the same table on every context of
 *    a listener, so either finds it; a context without a table issues no ticket and
 *    decrypts none (return 0), which is always safe.
 *  - CPython releases the GIL around SSL_do_handshake, so the callback may run in any
 *    thread while Python replaces the keys: a mutex per table guards them. Each SSL_CTX
 *    holding the table, and the Python capsule, own one reference; the last one frees it.
 *  - The cipher is fetched once (EVP_CIPHER_fetch), and each key carries its HMAC
 *    parameters (key, digest) ready for EVP_MAC_CTX_set_params: nothing is looked up by
 *    name per call that need not be.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <string.h>

#define NAME_SIZE 16 /* OpenSSL's key_name[16] */
#define SECRET_SIZE 32
#define RECORD_SIZE (NAME_SIZE + 2 * SECRET_SIZE) /* one key in the file: name, HMAC, AES */
#define CAPSULE "tunnel._native._ticketkeys.table"

typedef struct {
    unsigned char name[NAME_SIZE];
    unsigned char hmac[SECRET_SIZE];
    unsigned char aes[SECRET_SIZE];
    OSSL_PARAM params[3]; /* HMAC key and digest, pointing into this key */
} tk_key;

typedef struct {
    pthread_mutex_t lock; /* guards keys, count and the counters */
    int refs;             /* __atomic: the capsule's and one per SSL_CTX */
    size_t count;
    tk_key *keys; /* keys[0] encrypts */
    unsigned long long encrypted, resumed, renewed, unknown;
} tk_table;

static EVP_CIPHER *aes_cbc;  /* AES-256-CBC, fetched once */
static char sha256[] = "SHA256"; /* OSSL_PARAM wants a non-const pointer */
static int table_index = -1; /* SSL_CTX ex_data slot of the table */

static void wipe_keys(tk_key *keys, size_t count) {
    if (!keys)
        return;
    OPENSSL_cleanse(keys, count * sizeof(*keys));
    free(keys);
}

static void table_release(tk_table *t) {
    if (!t || __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    wipe_keys(t->keys, t->count);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* SSL_CTX ex_data free callback: the context lets go of its table. */
static void table_unlink(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp) {
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    table_release(ptr);
}

static tk_key *find(tk_table *t, const unsigned char *name) {
    for (size_t i = 0; i < t->count; i++)
        if (memcmp(t->keys[i].name, name, NAME_SIZE) == 0)
            return &t->keys[i]; /* the first of equal names wins, as in the Python version */
    return NULL;
}

/* SSL_CTX_set_tlsext_ticket_key_evp_cb: 1 done, 2 decrypted with an old key (OpenSSL
 * renews the ticket with the current one), 0 no such key (full handshake, new ticket) or
 * no table, -1 error. */
static int ticket_cb(SSL *s, unsigned char key_name[NAME_SIZE], unsigned char *iv,
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc) {
    tk_table *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), table_index);
    if (!t)
        return 0;
    if (enc && RAND_bytes(iv, EVP_CIPHER_get_iv_length(aes_cbc)) != 1)
        return -1;
    int ret = -1;
    pthread_mutex_lock(&t->lock);
    if (t->count == 0) {
        ret = 0;
    } else if (enc) {
        tk_key *k = &t->keys[0];
        memcpy(key_name, k->name, NAME_SIZE);
        if (EVP_MAC_CTX_set_params(hctx, k->params) == 1 &&
            EVP_EncryptInit_ex(cctx, aes_cbc, NULL, k->aes, iv) == 1) {
            ret = 1;
            t->encrypted++;
        }
    } else {
        tk_key *k = find(t, key_name);
        if (!k) {
            ret = 0;
            t->unknown++;
        } else if (EVP_MAC_CTX_set_params(hctx, k->params) == 1 &&
                   EVP_DecryptInit_ex(cctx, aes_cbc, NULL, k->aes, iv) == 1) {
            ret = k == &t->keys[0] ? 1 : 2;
            if (ret == 1)
                t->resumed++;
            else
                t->renewed++;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return ret;
}

/* ------------------------------------------------------------------ Python functions */

static tk_table *table_of(PyObject *capsule) {
    return PyCapsule_GetPointer(capsule, CAPSULE); /* sets the error on a wrong object */
}

static void capsule_free(PyObject *capsule) {
    table_release(PyCapsule_GetPointer(capsule, CAPSULE));
}

static PyObject *new_table(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
    tk_table *t = calloc(1, sizeof(*t));
    if (!t)
        return PyErr_NoMemory();
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t);
        return PyErr_Format(PyExc_RuntimeError, "cannot create a mutex");
    }
    t->refs = 1;
    PyObject *capsule = PyCapsule_New(t, CAPSULE, capsule_free);
    if (!capsule)
        table_release(t);
    return capsule;
}

/* set_keys(table, keys): keys is one or more 80-byte records (name, HMAC key, AES key),
 * the first one current. Replaces every key at once; the old ones are wiped. */
static PyObject *set_keys(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *capsule;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "Oy*", &capsule, &data))
        return NULL;
    tk_table *t = table_of(capsule);
    size_t count = (size_t)data.len / RECORD_SIZE;
    if (!t || data.len == 0 || (size_t)data.len % RECORD_SIZE) {
        if (t)
            PyErr_Format(PyExc_ValueError, "keys must be one or more %d-byte records",
                         RECORD_SIZE);
        PyBuffer_Release(&data);
        return NULL;
    }
    tk_key *keys = calloc(count, sizeof(*keys));
    if (!keys) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    const unsigned char *record = data.buf;
    for (size_t i = 0; i < count; i++, record += RECORD_SIZE) {
        tk_key *k = &keys[i];
        memcpy(k->name, record, NAME_SIZE);
        memcpy(k->hmac, record + NAME_SIZE, SECRET_SIZE);
        memcpy(k->aes, record + NAME_SIZE + SECRET_SIZE, SECRET_SIZE);
        k->params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k->hmac,
                                                         SECRET_SIZE);
        k->params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, sha256, 0);
        k->params[2] = OSSL_PARAM_construct_end();
    }
    PyBuffer_Release(&data); /* the caller's bytes: Python's to wipe or not */
    pthread_mutex_lock(&t->lock);
    tk_key *old = t->keys;
    size_t old_count = t->count;
    t->keys = keys;
    t->count = count;
    pthread_mutex_unlock(&t->lock);
    wipe_keys(old, old_count);
    Py_RETURN_NONE;
}

/* install(table, ssl_ctx): ssl_ctx is a verified SSL_CTX* (tunnel._native.openssl). */
static PyObject *install(PyObject *Py_UNUSED(m), PyObject *args) {
    PyObject *capsule, *pointer;
    if (!PyArg_ParseTuple(args, "OO!", &capsule, &PyLong_Type, &pointer))
        return NULL;
    tk_table *t = table_of(capsule);
    SSL_CTX *ctx = PyLong_AsVoidPtr(pointer);
    if (!t || !ctx) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "no SSL_CTX");
        return NULL;
    }
    tk_table *before = SSL_CTX_get_ex_data(ctx, table_index);
    if (before == t)
        Py_RETURN_NONE;
    __atomic_add_fetch(&t->refs, 1, __ATOMIC_RELAXED);
    if (!SSL_CTX_set_ex_data(ctx, table_index, t)) {
        table_release(t);
        return PyErr_Format(PyExc_RuntimeError, "SSL_CTX_set_ex_data failed");
    }
    table_release(before);
    if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1)
        return PyErr_Format(PyExc_RuntimeError, "OpenSSL refused the ticket key callback");
    Py_RETURN_NONE;
}

/* counts(table): (encrypted, resumed, renewed, unknown) -- tickets issued, tickets of the
 * current key and of an older key decrypted, tickets of no key known. */
static PyObject *counts(PyObject *Py_UNUSED(m), PyObject *capsule) {
    tk_table *t = table_of(capsule);
    if (!t)
        return NULL;
    pthread_mutex_lock(&t->lock);
    unsigned long long e = t->encrypted, r = t->resumed, n = t->renewed, u = t->unknown;
    pthread_mutex_unlock(&t->lock);
    return Py_BuildValue("(KKKK)", e, r, n, u);
}

static PyObject *openssl_version(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
    return PyLong_FromUnsignedLong(OpenSSL_version_num());
}

static PyMethodDef methods[] = {
    {"new_table", new_table, METH_NOARGS, "A new, empty key table (a capsule)."},
    {"set_keys", set_keys, METH_VARARGS, "Replace a table's keys (80-byte records)."},
    {"install", install, METH_VARARGS, "Use a table's keys for an SSL_CTX* (an int)."},
    {"counts", counts, METH_O, "(encrypted, resumed, renewed, unknown) of a table."},
    {"openssl_version", openssl_version, METH_NOARGS, "OpenSSL_version_num() of our libssl."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_ticketkeys", "The session-ticket key callback in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ticketkeys(void) {
    if (!aes_cbc && !(aes_cbc = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL)))
        return PyErr_Format(PyExc_ImportError, "OpenSSL has no AES-256-CBC");
    if (table_index < 0)
        table_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, table_unlink);
    if (table_index < 0)
        return PyErr_Format(PyExc_ImportError, "no SSL_CTX ex_data index");
    return PyModule_Create(&moduledef);
}
