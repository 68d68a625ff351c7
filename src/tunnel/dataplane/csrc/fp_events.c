/* Compiled data plane: accept, the events of each connection's two sockets, and the
 * timers (deadline lists, the timerfd). The handshake is in fp_handshake.c. */
#include "fastplane.h"

/* ------------------------------------------------------------------ events */

/* The per-IP limits (Python's PerIPLimits): may this connection from ``sa`` be served? */
static int admitted(plane *p, listener *l, unsigned long long id, const struct sockaddr *sa) {
    PyObject *peer = addr_tuple(sa);
    PyObject *ok = peer ? PyObject_CallFunction(p->on_accept, "iKO", l->lid, id, peer) : NULL;
    Py_XDECREF(peer);
    if (!ok) {
        PyErr_WriteUnraisable(p->on_accept);
        return 1; /* a broken limit must not lock every client out */
    }
    int yes = PyObject_IsTrue(ok);
    Py_DECREF(ok);
    if (yes < 0)
        PyErr_Clear();
    return yes != 0;
}

void do_accept(plane *p, lsock *s) {
    listener *l = s->l;
    for (int i = 0; i < ACCEPT_BATCH && s->polled; i++) {
        peer_addr peer;
        memset(&peer, 0, sizeof peer);
        socklen_t plen = sizeof peer;
        int fd = accept4(s->fd, &peer.sa, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                p->starved = 1; /* resumed when a connection ends */
                gate_apply(p);
            }
            return;
        }
        unsigned long long id = ++p->next_id;
        if (l->per_ip && !l->proxy && !admitted(p, l, id, &peer.sa)) {
            close(fd); /* refused before any TLS byte, as the Python plane does */
            continue;
        }
        conn *c = calloc(1, sizeof *c);
        SSL *ssl = c && l->ctx ? SSL_new(l->ctx) : NULL; /* no SSL_CTX: client mode */
        BIO *rbio = ssl ? BIO_new_socket(fd, BIO_NOCLOSE) : NULL;
        BIO *wbio = rbio ? out_bio(c) : NULL;
        if (!c || (l->ctx && !wbio)) {
            ERR_clear_error();
            BIO_free(rbio);
            SSL_free(ssl);
            free(c);
            close(fd);
            continue;
        }
        c->cfd = fd; /* before any write through wbio */
        if (ssl) {
            SSL_set_bio(ssl, rbio, wbio);
            hold_reads(c, rbio, 1); /* no read for EAGAIN behind a flight (fp_out.c) */
            SSL_set_accept_state(ssl);
            SSL_set_ex_data(ssl, conn_index, c);
            /* Idle connections keep no record buffers (CPython sets it on its contexts too). */
            SSL_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
            SSL_set_read_ahead(ssl, 1);
            /* TLS 1.3 tickets are not written after the Finished but with the first reply
             * (handshake_done counts them, ssl_send queues them): one send for both, and
             * none for a client that never gets a reply. */
            SSL_set_num_tickets(ssl, 0);
            SSL_set_msg_callback(ssl, hello_callback);
            SSL_set_msg_callback_arg(ssl, c);
        }
        if (peer.sa.sa_family != AF_UNIX) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        c->kind = K_CONN;
        c->state = S_HANDSHAKE;
        c->sniff = ssl && l->on_sniff; /* passthrough routes: the hello is sniffed first */
        c->l = l;
        c->id = id;
        c->cfd = fd;
        c->bfd = -1;
        c->ssl = ssl;
        c->backend_index = -1;
        c->started = p->now;
        c->peer = peer;
        c->peerlen = plen;
        c->next = p->live;
        if (p->live)
            p->live->prev = c;
        p->live = c;
        struct epoll_event ev = {.events = CLIENT_IN, .data.u64 = (uint64_t)(uintptr_t)c};
        epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
        c->cmask = c->creg = CLIENT_IN;
        tl_insert(&l->hs_list, c, p->now + l->hs_timeout);
        gate_opened(p, l);
        if (l->proxy) {
            proxy_start(p, c); /* the per-IP limits count the header's client, after it */
        } else if (!ssl) { /* client mode: plaintext, straight on to the backend */
            handshake_done(p, c);
            if (c->state != S_CLOSED)
                want(p, c);
        } else {
            /* A client sends its ClientHello right behind the ACK that made the connection
             * acceptable: it is usually there already, and reading it now saves the wait
             * that would report it (one read that finds nothing otherwise). */
            do_handshake(p, c);
            if (c->state != S_CLOSED)
                want(p, c);
        }
    }
}

