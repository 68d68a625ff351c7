/* Compiled data plane: SNI passthrough (backends with ``passthrough = yes``).
 *
 * On a listener whose routes lead to a passthrough backend, each connection starts in
 * S_HANDSHAKE with c->sniff set: before OpenSSL reads a byte, the bytes waiting on the
 * socket are PEEKED (at most PT_PEEK: the Python reader's limit on a ClientHello, its
 * record headers included) and handed to Python (on_sniff), whose pure ClientHello reader
 * (tunnel.wire.clienthello) answers:
 *  - None: the hello is not complete yet. The socket is then watched edge-triggered
 *    (want(): EPOLLET | EPOLLRDHUP), so that bytes still unread do not wake the loop again
 *    and again: the next segment does, or the end of input, which gives up (OpenSSL reads
 *    what came and answers it, as on the Python plane). A peek that shows nothing new
 *    (e.g. the event of the switch to edge-triggered) does not call Python.
 *  - True: terminate TLS as usual: OpenSSL reads the hello off the socket (nothing was
 *    consumed) and the handshake runs.
 *  - (alert, reason): refused (a hello the reader refuses, deny_ja4): the plaintext alert
 *    the Python plane sends (hello_refuse), FIN, linger.
 *  - [decision]: pass through. The SSL object is freed and the connection goes on as a
 *    client-mode one (fp_plain_client.c: recv/send, FIN for FIN) to the backend decision,
 *    which is on_handshake's (addresses, PROXY header, connect timeout). The peeked bytes
 *    are still on the socket: the relay reads them first, after the PROXY header.
 * A passed-through connection that reaches no backend gets the Python plane's plaintext
 * internal_error alert before its FIN (pt_unreachable). The handshake timeout applies
 * until the decision; at expiry OpenSSL reads what came and answers it (pt_expired).
 * The Python half is tunnel/dataplane/fastplane_passthrough.py; the Python plane's
 * reference is tunnel/dataplane/passthrough.py.
 */
#include "fastplane.h"

/* The most bytes a ClientHello the reader accepts can need: 32 record headers and a
 * 16 KiB message with its 4-byte header (wire/clienthello.py); a little more is harmless. */
#define PT_PEEK (32 * 5 + 16384 + 4 + 64)

/* passthrough(lid, on_sniff): connections of this listener are sniffed first. */
PyObject *Plane_passthrough(plane *p, PyObject *args) {
    int lid;
    PyObject *callback;
    if (!PyArg_ParseTuple(args, "iO", &lid, &callback))
        return NULL;
    listener *l = find_listener(p, lid);
    if (!l || l->on_sniff || !l->ctx)
        return PyErr_Format(PyExc_ValueError, "passthrough: no such TLS listener, or set twice");
    Py_INCREF(callback);
    l->on_sniff = callback;
    Py_RETURN_NONE;
}

void pt_free(listener *l) {
    Py_CLEAR(l->on_sniff);
}

/* The sniffing is over: OpenSSL (or the relay) reads the socket from now on. */
static void sniff_done(conn *c) {
    c->sniff = 0;
    c->sniff_end = 0;
    c->peeked = 1; /* deny_ja4's peek (fp_policy.c) has nothing left to see */
}

/* The address the client connected to, where a PROXY header may need it; else None. */
static PyObject *local_tuple(conn *c) {
    if (c->l->need_local) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(c->cfd, (struct sockaddr *)&ss, &len) == 0)
            return addr_tuple((struct sockaddr *)&ss);
    }
    Py_RETURN_NONE;
}

/* Pass the connection through: no TLS of ours from here on; the backend decision. */
static void pass_on(plane *p, conn *c, PyObject *decision) {
    sniff_done(c);
    c->passed = 1;
    SSL_free(c->ssl); /* it never read a byte; its BIOs leave the socket open */
    c->ssl = NULL;
    c->state = S_CONNECTING;
    tl_remove(c); /* the handshake deadline; the connect timeout follows */
    apply_decision(p, c, decision);
}

/* Python's answer to ``n`` peeked bytes; see the top of the file. 1: handled, 0: OpenSSL's
 * turn (terminate, or answer what came). */
static int sniff_answer(plane *p, conn *c, PyObject *r, size_t n) {
    if (!r) {
        PyErr_WriteUnraisable(c->l->on_sniff);
        close_early(p, c, PyUnicode_FromString("internal error (see the traceback)"));
        return 1;
    }
    if (r == Py_None) {
        if (!c->sniff_end && n < PT_PEEK)
            return 1; /* the rest of the hello is awaited */
        sniff_done(c); /* the input ended mid-hello: OpenSSL reads it and answers */
        return 0;
    }
    if (r == Py_True) {
        sniff_done(c);
        return 0;
    }
    if (PyList_Check(r) && PyList_GET_SIZE(r) == 1) {
        pass_on(p, c, PyList_GET_ITEM(r, 0));
        return 1;
    }
    int description;
    PyObject *reason;
    if (PyTuple_Check(r) && PyArg_ParseTuple(r, "iU", &description, &reason) &&
        description >= 0 && description < 256) {
        sniff_done(c);
        Py_INCREF(reason);
        set_reason(c, reason);
        c->deny_alert = (unsigned char)description;
        hello_refuse(p, c);
        return 1;
    }
    PyErr_Clear();
    PyErr_SetString(PyExc_TypeError, "on_sniff: None, True, (alert, reason) or [decision]");
    return sniff_answer(p, c, NULL, n);
}

/* do_handshake, while c->sniff: 1 if the connection is not OpenSSL's to advance now. */
int pt_sniff(plane *p, conn *c) {
    ssize_t n;
    do
        n = recv(c->cfd, scratch, PT_PEEK, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 1;
    if (n <= 0) { /* the end of input, or an error: OpenSSL sees it and answers */
        sniff_done(c);
        return 0;
    }
    if ((size_t)n == c->sniffed && !c->sniff_end)
        return 1; /* nothing new since the last peek */
    c->sniffed = (size_t)n;
    PyObject *peer = addr_tuple(&c->peer.sa);
    PyObject *local = peer ? local_tuple(c) : NULL;
    PyObject *r = local ? PyObject_CallFunction(c->l->on_sniff, "iKy#OO", c->l->lid, c->id,
                                                scratch, (Py_ssize_t)n, peer, local)
                        : NULL;
    Py_XDECREF(peer);
    Py_XDECREF(local);
    int handled = sniff_answer(p, c, r, (size_t)n);
    Py_XDECREF(r);
    return handled;
}

/* The handshake deadline passed while sniffing: OpenSSL reads what came (then the usual
 * timeout follows: it is shown an end of input and answers). 1: the connection is gone. */
int pt_expired(plane *p, conn *c) {
    sniff_done(c);
    do_handshake(p, c);
    return c->state != S_HANDSHAKE;
}

/* A passed-through connection reached no backend: the client, which awaits a ServerHello,
 * gets the Python plane's plaintext internal_error alert before the FIN. */
void pt_unreachable(conn *c) {
    static const unsigned char alert[7] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50};
    if (!c->passed || c->state >= S_LINGER)
        return;
    ssize_t w;
    do /* a fresh socket's send buffer takes 7 bytes; a short write only loses the alert */
        w = send(c->cfd, alert, sizeof alert, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
}
