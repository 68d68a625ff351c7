/* Compiled data plane: helpers, epoll interest, accept gate, closing. See fastplane.h. */
#include "fastplane.h"

/* ------------------------------------------------------------------ small helpers */

double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tl_remove(conn *c) {
    tlist *tl = c->tl;
    if (!tl)
        return;
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        tl->head = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    else
        tl->tail = c->tprev;
    c->tprev = c->tnext = NULL;
    c->tl = NULL;
}

/* Insert ordered by deadline, walking from the tail (usually O(1): same durations). */
void tl_insert(tlist *tl, conn *c, double deadline) {
    tl_remove(c);
    c->deadline = deadline;
    conn *after = tl->tail;
    while (after && after->deadline > deadline)
        after = after->tprev;
    c->tprev = after;
    c->tnext = after ? after->tnext : tl->head;
    if (c->tnext)
        c->tnext->tprev = c;
    else
        tl->tail = c;
    if (after)
        after->tnext = c;
    else
        tl->head = c;
    c->tl = tl;
}

void set_reason(conn *c, PyObject *reason) {
    Py_XSETREF(c->reason, reason);
}

void set_reason_static(conn *c, PyObject *reason) {
    Py_INCREF(reason);
    set_reason(c, reason);
}

/* "[Errno N] text", as Python words an OSError. */
PyObject *errno_text(const char *prefix, int err) {
    return PyUnicode_FromFormat("%s[Errno %d] %s", prefix, err, strerror(err));
}

/* The reason of the first queued OpenSSL error, lower case with spaces (like ssl.SSLError
 * .reason made readable by the Python plane). */
PyObject *ssl_error_text(const char *prefix) {
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    char text[128];
    if (r) {
        size_t i = 0;
        for (; r[i] && i < sizeof text - 1; i++) {
            char ch = r[i];
            text[i] = (ch == '_') ? ' ' : (char)((ch >= 'A' && ch <= 'Z') ? ch + 32 : ch);
        }
        text[i] = 0;
    } else {
        snprintf(text, sizeof text, "error %lx", e);
    }
    ERR_clear_error();
    return PyUnicode_FromFormat("%s%s", prefix, text);
}

int sock_error(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

/* ------------------------------------------------------------------ interest */

void want(plane *p, conn *c) {
    uint32_t cm = 0, bm = 0;
    switch (c->state) {
    case S_PROXY:
        cm = CLIENT_IN;
        break;
    case S_HANDSHAKE:
        cm = c->hs_want_write || c->out_len ? EPOLLOUT : CLIENT_IN;
        if (c->sniff) /* bytes peeked but not read must not wake us again (fp_passthrough.c) */
            cm = EPOLLIN | EPOLLRDHUP | EPOLLET;
        break;
    case S_CONNECTING:
        /* A TLS client is watched as before, for its FIN (client_left), until it says
         * more; passed-through or plaintext input waits in the socket (no interest). */
        if (c->out_len)
            cm = EPOLLOUT;
        else if (c->ssl && !c->client_gone && !c->client_more)
            cm = CLIENT_IN;
        bm = c->bt ? btls_mask(c, 0) : EPOLLOUT;
        break;
    case S_RELAY:
        if (!c->client_done && c->c2b_len == 0 && !c->rd_want_write)
            cm |= CLIENT_IN;
        if (c->b2c_len || c->out_len || c->shut_pending || c->rd_want_write)
            cm |= EPOLLOUT;
        if (!c->backend_done && c->b2c_len == 0 && c->out_len == 0 && !c->shut_pending)
            bm |= EPOLLIN;
        if (c->c2b_len)
            bm |= EPOLLOUT;
        if (c->bt)
            bm = btls_mask(c, bm);
        break;
    case S_LINGER:
        cm = CLIENT_IN;
        break;
    case S_CLOSING:
        cm = EPOLLOUT;
        break;
    default:
        return;
    }
    c->cmask = cm;
    if (c->bfd >= 0)
        c->bmask = bm;
    if (!c->dirty) { /* applied by batch_end(), before the next wait */
        c->dirty = 1;
        c->dnext = p->dirty;
        p->dirty = c;
    }
}

/* Bring the epoll set in line with what want() chose for c. */
static void apply_interest(plane *p, conn *c) {
    if (c->cmask != c->creg) {
        struct epoll_event ev = {.events = c->cmask, .data.u64 = (uint64_t)(uintptr_t)c};
        if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, c->cfd, &ev) == 0)
            c->creg = c->cmask;
    }
    if (c->bfd < 0)
        return;
    if (c->bmask == 0) {
        if (c->bmask_set) {
            /* Nothing wanted from the backend (it is done, or the client is not taking
             * data): unregister it, or a hang-up it sent meanwhile is reported at every
             * wait. */
            epoll_ctl(p->epfd, EPOLL_CTL_DEL, c->bfd, NULL);
            c->bmask_set = 0;
        }
    } else if (!c->bmask_set || c->bmask != c->breg) {
        struct epoll_event ev = {.events = c->bmask, .data.u64 = (uint64_t)(uintptr_t)c | 1};
        if (epoll_ctl(p->epfd, c->bmask_set ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->bfd, &ev) == 0) {
            c->breg = c->bmask;
            c->bmask_set = 1;
        }
    }
}

