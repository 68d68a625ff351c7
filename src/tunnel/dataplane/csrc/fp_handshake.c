/* Compiled data plane: the client's TLS handshake. See fastplane.h.
 *
 * do_handshake drives SSL_do_handshake (after a passthrough sniff or a deny_ja4 peek, if
 * the listener has them) and turns its failures into close reasons; sni_callback picks
 * the SSL_CTX from the listener's SNI table; hello_callback keeps the ClientHello for JA4;
 * handshake_done asks Python for the backend decision (on_handshake). */
#include "fastplane.h"

/* ------------------------------------------------------------------ handshake */

/* The client's certificate (DER), where the listener asks for one; else None. */
static PyObject *peer_cert(conn *c) {
    X509 *cert = c->l->verify && c->ssl ? SSL_get0_peer_certificate(c->ssl) : NULL;
    int len = cert ? i2d_X509(cert, NULL) : -1;
    if (len <= 0)
        Py_RETURN_NONE;
    PyObject *der = PyBytes_FromStringAndSize(NULL, len);
    if (!der)
        return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(der);
    if (i2d_X509(cert, &out) != len) { /* never trust a second answer blindly */
        Py_DECREF(der);
        Py_RETURN_NONE;
    }
    return der;
}

/* Why a client certificate was refused (allow-lists, CA, CRL), asked of Python at once:
 * the allow-list check records its reason for the handshake that just failed. NULL: it
 * was not about the client certificate. */
static PyObject *rejected_reason(plane *p, conn *c, unsigned long code) {
    long result = X509_V_OK;
    if (ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED)
        result = SSL_get_verify_result(c->ssl);
    PyObject *why = PyObject_CallFunction(p->on_rejected, "iKls", c->l->lid, c->id, result,
                                          X509_verify_cert_error_string(result));
    if (!why) {
        PyErr_WriteUnraisable(p->on_rejected);
        return NULL;
    }
    PyObject *text = NULL;
    if (PyUnicode_Check(why)) {
        text = PyUnicode_FromFormat("handshake failed: %U", why);
        ERR_clear_error();
    }
    Py_DECREF(why);
    if (!text)
        PyErr_Clear();
    return text;
}

/* The message callback, while the handshake runs: a copy of the client's first
 * ClientHello message (4-byte header included) for JA4. One copy per connection, bounded
 * by HELLO_LIMIT; a larger one is not kept (JA4 "-", as the Python plane's reader refuses
 * it). Later hellos (after a HelloRetryRequest) are not looked at: JA4 is of the first. */
void hello_callback(int write_p, int version, int content_type, const void *buf, size_t len,
                    SSL *ssl, void *arg) {
    (void)version;
    conn *c = arg;
    const unsigned char *msg = buf;
    if (!write_p && content_type == SSL3_RT_HEADER && c && !c->hello_seen &&
        c->hello_records < 255)
        c->hello_records++; /* records read before the hello is whole (deny_ja4) */
    if (write_p || content_type != SSL3_RT_HANDSHAKE || !c || c->hello_seen || len < 4 ||
        msg[0] != SSL3_MT_CLIENT_HELLO)
        return;
    c->hello_seen = 1;
    if (len > HELLO_LIMIT) {
        c->hello_len = len; /* not kept; its size says why (deny_ja4: fp_policy.c) */
    } else {
        c->hello = malloc(len);
        if (c->hello) {
            memcpy(c->hello, msg, len);
            c->hello_len = len;
        }
    }
    if (c->l->policy)
        hello_policy(c, ssl); /* deny_ja4, before OpenSSL parses the hello */
}

/* The kept ClientHello as bytes (None without one), released here: asked for once. */
PyObject *take_hello(conn *c) {
    if (!c->hello)
        Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize((const char *)c->hello, (Py_ssize_t)c->hello_len);
    free(c->hello);
    c->hello = NULL;
    c->hello_len = 0;
    return out;
}

