/* Compiled data plane: the relay over TLS to a backend (SSL_read/SSL_write on that side).
 * The handshake and the settings are in fp_backend_tls.c, which says how it all works;
 * fp_relay.c hands each backend operation here when c->bt is set. */
#include "fp_backend_tls.h"

uint32_t btls_mask(conn *c, uint32_t bm) {
    struct btls *bt = c->bt;
    if (c->state == S_CONNECTING)
        return bt->ssl && !bt->hs_want_write ? EPOLLIN : EPOLLOUT;
    if (c->c2b_len && bt->wr_want_read)
        bm = (bm & ~(uint32_t)EPOLLOUT) | EPOLLIN; /* writable is no news to SSL_write */
    if (bt->rd_want_write || bt->shut_pending)
        bm |= EPOLLOUT;
    return bm;
}

/* 1 written, 0 blocked (retry with the same bytes), -1 failed (the connection ends). */
static int bwrite(plane *p, conn *c, const char *data, size_t n) {
    struct btls *bt = c->bt;
    ERR_clear_error();
    errno = 0;
    int r = SSL_write(bt->ssl, data, (int)n);
    if (r > 0)
        return 1;
    int e = SSL_get_error(bt->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        bt->wr_want_read = e == SSL_ERROR_WANT_READ;
        return 0;
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        close_early(p, c, errno_text("backend error: ", errno ? errno : EPIPE));
    else
        close_early(p, c, ssl_error_text("backend TLS error: "));
    return -1;
}

/* send_backend for a TLS backend: what is not taken is kept in c2b for the retry. */
int btls_write(plane *p, conn *c, const char *data, size_t n) {
    int r = bwrite(p, c, data, n);
    if (r < 0)
        return 0;
    if (r == 0 && data != c->c2b) {
        c->c2b = malloc(n);
        if (!c->c2b) {
            close_early(p, c, PyUnicode_FromString("out of memory"));
            return 0;
        }
        memcpy(c->c2b, data, n);
        c->c2b_len = n;
        c->c2b_off = 0;
    }
    return 1;
}

/* flush_c2b for a TLS backend: the blocked chunk again; then the client's end, or more. */
void btls_flush(plane *p, conn *c) {
    if (c->c2b_len) {
        if (bwrite(p, c, c->c2b, c->c2b_len) <= 0)
            return;
        free(c->c2b);
        c->c2b = NULL;
        c->c2b_len = c->c2b_off = 0;
    }
    if (c->client_done)
        backend_eof(c);
    else
        pump_c2b(p, c);
}

/* The client is done sending: close_notify, then FIN (a blocked close_notify: later). */
void backend_eof(conn *c) {
    struct btls *bt = c->bt;
    if (c->bfd < 0)
        return;
    if (!bt) {
        shutdown(c->bfd, SHUT_WR);
        return;
    }
    if (bt->fin_sent)
        return;
    ERR_clear_error();
    int r = SSL_shutdown(bt->ssl);
    bt->shut_pending = r < 0 && SSL_get_error(bt->ssl, r) == SSL_ERROR_WANT_WRITE;
    ERR_clear_error();
    if (!bt->shut_pending) {
        shutdown(c->bfd, SHUT_WR);
        bt->fin_sent = 1;
    }
}

/* Why reading failed, in words, taken at once (a later SSL call clears OpenSSL's queue);
 * NULL: no error, a bare end of input. */
static PyObject *read_error(int e) {
    int err = errno;
    if (e == SSL_ERROR_SSL || ERR_peek_error() != 0)
        return ssl_error_text("backend TLS error: ");
    if (err)
        return errno_text("backend error: ", err);
    return NULL;
}

static void read_failed(plane *p, conn *c, PyObject *why) {
    if (why) {
        close_early(p, c, why);
        return;
    }
    ERR_clear_error();
    if (PyErr_Occurred())
        close_early(p, c, NULL); /* the text could not be made */
    else
        backend_finished(p, c);
}

/* pump_b2c for a TLS backend: decrypt and pass on until OpenSSL wants more input or the
 * client stops taking it. What OpenSSL still holds then is read by btls_resume. */
void btls_pump(plane *p, conn *c) {
    struct btls *bt = c->bt;
    size_t cap = c->l->cap;
    if (c->b2c_len || c->backend_done || c->state != S_RELAY || !bt->ssl)
        return;
    bt->rd_want_write = 0;
    for (int i = 0; i < BACKEND_READS; i++) {
        size_t len = 0;
        int end = 0;
        PyObject *why = NULL;
        while (len < cap) {
            ERR_clear_error();
            errno = 0;
            int n = SSL_read(bt->ssl, scratch + len, (int)(cap - len));
            if (n > 0) {
                len += (size_t)n;
                if (!SSL_has_pending(bt->ssl))
                    break;
                continue;
            }
            int e = SSL_get_error(bt->ssl, n);
            if (e == SSL_ERROR_WANT_READ)
                break;
            if (e == SSL_ERROR_WANT_WRITE) {
                bt->rd_want_write = 1;
                break;
            }
            end = e == SSL_ERROR_ZERO_RETURN ? 1 : 2;
            if (end == 2)
                why = read_error(e);
            break;
        }
        if (len) {
            c->bytes_out += len;
            tl_insert(&c->l->idle_list, c, p->now + c->l->idle_timeout);
            int sent = ssl_send(p, c, scratch, len);
            if (c->state != S_RELAY) {
                Py_XDECREF(why);
                return;
            }
            if (sent <= 0) { /* the client is slow: the end is passed on after the rest */
                if (end == 1)
                    bt->eof = 1;
                else if (end == 2)
                    read_failed(p, c, why);
                return;
            }
        }
        if (end == 1) {
            ERR_clear_error();
            backend_finished(p, c);
            return;
        }
        if (end == 2) {
            read_failed(p, c, why);
            return;
        }
        if (len < cap || bt->rd_want_write)
            return;
    }
}

/* The client took a blocked chunk: go on with what OpenSSL holds (no epoll event says). */
void btls_resume(plane *p, conn *c) {
    if (c->state != S_RELAY || c->b2c_len)
        return;
    if (c->bt->eof) {
        c->bt->eof = 0;
        backend_finished(p, c);
        return;
    }
    btls_pump(p, c);
}

/* An event of the backend socket while relaying (errors were handled by the caller). */
void btls_relay(plane *p, conn *c, uint32_t ev) {
    struct btls *bt = c->bt;
    if (ev & EPOLLOUT) {
        if (bt->shut_pending)
            backend_eof(c);
        if (c->c2b_len && !bt->wr_want_read)
            flush_c2b(p, c);
        if (c->state == S_RELAY && bt->rd_want_write)
            btls_pump(p, c);
    }
    if (c->state != S_RELAY || !(ev & (EPOLLIN | EPOLLHUP)))
        return;
    if (bt->wr_want_read && c->c2b_len) {
        bt->wr_want_read = 0;
        flush_c2b(p, c);
    }
    if (c->state == S_RELAY && (c->bmask & EPOLLIN))
        btls_pump(p, c);
}
