/* Compiled data plane: the relay both ways (client -> backend, backend -> client) and
 * the ends of each direction. The backend connect is in fp_connect.c. See fastplane.h. */
#include "fastplane.h"

/* ------------------------------------------------------------------ relay */

void send_close_notify(conn *c) {
    if (!c->ssl) { /* client mode: no TLS, the FIN says it */
        shutdown(c->cfd, SHUT_WR);
        c->shut_pending = 0;
        return;
    }
    ERR_clear_error();
    int r = SSL_shutdown(c->ssl);
    c->shut_pending = 0;
    if (r < 0 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_WRITE)
        c->shut_pending = 1;
    ERR_clear_error();
}

void backend_finished(plane *p, conn *c) {
    c->backend_done = 1;
    send_close_notify(c);
    if (c->client_done)
        finish(p, c);
}

void client_finished(plane *p, conn *c) {
    c->client_done = 1;
    /* FIN; close_notify first to a TLS backend. A plain backend that ended already gets
     * its FIN from the close (finish, below): no shutdown() call for it. */
    if (c->c2b_len == 0 && !(c->backend_done && !c->bt))
        backend_eof(c);
    if (c->backend_done)
        finish(p, c);
    else if (!c->reason)
        set_reason_static(c, R_CLIENT_CLOSED);
}

/* Write plaintext to the backend; keep what it does not take (bounded by the chunk). */
int send_backend(plane *p, conn *c, const char *data, size_t n) {
    if (c->bt)
        return btls_write(p, c, data, n);
    ssize_t w = send(c->bfd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            close_early(p, c, errno_text("backend error: ", errno));
            return 0;
        }
        w = 0;
    }
    if ((size_t)w < n) {
        size_t rest = n - (size_t)w;
        c->c2b = malloc(rest);
        if (!c->c2b) {
            close_early(p, c, PyUnicode_FromString("out of memory"));
            return 0;
        }
        memcpy(c->c2b, data + w, rest);
        c->c2b_len = rest;
        c->c2b_off = 0;
    }
    return 1;
}

void flush_c2b(plane *p, conn *c) {
    if (c->bt) {
        btls_flush(p, c);
        return;
    }
    while (c->c2b_len) {
        ssize_t w = send(c->bfd, c->c2b + c->c2b_off, c->c2b_len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            close_early(p, c, errno_text("backend error: ", errno));
            return;
        }
        c->c2b_off += (size_t)w;
        c->c2b_len -= (size_t)w;
    }
    free(c->c2b);
    c->c2b = NULL;
    c->c2b_off = 0;
    if (c->client_done)
        shutdown(c->bfd, SHUT_WR);
    else if (!c->ssl || c->client_more || c->client_gone || SSL_has_pending(c->ssl))
        pump_c2b(p, c); /* OpenSSL may hold decrypted input that no epoll event announces */
    /* else the relay watches the client again (level-triggered): no read() for EAGAIN */
}

/* Decrypt what the client sent and pass it on, until OpenSSL wants more input or the
 * backend stops taking it. */