/* ------------------------------------------------------------------ accept gate */

void listener_poll(listener *l, int on) {
    for (int i = 0; i < l->nsocks; i++) {
        lsock *s = &l->socks[i];
        if (s->fd < 0 || s->polled == on)
            continue;
        if (on) {
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)s};
            if (epoll_ctl(l->p->epfd, EPOLL_CTL_ADD, s->fd, &ev) == 0)
                s->polled = 1;
        } else {
            epoll_ctl(l->p->epfd, EPOLL_CTL_DEL, s->fd, NULL);
            s->polled = 0;
        }
    }
}

void gate_apply(plane *p) {
    for (int i = 0; i < p->nls; i++) {
        listener *l = p->ls[i];
        listener_poll(l, !(p->held || p->stopped || p->full || p->starved || l->full));
    }
}

void notice(plane *p, const char *what, listener *l, long limit) {
    PyObject *r = PyObject_CallFunction(p->on_notice, "sil", what, l ? l->lid : -1, limit);
    if (!r)
        PyErr_WriteUnraisable(p->on_notice);
    Py_XDECREF(r);
}

void gate_opened(plane *p, listener *l) {
    p->total++;
    l->count++;
    l->accepted++;
    if (p->total >= p->max_total && !p->full) {
        p->full = 1;
        notice(p, "worker_full", NULL, p->max_total);
        gate_apply(p);
    } else if (l->count >= l->max_conns && !l->full) {
        l->full = 1;
        notice(p, "listener_full", l, l->max_conns);
        gate_apply(p);
    }
}

void gate_closed(plane *p, listener *l) {
    p->total--;
    l->count--;
    int changed = p->starved;
    p->starved = 0;
    if (p->full && p->total <= p->max_total * RESUME_FRACTION) {
        p->full = 0;
        changed = 1;
    }
    if (l->full && l->count <= l->max_conns * RESUME_FRACTION) {
        l->full = 0;
        changed = 1;
    }
    if (changed)
        gate_apply(p);
}

/* ------------------------------------------------------------------ closing */

PyObject *addr_tuple(const struct sockaddr *sa) {
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(a->sin6_port));
    }
    Py_RETURN_NONE;
}

PyObject *tls_facts(conn *c) {
    if (!c->ssl) /* client mode: no TLS on the client side */
        return Py_BuildValue("(zzzzOz)", NULL, NULL, NULL, NULL, Py_False, NULL);
    const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    const SSL_CIPHER *cipher = SSL_get_current_cipher(c->ssl);
    int done = SSL_is_init_finished(c->ssl);
    const char *group = NULL;
    if (done) { /* OpenSSL 3.0 reads a NULL session before the handshake is finished */
        int nid = (int)SSL_get_negotiated_group(c->ssl);
        group = nid > 0 ? SSL_group_to_name(c->ssl, nid) : NULL;
    }
    return Py_BuildValue(
        "(zz#zzOz)", sni, alpn ? (const char *)alpn : NULL, (Py_ssize_t)alpn_len,
        done ? SSL_get_version(c->ssl) : NULL, cipher && done ? SSL_CIPHER_get_name(cipher) : NULL,
        SSL_session_reused(c->ssl) ? Py_True : Py_False, group);
}

