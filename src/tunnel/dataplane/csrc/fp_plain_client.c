/* Compiled data plane: client mode (``client = yes``), the client side without TLS.
 *
 * A client-mode listener has no SSL_CTX (Python passes 0): its connections have no SSL
 * (c->ssl NULL), go from accept straight to the backend decision (no handshake), and the
 * relay's client side reads and writes the socket itself through the two functions here,
 * hooked at the top of pump_c2b and ssl_send; the end each way is a FIN (send_close_notify
 * shuts the socket down). The backend is reached over TLS (fp_backend_tls.c), as the
 * configuration requires. The Python plane's reference: tunnel/dataplane/plain_client.py.
 */
#include "fastplane.h"

/* pump_c2b without TLS: read what the client sent and pass it on (bounded per event). */
void plain_pump_c2b(plane *p, conn *c) {
    size_t cap = c->l->cap;
    for (int i = 0; i < BACKEND_READS; i++) {
        ssize_t n = recv(c->cfd, scratch, cap, 0);
        if (n > 0) {
            c->bytes_in += (size_t)n;
            tl_insert(&c->l->idle_list, c, p->now + c->l->idle_timeout);
            if (!send_backend(p, c, scratch, (size_t)n) || c->c2b_len || (size_t)n < cap)
                return;
            continue;
        }
        if (n == 0) {
            client_finished(p, c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            client_lost(p, c, errno);
        return;
    }
}

/* ssl_send without TLS: 1 all sent; 0 the rest is kept in b2c (flush_b2c retries it), or
 * the connection ended. A retry of b2c itself keeps only what is still unsent. */
int plain_send(plane *p, conn *c, const char *data, size_t n) {
    ssize_t w = send(c->cfd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            client_lost(p, c, errno);
            return 0;
        }
        w = 0;
    }
    if ((size_t)w >= n)
        return 1;
    size_t rest = n - (size_t)w;
    if (data == c->b2c) {
        memmove(c->b2c, c->b2c + w, rest);
        c->b2c_len = rest;
        return 0;
    }
    c->b2c = malloc(rest);
    if (!c->b2c) {
        close_early(p, c, PyUnicode_FromString("out of memory"));
        return 0;
    }
    memcpy(c->b2c, data + w, rest);
    c->b2c_len = rest;
    return 0;
}