void pump_c2b(plane *p, conn *c) {
    size_t cap = c->l->cap;
    if (c->c2b_len || c->client_done || c->state != S_RELAY)
        return; /* resumed by flush_c2b once the backend took the rest */
    if (!c->ssl) {
        plain_pump_c2b(p, c); /* client mode (fp_plain_client.c) */
        return;
    }
    c->rd_want_write = 0;
    for (;;) {
        size_t len = 0;
        int end = 0, sslerr = 0, err = 0;
        PyObject *why = NULL; /* taken at once: a TLS backend's SSL_write clears the queue */
        while (len < cap) {
            ERR_clear_error();
            errno = 0;
            int n = SSL_read(c->ssl, scratch + len, (int)(cap - len));
            if (n > 0) {
                len += (size_t)n;
                if (!SSL_has_pending(c->ssl))
                    break; /* epoll says when the kernel has more: no read for EAGAIN */
                continue;
            }
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_READ)
                break;
            if (e == SSL_ERROR_WANT_WRITE) {
                c->rd_want_write = 1;
                break;
            }
            if (e == SSL_ERROR_ZERO_RETURN) {
                end = 1;
                break;
            }
            err = errno;
            sslerr = e == SSL_ERROR_SSL || ERR_peek_error() != 0;
            if (sslerr)
                why = ssl_error_text("TLS error from client: ");
            end = 2;
            break;
        }
        if (len) {
            c->bytes_in += len;
            tl_insert(&c->l->idle_list, c, p->now + c->l->idle_timeout);
            if (!send_backend(p, c, scratch, len)) {
                Py_XDECREF(why);
                return;
            }
        }
        if (end == 1) {
            ERR_clear_error();
            client_finished(p, c);
            return;
        }
        if (end == 2) {
            c->fatal = 1;
            if (sslerr)
                close_early(p, c, why);
            else if (err)
                client_lost(p, c, err);
            else {
                ERR_clear_error();
                client_finished(p, c); /* a bare FIN */
            }
            return;
        }
        if (len < cap || c->c2b_len || c->rd_want_write)
            return;
    }
}

/* Encrypt to the client, the records gathered into one send; a blocked SSL_write keeps
 * its bytes for the retry. 1: OpenSSL took them all (some may wait in c->out: the caller
 * stops reading the backend), 0: blocked, -1: the connection is ending. */
int ssl_send(plane *p, conn *c, const char *data, size_t n) {
    if (!c->ssl)
        return plain_send(p, c, data, n); /* client mode (fp_plain_client.c) */
    ERR_clear_error();
    errno = 0;
    out_begin(c);
    for (; c->tickets_due; c->tickets_due--) /* in front of the first reply, one send */
        SSL_new_session_ticket(c->ssl);
    int r = SSL_write(c->ssl, data, (int)n);
    int saved = errno;
    if (out_end(c) < 0) {
        c->fatal = 1;
        client_lost(p, c, errno);
        return -1;
    }
    errno = saved;
    if (r > 0)
        return 1;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        if (data != c->b2c) {
            c->b2c = malloc(n);
            if (!c->b2c) {
                close_early(p, c, PyUnicode_FromString("out of memory"));
                return 0;
            }
            memcpy(c->b2c, data, n);
            c->b2c_len = n;
        }
        return 0;
    }
    c->fatal = 1;
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        client_lost(p, c, errno ? errno : EPIPE);
        return -1;
    }
    close_early(p, c, ssl_error_text("TLS error: "));
    return -1;
}

void flush_b2c(plane *p, conn *c) {
    int r = out_flush(c);
    if (r < 0) {
        c->fatal = 1;
        client_lost(p, c, errno);
        return;
    }
    if (r == 0)
        return;
    if (c->b2c_len) {
        if (ssl_send(p, c, c->b2c, c->b2c_len) <= 0)
            return;
        free(c->b2c);
        c->b2c = NULL;
        c->b2c_len = 0;
        if (c->bt)
            btls_resume(p, c); /* OpenSSL may hold more of the backend's input */
    }
    if (c->shut_pending)
        send_close_notify(c);
    if (!c->shut_pending && !c->out_len && c->state == S_CLOSING)
        conn_close(p, c);
}

void pump_b2c(plane *p, conn *c) {
    if (c->bt) {
        btls_pump(p, c);
        return;
    }
    size_t cap = c->l->cap;
    for (int i = 0; i < BACKEND_READS; i++) {
        ssize_t n = recv(c->bfd, scratch, cap, 0);
        if (n > 0) {
            c->bytes_out += (size_t)n;
            tl_insert(&c->l->idle_list, c, p->now + c->l->idle_timeout);
            if (ssl_send(p, c, scratch, (size_t)n) <= 0 || c->out_len || (size_t)n < cap)
                return;
            continue;
        }
        if (n == 0) {
            backend_finished(p, c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            close_early(p, c, errno_text("backend error: ", errno));
        return;
    }
}
