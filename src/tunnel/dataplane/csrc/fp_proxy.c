/* Compiled data plane: the PROXY protocol header from load balancers (proxy_from).
 *
 * A listener with proxy_from starts each connection in S_PROXY, before any TLS:
 *  - a peer outside the trusted networks is closed at once (its reason text from Python);
 *  - otherwise the bytes waiting on the socket are PEEKED (at most PROXY_PEEK, the decoder's
 *    cap on a whole header) and handed to Python's pure decoder (tunnel.wire) in one call.
 *    Python answers how many of them belong to the header, and C reads exactly those off
 *    the socket, so no byte of the ClientHello is consumed here: OpenSSL reads it after.
 *    A header that arrives in several segments costs one call per segment (the decoder
 *    keeps what it was given; C consumes those bytes), so a header that can no longer be
 *    valid fails as early as on the Python plane, and nothing is rescanned.
 *  - the header must be complete within proxy_timeout (a list of its own: one duration, so
 *    appending is O(1)); the handshake deadline starts after, as on the Python plane.
 * The addresses the header carries stay on the Python side (fastplane_proxy.py), which
 * substitutes them in the two later calls; C keeps the socket's own peer.
 */
#include "fastplane.h"

#define PROXY_PEEK (16 + 4096) /* ProxyDecoder's default max_size: no header is longer */

/* proxy_in(lid, proxy_timeout, [(packed network address, prefix length)], on_proxy,
 *          untrusted_reason, timeout_reason): read a PROXY header on this listener. */
PyObject *Plane_proxy_in(plane *p, PyObject *args) {
    int lid;
    double timeout;
    PyObject *nets, *callback, *untrusted, *expired;
    if (!PyArg_ParseTuple(args, "idO!OUU", &lid, &timeout, &PyList_Type, &nets, &callback,
                          &untrusted, &expired))
        return NULL;
    listener *l = find_listener(p, lid);
    if (!l || l->proxy)
        return PyErr_Format(PyExc_ValueError, "proxy_in: no such listener, or set twice");
    Py_ssize_t n = PyList_GET_SIZE(nets);
    proxy_net *table = calloc((size_t)n + 1, sizeof *table);
    if (!table)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *raw;
        Py_ssize_t len;
        int bits;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(nets, i), "y#i", &raw, &len, &bits)) {
            free(table);
            return NULL;
        }
        if ((len != 4 && len != 16) || bits < 0 || bits > len * 8) {
            free(table);
            return PyErr_Format(PyExc_ValueError, "proxy_in: bad network (%zd bytes /%d)", len,
                                bits);
        }
        table[i].len = (int)len;
        table[i].bits = bits;
        memcpy(table[i].addr, raw, (size_t)len);
    }
    Py_INCREF(callback);
    Py_INCREF(untrusted);
    Py_INCREF(expired);
    l->proxy = 1;
    l->proxy_timeout = timeout;
    l->nets = table;
    l->nnets = (int)n;
    l->on_proxy = callback;
    l->r_untrusted = untrusted;
    l->r_expired = expired;
    Py_RETURN_NONE;
}

void proxy_free(listener *l) {
    free(l->nets);
    l->nets = NULL;
    Py_CLEAR(l->on_proxy);
    Py_CLEAR(l->r_untrusted);
    Py_CLEAR(l->r_expired);
}

/* Is ``a`` (``len`` bytes) inside network ``n``? Only within one address family. */
static int in_net(const unsigned char *a, int len, const proxy_net *n) {
    if (len != n->len)
        return 0;
    int whole = n->bits / 8, part = n->bits % 8;
    if (memcmp(a, n->addr, (size_t)whole) != 0)
        return 0;
    if (!part)
        return 1;
    unsigned char mask = (unsigned char)(0xFF << (8 - part));
    return (a[whole] & mask) == (n->addr[whole] & mask);
}

/* As proxy_in.trusted(): an IPv4-mapped IPv6 peer is compared as IPv4; not IP: untrusted. */
static int trusted(const listener *l, const peer_addr *peer) {
    const unsigned char *a;
    int len;
    if (peer->sa.sa_family == AF_INET) {
        a = (const unsigned char *)&peer->in4.sin_addr;
        len = 4;
    } else if (peer->sa.sa_family == AF_INET6) {
        a = peer->in6.sin6_addr.s6_addr;
        len = 16;
        if (IN6_IS_ADDR_V4MAPPED(&peer->in6.sin6_addr)) {
            a += 12;
            len = 4;
        }
    } else {
        return 0;
    }
    for (int i = 0; i < l->nnets; i++)
        if (in_net(a, len, &l->nets[i]))
            return 1;
    return 0;
}

