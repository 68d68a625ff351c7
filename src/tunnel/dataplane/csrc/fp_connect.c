/* Compiled data plane: the backend connect. Python's decision (addresses, preamble,
 * connect timeout, TLS settings) is taken, each address is tried in turn (failover), and
 * the attempts are reported to Python; the first that connects starts the relay
 * (fp_relay.c). See fastplane.h. */
#include "fastplane.h"

/* ------------------------------------------------------------------ backend connect */

void add_attempt(plane *p, conn *c, int result) {
    if (!c->attempts && !(c->attempts = PyList_New(0)))
        goto fail;
    PyObject *item = Py_BuildValue("(iid)", c->cur, result, p->now - c->attempt_start);
    if (!item || PyList_Append(c->attempts, item) < 0) {
        Py_XDECREF(item);
        goto fail;
    }
    Py_DECREF(item);
    return;
fail:
    PyErr_Clear();
}

/* The attempts so far, to Python at once (on_connect): the pool's passive health and its
 * log line must not wait for the next connection (the Python plane records them as they
 * happen). Python counts only the attempts it has not seen yet. */
void report_attempts(plane *p, conn *c) {
    if (!c->attempts)
        return;
    PyObject *r = PyObject_CallFunction(p->on_connect, "iKO", c->l->lid, c->id, c->attempts);
    if (!r)
        PyErr_WriteUnraisable(p->on_connect);
    Py_XDECREF(r);
}

void attempt_failed(plane *p, conn *c, int result) {
    c->quiet = 0; /* Python hears of it, and of the rest of this connection */
    add_attempt(p, c, result);
    report_attempts(p, c);
}

void start_relay(plane *p, conn *c) {
    tl_remove(c);
    free(c->targets);
    c->targets = NULL;
    c->backend_index = c->cur;
    c->state = S_RELAY;
    if (c->report_connect) {
        report_attempts(p, c);
    } else if (c->attempts) { /* counted at Python's next call, before its next decision */
        PyObject *item = Py_BuildValue("(iKO)", c->l->lid, c->id, c->attempts);
        if (!item || PyList_Append(p->connected, item) < 0)
            PyErr_Clear();
        Py_XDECREF(item);
    }
    Py_CLEAR(c->attempts); /* counted (or about to be): on_close has backend_index */
    if (c->ssl) /* a bare FIN ends like close_notify */
        SSL_set_options(c->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    tl_insert(&c->l->idle_list, c, p->now + c->l->idle_timeout);
    if (c->c2b_len)
        flush_c2b(p, c); /* the preamble (PROXY header) first; then the client's input */
    else if (!c->ssl || c->client_more || c->client_gone || SSL_has_pending(c->ssl))
        pump_c2b(p, c);
    /* else nothing came while connecting: no read() for EAGAIN. The relay watches the
     * client (level-triggered EPOLLIN), which reports at once what came unwatched. */
}

void try_connect(plane *p, conn *c) {
    for (; c->cur < c->ntargets; c->cur++) {
        target *t = &c->targets[c->cur];
        c->attempt_start = p->now;
        int fd = socket(t->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            attempt_failed(p, c, errno);
            continue;
        }
        if (t->sa.ss_family != AF_UNIX) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        if (connect(fd, (struct sockaddr *)&t->sa, t->len) == 0 || errno == EINPROGRESS) {
            c->bfd = fd;
            c->bmask_set = 0;
            tl_insert(&p->connect_list, c, p->now + c->connect_timeout);
            return;
        }
        int err = errno;
        close(fd);
        attempt_failed(p, c, err);
    }
    Py_INCREF(R_UNREACHABLE);
    pt_unreachable(c); /* passed through: the client gets our alert (fp_passthrough.c) */
    close_early(p, c, R_UNREACHABLE); /* Python adds why, from the attempts */
}

void connect_result(plane *p, conn *c, int err) {
    if (!err) {
        if (c->quiet)
            quiet_connected(c, p->now - c->attempt_start); /* counted in C (fp_quiet.c) */
        else
            add_attempt(p, c, 0);
        start_relay(p, c);
        return;
    }
    close_backend(c);
    attempt_failed(p, c, err);
    c->cur++;
    try_connect(p, c);
}

/* The socket addresses of a decision's (family, host, port) tuples: their count (1 to 64,
 * a malloc'ed array in *out), or -1 with an exception set. */
int parse_targets(PyObject *addrs, target **out) {
    target *ts = NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(addrs);
    if (n < 1 || n > 64) {
        PyErr_SetString(PyExc_ValueError, "1 to 64 backend addresses expected");
        goto fail;
    }
    ts = calloc((size_t)n, sizeof(target));
    if (!ts) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int family, port;
        const char *host;
        target *t = &ts[i];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(addrs, i), "isi", &family, &host, &port))
            goto fail;
        if (family == AF_UNIX) {
            struct sockaddr_un *u = (struct sockaddr_un *)&t->sa;
            size_t hl = strlen(host);
            if (hl >= sizeof u->sun_path) {
                PyErr_SetString(PyExc_ValueError, "unix socket path too long");
                goto fail;
            }
            u->sun_family = AF_UNIX;
            memcpy(u->sun_path, host, hl + 1);
            t->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + hl + 1);
        } else if (family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&t->sa;
            a->sin_family = AF_INET;
            a->sin_port = htons((uint16_t)port);
            if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
                goto bad;
            t->len = sizeof *a;
        } else if (family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&t->sa;
            a->sin6_family = AF_INET6;
            a->sin6_port = htons((uint16_t)port);
            if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
                goto bad;
            t->len = sizeof *a;
        } else {
            goto bad;
        }
        continue;
    bad:
        PyErr_Format(PyExc_ValueError, "not a numeric address: %s", host);
        goto fail;
    }
    *out = ts;
    return (int)n;
