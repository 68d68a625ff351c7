/* Compiled data plane: TLS to backends (``tls = yes`` in a [backend:NAME]). See fastplane.h.
 *
 * The Python plane's reference is tunnel/dataplane/backend_tls.py and failover.py; this
 * file does the same on the backend socket:
 *  - Python hands, with the addresses to try, (SSLContext, SSL_CTX*, host flags or -1,
 *    server name per address, key log fd or -1). The SSLContext reference keeps the
 *    SSL_CTX alive while the addresses are tried (each SSL also holds a reference).
 *  - After each TCP/Unix connect: the PROXY header in plaintext (it is TCP-level), then
 *    SSL_connect, all under the attempt's connect deadline. The server name is set as
 *    CPython's wrap_bio sets it: SNI unless it is an IP address, and the host (or IP)
 *    checked against the certificate when the context has check_hostname. No session is
 *    reused, as on the Python plane.
 *  - A failed handshake fails the attempt: it is recorded with its text and reported to
 *    Python at once like any failed attempt (Python logs the WARNING that failover would
 *    hide otherwise); the next address is tried.
 *  - Our SSL objects never reach a CPython callback: CPython installs no verify or SNI
 *    callback on a client context, Python refuses one with a message callback
 *    (CompiledPlane.add), and a key log (keylog_file, SSLKEYLOGFILE) gets our callback
 *    instead of CPython's, which it still calls for CPython's own SSL objects (health
 *    checks, a listener on the Python plane); each line goes to the file in one write.
 *  - Relay (fp_backend_relay.c): SSL_write of a blocked chunk is retried with the same
 *    bytes (c2b), SSL_read runs until OpenSSL holds nothing more (read-ahead: epoll
 *    cannot announce what it holds), the client's end goes on as close_notify then FIN,
 *    the backend's close_notify (or a bare FIN, like the Python plane) as the client's
 *    close_notify.
 */
#include "fp_backend_tls.h"

#include <openssl/x509v3.h>
#include <sys/uio.h>

/* CPython's keylog callback (the same function for every context), for its own SSLs. */
static SSL_CTX_keylog_cb_func python_keylog;

/* A key log line of a backend connection: to the backend's file, one write per line
 * (O_APPEND: never interleaved with another worker's). Not ours: CPython's callback. */
static void keylog_line(const SSL *s, const char *line) {
    conn *c = SSL_get_ex_data(s, conn_index);
    if (!c || !c->bt || c->bt->ssl != s) {
        if (python_keylog)
            python_keylog(s, line);
        return;
    }
    if (c->bt->keylog_fd < 0 || !line)
        return;
    /* OpenSSL's line is NUL-terminated text it formatted (hex secrets): not network data. */
    struct iovec iov[2] = {
        {.iov_base = (void *)line, .iov_len = strlen(line)},
        {.iov_base = "\n", .iov_len = 1},
    };
    ssize_t w;
    do {
        w = writev(c->bt->keylog_fd, iov, 2);
    } while (w < 0 && errno == EINTR);
}

static void keylog_install(SSL_CTX *ctx) {
    SSL_CTX_keylog_cb_func cur = SSL_CTX_get_keylog_callback(ctx);
    if (cur == keylog_line)
        return;
    if (cur)
        python_keylog = cur;
    SSL_CTX_set_keylog_callback(ctx, keylog_line);
}

/* The backend's TLS settings of one decision; the preamble moves here from c2b (it goes
 * out in plaintext before each attempt's handshake, not once through the relay). */
int btls_take(conn *c, PyObject *tls) {
    PyObject *ctxobj, *names;
    unsigned long long ptr;
    int flags, keylog_fd;
    if (!PyArg_ParseTuple(tls, "OKiO!i", &ctxobj, &ptr, &flags, &PyTuple_Type, &names,
                          &keylog_fd))
        return -1;
    if (PyTuple_GET_SIZE(names) != c->ntargets) {
        PyErr_SetString(PyExc_ValueError, "one server name (or None) per address expected");
        return -1;
    }
    struct btls *bt = calloc(1, sizeof *bt);
    if (!bt) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(tls);
    bt->settings = tls;
    bt->ctx = (SSL_CTX *)(uintptr_t)ptr;
    bt->hostflags = flags;
    bt->keylog_fd = keylog_fd;
    if (keylog_fd >= 0)
        keylog_install(bt->ctx);
    bt->pre = c->c2b;
    bt->pre_len = c->c2b_len;
    c->c2b = NULL;
    c->c2b_len = c->c2b_off = 0;
    c->bt = bt;
    return 0;
}

/* The attempt's SSL (closed with the socket: a failed attempt, or the relay's end). */
void btls_drop(conn *c) {
    struct btls *bt = c->bt;
    if (!bt)
        return;
    SSL_free(bt->ssl); /* the socket BIO does not close the fd, nor send anything */
    bt->ssl = NULL;
    bt->pre_off = 0;
    bt->hs_want_write = bt->rd_want_write = bt->wr_want_read = bt->shut_pending = 0;
    bt->eof = bt->fin_sent = 0;
}

void btls_free(conn *c) {
    struct btls *bt = c->bt;
    if (!bt)
        return;
    btls_drop(c);
    free(bt->pre);
    Py_XDECREF(bt->settings);
    free(bt);
    c->bt = NULL;
}

/* ------------------------------------------------------------------ handshake */