void handshake_done(plane *p, conn *c) {
    c->state = S_CONNECTING;
    tl_remove(c);
    if (c->ssl) {
        SSL_set_msg_callback(c->ssl, NULL); /* no callback per record of the relay */
        hold_reads(c, SSL_get_rbio(c->ssl), 0);
        if (SSL_version(c->ssl) == TLS1_3_VERSION) { /* sent by ssl_send (see do_accept) */
            long n = SSL_session_reused(c->ssl) ? 1 : (long)SSL_CTX_get_num_tickets(SSL_get_SSL_CTX(c->ssl));
            c->tickets_due = (unsigned)(n < 0 ? 0 : n > 7 ? 7 : n);
        }
        if (quiet_handshake(p, c))
            return; /* the listener's one decision, no call into Python (fp_quiet.c) */
    }
    PyObject *local = Py_None;
    Py_INCREF(local);
    if (c->l->need_local) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(c->cfd, (struct sockaddr *)&ss, &len) == 0) {
            Py_DECREF(local);
            local = addr_tuple((struct sockaddr *)&ss);
        }
    }
    PyObject *facts = tls_facts(c);
    PyObject *peer = addr_tuple(&c->peer.sa);
    PyObject *cert = peer_cert(c);
    PyObject *hello = take_hello(c);
    PyObject *d = NULL;
    if (facts && peer && local && cert && hello)
        d = PyObject_CallFunction(p->on_handshake, "iKOOOdOO", c->l->lid, c->id, facts, peer,
                                  local, p->now - c->started, cert, hello);
    Py_XDECREF(hello);
    Py_XDECREF(cert);
    Py_XDECREF(facts);
    Py_XDECREF(peer);
    Py_XDECREF(local);
    apply_decision(p, c, d);
    Py_XDECREF(d);
}

void do_handshake(plane *p, conn *c) {
    if (c->sniff && pt_sniff(p, c))
        return; /* passthrough routes: the ClientHello decides first (fp_passthrough.c) */
    if (c->l->policy && !c->peeked && hello_peek(p, c))
        return; /* deny_ja4: the first bytes cannot start a ClientHello (fp_policy.c) */
    if (c->out_len) { /* the last flight first: the client cannot go on without it */
        int f = out_flush(c);
        if (f < 0) {
            c->fatal = 1;
            client_lost(p, c, errno);
        }
        if (f <= 0 || !c->hs_want_write)
            return;
    }
    ERR_clear_error();
    errno = 0;
    out_begin(c);
    int r = SSL_do_handshake(c->ssl);
    int saved = errno;
    if (out_end(c) < 0) {
        c->fatal = 1;
        client_lost(p, c, errno);
        return;
    }
    errno = saved;
    if (r == 1) {
        handshake_done(p, c);
        return;
    }
    if (c->denied) { /* deny_ja4 refused the ClientHello: OpenSSL stopped (fp_policy.c) */
        hello_refuse(p, c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->hs_want_write = e == SSL_ERROR_WANT_WRITE;
        return;
    }
    c->fatal = 1;
    int err = errno;
    unsigned long code = ERR_peek_error();
    if (e == SSL_ERROR_SSL && ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        set_reason_static(c, R_HS_EOF);
        conn_close(p, c);
    } else if (c->sni_refused) {
        ERR_clear_error();
        close_early(p, c, PyUnicode_FromString("handshake failed: unknown server name"));
    } else if (code) {
        PyObject *why = c->l->verify ? rejected_reason(p, c, code) : NULL;
        close_early(p, c, why ? why : ssl_error_text("handshake failed: "));
    } else if (err) {
        client_lost(p, c, err);
    } else {
        set_reason_static(c, R_HS_EOF);
        conn_close(p, c);
    }
}

int sni_callback(SSL *s, int *alert, void *arg) {
    listener *l = arg;
    const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    if (!name || !l)
        return SSL_TLSEXT_ERR_OK;
    char norm[256];
    size_t n = strlen(name);
    SSL_CTX *chosen = NULL;
    if (n > 0 && n < sizeof norm) {
        for (size_t i = 0; i < n; i++) {
            char ch = name[i];
            norm[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        if (norm[n - 1] == '.')
            n--;
        norm[n] = 0;
        for (Py_ssize_t i = 0; i < l->nexact && !chosen; i++)
            if (strcmp(l->exact[i].name, norm) == 0)
                chosen = l->exact[i].ctx;
        const char *dot = strchr(norm, '.');
        if (!chosen && dot && dot != norm && dot[1])
            for (Py_ssize_t i = 0; i < l->nwild && !chosen; i++)
                if (strcmp(l->wild[i].name, dot + 1) == 0)
                    chosen = l->wild[i].ctx;
    }
    if (!chosen) {
        if (l->strict) {
            conn *c = SSL_get_ex_data(s, conn_index);
            if (c)
                c->sni_refused = 1; /* the close reason says so (unknown_sni) */
            *alert = SSL_AD_UNRECOGNIZED_NAME;
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        }
        return SSL_TLSEXT_ERR_OK;
    }
    if (chosen != l->ctx && !SSL_set_SSL_CTX(s, chosen)) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}