/* The end of a connection: everything is released, Python gets the summary. */
void conn_close(plane *p, conn *c) {
    if (c->state == S_CLOSED)
        return;
    int was = c->state;
    c->state = S_CLOSED;
    tl_remove(c);
    if (!c->reason)
        set_reason_static(c, was == S_HANDSHAKE ? R_HS_EOF : R_DONE);
    int quiet = c->l->q && quiet_close(p, c); /* counted in C: no on_close (fp_quiet.c) */
    PyObject *facts = quiet ? NULL : tls_facts(c);
    PyObject *hello = quiet ? NULL : take_hello(c); /* here if the handshake did not complete */
    if (c->bfd >= 0)
        close(c->bfd);
    close(c->cfd);
    c->bfd = c->cfd = -1;
    SSL_free(c->ssl);
    c->ssl = NULL;
    btls_free(c);
    free(c->c2b);
    free(c->b2c);
    out_free(c);
    free(c->targets);
    c->c2b = c->b2c = NULL;
    c->targets = NULL;
    c->c2b_len = c->b2c_len = 0;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = p->dead;
    c->prev = NULL;
    p->dead = c;
    gate_closed(p, c->l);
    if (quiet)
        return;
    PyObject *peer = addr_tuple(&c->peer.sa);
    PyObject *r = NULL;
    if (facts && peer && hello)
        r = PyObject_CallFunction(
            p->on_close, "iKOOOKKdiOO", c->l->lid, c->id, c->reason, peer, facts, c->bytes_in,
            c->bytes_out, p->now - c->started, c->backend_index,
            c->attempts ? c->attempts : Py_None, hello);
    if (!r)
        PyErr_WriteUnraisable(p->on_close);
    Py_XDECREF(r);
    Py_XDECREF(hello);
    Py_XDECREF(facts);
    Py_XDECREF(peer);
}

/* The end of every batch (and of every call from Python that changed connections): the
 * interest chosen meanwhile goes to the epoll set, then the connections closed meanwhile
 * are freed (a later event of the same batch could still have named them). */
void batch_end(plane *p) {
    while (p->dirty) {
        conn *c = p->dirty;
        p->dirty = c->dnext;
        c->dirty = 0;
        c->dnext = NULL;
        if (c->state != S_CLOSED)
            apply_interest(p, c);
    }
    while (p->dead) {
        conn *c = p->dead;
        p->dead = c->next;
        Py_XDECREF(c->attempts);
        Py_XDECREF(c->reason);
        free(c);
    }
}

void close_backend(conn *c) {
    btls_drop(c); /* a TLS backend's SSL goes with its socket */
    if (c->bfd >= 0) {
        close(c->bfd);
        c->bfd = -1;
        c->bmask_set = 0;
    }
}

/* End from our side: flush the alert or close_notify, FIN, read and discard for a while
 * (so that unread input does not turn into an RST that could destroy the alert). */
void close_early(plane *p, conn *c, PyObject *reason) {
    if (!reason)
        PyErr_Clear();
    if (c->state >= S_LINGER) {
        Py_XDECREF(reason);
        return;
    }
    if (reason)
        set_reason(c, reason);
    if (c->ssl && c->state > S_HANDSHAKE && !c->backend_done && !c->fatal) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* a blocked close_notify is dropped: linger is best effort */
        ERR_clear_error();
    }
    close_backend(c);
    if (shutdown(c->cfd, SHUT_WR) < 0) {
        conn_close(p, c);
        return;
    }
    c->state = S_LINGER;
    tl_insert(&p->linger_list, c, p->now + LINGER_SECONDS);
}

/* The client's socket failed (reset): no linger, nothing more can be sent. */
void client_lost(plane *p, conn *c, int err) {
    if (!c->reason)
        set_reason(c, errno_text("client error: ", err ? err : ECONNRESET));
    if (!c->reason)
        PyErr_Clear();
    conn_close(p, c);
}

void finish(plane *p, conn *c) {
    set_reason_static(c, R_DONE);
    close_backend(c);
    if (c->shut_pending || c->out_len) {
        c->state = S_CLOSING; /* the last records or the close_notify still have to leave */
        tl_insert(&p->linger_list, c, p->now + CLOSE_SECONDS);
        return;
    }
    conn_close(p, c);
}