/* Close with an RST (the Python plane's transport.abort()): nothing is flushed. */
static void proxy_abort(plane *p, conn *c) {
    struct linger now = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->cfd, SOL_SOCKET, SO_LINGER, &now, sizeof now);
    conn_close(p, c);
}

/* A connection just accepted on a proxy_from listener: wait for the header, or refuse. */
void proxy_start(plane *p, conn *c) {
    listener *l = c->l;
    c->state = S_PROXY;
    if (!trusted(l, &c->peer)) {
        set_reason_static(c, l->r_untrusted);
        conn_close(p, c); /* the Python plane's transport.close(): no linger */
        return;
    }
    tl_insert(&l->proxy_list, c, p->now + l->proxy_timeout);
}

void proxy_expired(plane *p, conn *c) {
    set_reason_static(c, c->l->r_expired);
    proxy_abort(p, c);
}

/* Read (and drop) exactly ``n`` bytes that a peek showed are there. */
static int consume(int fd, size_t n) {
    while (n > 0) {
        ssize_t r = recv(fd, scratch, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? errno : ECONNRESET;
        n -= (size_t)r;
    }
    return 0;
}

/* Python's answer to bytes of the header (n of them peeked). None: all n are header, more
 * is needed; a str: refused, close; (used, None): the header is the first ``used`` bytes,
 * start the handshake; (used, str): the header's client is refused, close with an RST. */
static void proxy_answer(plane *p, conn *c, PyObject *r, size_t n) {
    Py_ssize_t used = (Py_ssize_t)n;
    PyObject *refused = NULL;
    if (r == Py_None && n == 0) /* "need more" at the end of input would wait forever */
        PyErr_SetString(PyExc_ValueError, "on_proxy: None at the end of input");
    if (r == NULL || (r == Py_None && n == 0)) {
        PyErr_WriteUnraisable(c->l->on_proxy);
        set_reason(c, PyUnicode_FromString("internal error (see the traceback)"));
        if (!c->reason)
            PyErr_Clear();
        conn_close(p, c);
        return;
    }
    if (PyTuple_Check(r)) {
        if (!PyArg_ParseTuple(r, "nO", &used, &refused) || used < 0 || used > (Py_ssize_t)n ||
            (refused != Py_None && !PyUnicode_Check(refused))) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "on_proxy: (used bytes, None | reason) expected");
            proxy_answer(p, c, NULL, n);
            return;
        }
    } else if (r != Py_None && !PyUnicode_Check(r)) {
        PyErr_SetString(PyExc_TypeError, "on_proxy: None, str or tuple expected");
        proxy_answer(p, c, NULL, n);
        return;
    }
    int err = consume(c->cfd, (size_t)used);
    if (err) {
        client_lost(p, c, err);
        return;
    }
    if (r == Py_None)
        return;
    if (PyUnicode_Check(r)) {
        set_reason_static(c, r);
        conn_close(p, c); /* the Python plane's transport.close(): what came was read */
        return;
    }
    if (refused != Py_None) {
        set_reason_static(c, refused);
        proxy_abort(p, c);
        return;
    }
    c->state = S_HANDSHAKE;
    tl_insert(&c->l->hs_list, c, p->now + c->l->hs_timeout);
    do_handshake(p, c); /* the ClientHello may be there already */
}

/* The client's socket is readable in S_PROXY: hand what is there to the decoder. An empty
 * bytes object tells Python the client closed before the header ended. */
void proxy_read(plane *p, conn *c) {
    ssize_t n;
    do
        n = recv(c->cfd, scratch, PROXY_PEEK, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            client_lost(p, c, errno);
        return;
    }
    PyObject *peer = addr_tuple(&c->peer.sa);
    PyObject *r = peer ? PyObject_CallFunction(c->l->on_proxy, "iKy#O", c->l->lid, c->id,
                                               scratch, (Py_ssize_t)n, peer)
                       : NULL;
    Py_XDECREF(peer);
    proxy_answer(p, c, r, (size_t)n);
    Py_XDECREF(r);
}