static void record_attempt(plane *p, conn *c, int result, PyObject *text) {
    if (!text)
        goto fail;
    if (!c->attempts && !(c->attempts = PyList_New(0)))
        goto fail;
    PyObject *item = Py_BuildValue("(iidO)", c->cur, result, p->now - c->attempt_start, text);
    if (!item || PyList_Append(c->attempts, item) < 0) {
        Py_XDECREF(item);
        goto fail;
    }
    Py_DECREF(item);
    Py_DECREF(text);
    return;
fail:
    Py_XDECREF(text);
    PyErr_Clear();
}

/* Why the handshake failed, in the words of the Python plane (failover.py): the verify
 * message of a certificate that did not verify (CPython's own wording for a name
 * mismatch), else OpenSSL's reason. */
static PyObject *handshake_why(conn *c, unsigned long code) {
    SSL *s = c->bt->ssl;
    if (ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long result = SSL_get_verify_result(s);
        ERR_clear_error();
        PyObject *names = PyTuple_GET_ITEM(c->bt->settings, 3);
        PyObject *name = PyTuple_GET_ITEM(names, c->cur);
        if (result == X509_V_ERR_HOSTNAME_MISMATCH && name != Py_None)
            return PyUnicode_FromFormat(
                "Hostname mismatch, certificate is not valid for '%U'.", name);
        if (result == X509_V_ERR_IP_ADDRESS_MISMATCH && name != Py_None)
            return PyUnicode_FromFormat(
                "IP address mismatch, certificate is not valid for '%U'.", name);
        return PyUnicode_FromString(X509_verify_cert_error_string(result));
    }
    return ssl_error_text("");
}

/* The attempt failed in TLS: recorded with its text, told to Python at once (the pool, the
 * WARNING), then the next address. */
static void handshake_failed(plane *p, conn *c, unsigned long code) {
    PyObject *why = handshake_why(c, code);
    close_backend(c);
    record_attempt(p, c, TLS_FAILED,
                   why ? PyUnicode_FromFormat("TLS handshake failed: %U", why) : NULL);
    Py_XDECREF(why);
    report_attempts(p, c);
    c->cur++;
    try_connect(p, c);
}

static void handshake_closed(plane *p, conn *c) {
    close_backend(c);
    record_attempt(p, c, CLOSED_IN_HS, PyUnicode_FromString("closed during the TLS handshake"));
    report_attempts(p, c);
    c->cur++;
    try_connect(p, c);
}

/* The server name of this attempt, set as CPython's wrap_bio(server_hostname=) does. */
static int set_name(struct btls *bt, PyObject *name) {
    if (name == Py_None)
        return 1;
    const char *host = PyUnicode_AsUTF8(name);
    if (!host) {
        PyErr_Clear();
        return 0;
    }
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);
    if (!ip)
        ERR_clear_error();
    int ok = ip || SSL_set_tlsext_host_name(bt->ssl, host);
    if (ok && bt->hostflags >= 0) {
        X509_VERIFY_PARAM *param = SSL_get0_param(bt->ssl);
        X509_VERIFY_PARAM_set_hostflags(param, (unsigned int)bt->hostflags);
        ok = ip ? X509_VERIFY_PARAM_set1_ip(param, ASN1_STRING_get0_data(ip),
                                            (size_t)ASN1_STRING_length(ip))
                : X509_VERIFY_PARAM_set1_host(param, host, 0);
    }
    ASN1_OCTET_STRING_free(ip);
    return ok;
}

/* The PROXY header, then a fresh SSL: 1 ready, 0 wait (for EPOLLOUT), -1 attempt over. */
static int start(plane *p, conn *c) {
    struct btls *bt = c->bt;
    while (bt->pre_off < bt->pre_len) {
        ssize_t w = send(c->bfd, bt->pre + bt->pre_off, bt->pre_len - bt->pre_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            connect_result(p, c, errno);
            return -1;
        }
        bt->pre_off += (size_t)w;
    }
    SSL *s = SSL_new(bt->ctx);
    bt->ssl = s;
    if (!s || !SSL_set_fd(s, c->bfd) ||
        !set_name(bt, PyTuple_GET_ITEM(PyTuple_GET_ITEM(bt->settings, 3), c->cur))) {
        ERR_clear_error();
        connect_result(p, c, ENOMEM);
        return -1;
    }
    SSL_set_ex_data(s, conn_index, c); /* for the key log callback */
    SSL_set_connect_state(s);
    SSL_set_mode(s, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY);
    SSL_set_read_ahead(s, 1);
    return 1;
}

/* An event of the backend socket while connecting: the connect's result, the PROXY
 * header, the handshake; done, the relay starts (and reads what OpenSSL already holds). */
void btls_connecting(plane *p, conn *c) {
    struct btls *bt = c->bt;
    if (!bt->ssl) {
        int err = sock_error(c->bfd);
        if (err) {
            connect_result(p, c, err);
            return;
        }
        if (start(p, c) <= 0)
            return;
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(bt->ssl);
    if (r == 1) {
        SSL_set_options(bt->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF); /* a bare FIN: the end */
        connect_result(p, c, 0);
        if (c->state == S_RELAY)
            btls_pump(p, c);
        return;
    }
    int e = SSL_get_error(bt->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        bt->hs_want_write = e == SSL_ERROR_WANT_WRITE;
        return;
    }
    int err = errno;
    unsigned long code = ERR_peek_error();
    if (code && ERR_GET_REASON(code) != SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        handshake_failed(p, c, code);
        return;
    }
    ERR_clear_error();
    if (err)
        connect_result(p, c, err); /* reset: counted as the socket error it is */
    else
        handshake_closed(p, c);
}