fail:
    free(ts);
    return -1;
}

/* What Python decided: (addresses, preamble, connect timeout[, report the connect at
 * once[, backend TLS settings]]), a refusal text, or None: decided later (names to
 * resolve), by Plane.decide(). */
int take_decision(plane *p, conn *c, PyObject *d) {
    if (d == Py_None) {
        tl_insert(&p->awaiting, c, AWAITING); /* no deadline: Python bounds the resolution */
        return 0;
    }
    if (PyUnicode_Check(d)) {
        Py_INCREF(d);
        pt_unreachable(c); /* only a passed-through connection: its alert */
        close_early(p, c, d);
        return 0;
    }
    PyObject *addrs, *tls = Py_None;
    const char *pre;
    Py_ssize_t prelen;
    double timeout;
    int report = 0;
    if (!PyArg_ParseTuple(d, "O!y#d|pO", &PyTuple_Type, &addrs, &pre, &prelen, &timeout, &report,
                          &tls))
        return -1;
    target *ts = NULL;
    int n = parse_targets(addrs, &ts);
    if (n < 0)
        return -1;
    c->targets = ts;
    c->ntargets = (int)n;
    c->connect_timeout = timeout;
    c->report_connect = report;
    if (prelen > 0) {
        if (!(c->c2b = malloc((size_t)prelen))) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(c->c2b, pre, (size_t)prelen);
        c->c2b_len = (size_t)prelen;
    }
    if (tls != Py_None && btls_take(c, tls) < 0) /* TLS to the backend: its settings */
        return -1;
    begin_connect(p, c);
    return 0;
}

/* The backend decision is taken (c->targets and the rest): connect. */
void begin_connect(plane *p, conn *c) {
    c->state = S_CONNECTING;
    /* The client's FIN may be in already (seen, or not yet looked at when its Finished
     * came alone: a request usually comes with it, and is then pending in OpenSSL). */
    if (c->ssl && (c->client_gone || !SSL_has_pending(c->ssl)) && client_left(p, c))
        return;
    try_connect(p, c);
}

/* The client's FIN (or an error) came before the backend is connected: if it sent nothing
 * at all after the handshake (not even close_notify, which is a half-close to pass on),
 * nobody waits for a reply (a TLS health check, a scanner, s_time): the connection ends
 * without a backend (or its connect is dropped). 1: closed; 0: there is input to relay. */
int client_left(plane *p, conn *c) {
    if (!c->ssl || SSL_has_pending(c->ssl)) /* the client is not read while connecting */
        return 0;
    char b;
    ssize_t r;
    do
        r = recv(c->cfd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))
        return 0;
    int err = r < 0 ? errno : 0;
    close_backend(c);
    if (err) {
        client_lost(p, c, err);
    } else {
        set_reason(c, PyUnicode_FromString("client closed: before sending anything"));
        conn_close(p, c);
    }
    return 1;
}

/* take_decision, and on a bad decision (an exception): the traceback, and a clean close. */
void apply_decision(plane *p, conn *c, PyObject *d) {
    if (!d || take_decision(p, c, d) < 0) {
        PyErr_WriteUnraisable(p->on_handshake);
        free(c->targets);
        c->targets = NULL;
        close_early(p, c, PyUnicode_FromString("internal error (see the traceback)"));
    }
}