void on_client(plane *p, conn *c, uint32_t ev) {
    int errors = ev & EPOLLERR;
    int hup_unwanted = (ev & EPOLLHUP) && !(c->cmask & EPOLLIN);
    switch (c->state) {
    case S_PROXY:
        proxy_read(p, c);
        break;
    case S_HANDSHAKE:
        if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            if (c->sniff)
                c->sniff_end = 1; /* no more of the hello will come */
            c->client_gone = 1;   /* asked again before any backend connect */
        }
        do_handshake(p, c);
        break;
    case S_CONNECTING:
        if (errors || (ev & EPOLLHUP))
            client_lost(p, c, sock_error(c->cfd));
        else if ((ev & EPOLLOUT) && out_flush(c) < 0)
            client_lost(p, c, errno);
        else if ((ev & EPOLLRDHUP) && !c->client_gone) {
            c->client_gone = 1; /* unwatched from now: want() */
            if (client_left(p, c))
                return;
        } else if (ev & EPOLLIN) {
            c->client_more = 1; /* read once the relay starts; unwatched until then */
        }
        break;
    case S_RELAY:
        if (errors || hup_unwanted) {
            client_lost(p, c, sock_error(c->cfd));
            break;
        }
        if (ev & EPOLLOUT) {
            if (c->rd_want_write)
                pump_c2b(p, c);
            if (c->state == S_RELAY)
                flush_b2c(p, c);
        }
        if (c->state == S_RELAY && (ev & (EPOLLIN | EPOLLHUP)) && (c->cmask & EPOLLIN))
            pump_c2b(p, c);
        break;
    case S_LINGER:
        for (int i = 0; i < BACKEND_READS; i++) { /* bounded: a greedy client gets a turn */
            ssize_t n = recv(c->cfd, scratch, SCRATCH_SIZE, 0);
            if (n > 0)
                continue;
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                conn_close(p, c);
            break;
        }
        break;
    case S_CLOSING:
        if (errors || (ev & EPOLLHUP))
            conn_close(p, c);
        else
            flush_b2c(p, c);
        break;
    }
    if (c->state != S_CLOSED)
        want(p, c);
}

void on_backend(plane *p, conn *c, uint32_t ev) {
    if (c->state == S_CONNECTING) {
        if (c->bt)
            btls_connecting(p, c); /* the connect, then the TLS handshake */
        else
            connect_result(p, c, sock_error(c->bfd));
    } else if (c->state == S_RELAY) {
        if ((ev & EPOLLERR) || ((ev & EPOLLHUP) && !(c->bmask & EPOLLIN))) {
            int err = sock_error(c->bfd);
            close_early(p, c, err ? errno_text("backend error: ", err) : (Py_INCREF(R_BACKEND_CLOSED), R_BACKEND_CLOSED));
        } else if (c->bt) {
            btls_relay(p, c, ev);
        } else {
            if ((ev & EPOLLOUT) && c->c2b_len)
                flush_c2b(p, c);
            if (c->state == S_RELAY && (ev & (EPOLLIN | EPOLLHUP)) && (c->bmask & EPOLLIN))
                pump_b2c(p, c);
        }
    }
    if (c->state != S_CLOSED)
        want(p, c);
}

/* Show OpenSSL an end of input mid-handshake: it answers with the alert a client whose
 * input stopped gets (decode_error), written to the socket before our FIN. */
static void handshake_eof(conn *c) {
    BIO *eof = BIO_new(BIO_s_mem());
    if (eof) {
        BIO_set_mem_eof_return(eof, 0);
        SSL_set0_rbio(c->ssl, eof); /* the socket BIO stays as the write side */
        ERR_clear_error();
        SSL_do_handshake(c->ssl);
    }
    ERR_clear_error();
    c->fatal = 1;
}

void expire(plane *p, tlist *tl) {
    while (tl->head && tl->head->deadline <= p->now) {
        conn *c = tl->head;
        tl_remove(c);
        switch (c->state) {
        case S_PROXY:
            proxy_expired(p, c);
            break;
        case S_HANDSHAKE:
            if (c->sniff && pt_expired(p, c))
                break; /* OpenSSL, given what came, ended it */
            set_reason_static(c, R_HS_TIMEOUT);
            if (c->hs_want_write || c->out_len) {
                conn_close(p, c); /* our flight is not even read: an alert would wait too */
                break;
            }
            handshake_eof(c);
            close_early(p, c, NULL);
            break;
        case S_CONNECTING:
            close_backend(c);
            attempt_failed(p, c, -1);
            c->cur++;
            try_connect(p, c);
            break;
        case S_RELAY:
            close_early(p, c, (Py_INCREF(R_IDLE), R_IDLE));
            break;
        default:
            conn_close(p, c);
        }
        if (c->state != S_CLOSED)
            want(p, c);
    }
}

void arm_timer(plane *p) {
    double next = 0;
    tlist *lists[2] = {&p->connect_list, &p->linger_list};
    for (int i = 0; i < 2; i++)
        if (lists[i]->head && (!next || lists[i]->head->deadline < next))
            next = lists[i]->head->deadline;
    for (int i = 0; i < p->nls; i++) {
        tlist *own[3] = {&p->ls[i]->hs_list, &p->ls[i]->idle_list, &p->ls[i]->proxy_list};
        for (int j = 0; j < 3; j++)
            if (own[j]->head && (!next || own[j]->head->deadline < next))
                next = own[j]->head->deadline;
    }
    /* Activity only moves deadlines later: a timer armed for an earlier moment is kept (it
     * fires, finds nothing due, and is armed again then), so that a request costs no
     * timerfd_settime. */
    if (!next || (p->armed > 0 && p->armed <= next))
        return;
    p->armed = next;
    struct itimerspec its = {0};
    if (next) {
        next += 0.001; /* never a zero value, which would disarm */
        its.it_value.tv_sec = (time_t)next;
        its.it_value.tv_nsec = (long)((next - (double)(time_t)next) * 1e9);
    }
    timerfd_settime(p->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

void run_timers(plane *p) {
    uint64_t ticks;
    if (read(p->tfd, &ticks, sizeof ticks) < 0) {
        /* not expired yet: nothing to consume */
    }
    p->armed = -1;
    expire(p, &p->connect_list);
    expire(p, &p->linger_list);
    for (int i = 0; i < p->nls; i++) {
        expire(p, &p->ls[i]->hs_list);
        expire(p, &p->ls[i]->idle_list);
        expire(p, &p->ls[i]->proxy_list);
    }
}
