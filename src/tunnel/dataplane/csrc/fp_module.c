/* Compiled data plane: the Python type Plane (its listeners: fp_listener.c) and the module.
 * See fastplane.h. */
#include "fastplane.h"

char *scratch;
int conn_index = -1;
PyObject *R_DONE, *R_CLIENT_CLOSED, *R_IDLE, *R_HS_TIMEOUT, *R_HS_EOF, *R_UNREACHABLE,
    *R_BACKEND_CLOSED;

/* ------------------------------------------------------------------ Python type */

static PyObject *Plane_run_once(plane *p, PyObject *Py_UNUSED(ignored)) {
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(p->epfd, evs, MAX_EVENTS, 0);
    if (plane_batch(p, evs, n > 0 ? n : 0, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Plane_fileno(plane *p, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(p->epfd);
}

/* close_all(hurry): drain's end. Not hurried: close_notify, FIN, linger; hurried: close. */
static PyObject *Plane_close_all(plane *p, PyObject *arg) {
    int hurry = PyObject_IsTrue(arg);
    p->now = mono();
    PyObject *reason = PyUnicode_InternFromString("shutdown");
    if (!reason)
        return NULL;
    conn *c = p->live;
    while (c) {
        conn *next = c->next;
        if (hurry || c->state >= S_LINGER) {
            set_reason_static(c, reason);
            conn_close(p, c);
        } else {
            Py_INCREF(reason);
            close_early(p, c, reason);
            if (c->state != S_CLOSED)
                want(p, c);
        }
        c = next;
    }
    Py_DECREF(reason);
    arm_timer(p);
    batch_end(p);
    Py_RETURN_NONE;
}

/* decide(id, decision): the decision for a connection on_handshake answered None for;
 * ignored when that connection is gone meanwhile. */
static PyObject *Plane_decide(plane *p, PyObject *args) {
    unsigned long long id;
    PyObject *d;
    if (!PyArg_ParseTuple(args, "KO", &id, &d))
        return NULL;
    if (d == Py_None) {
        PyErr_SetString(PyExc_ValueError, "decide() needs a decision, not None");
        return NULL;
    }
    p->now = mono();
    for (conn *c = p->awaiting.head; c; c = c->tnext) {
        if (c->id != id)
            continue;
        tl_remove(c);
        apply_decision(p, c, d);
        if (c->state != S_CLOSED)
            want(p, c);
        break;
    }
    arm_timer(p);
    batch_end(p);
    Py_RETURN_NONE;
}

static PyObject *Plane_take_connected(plane *p, PyObject *Py_UNUSED(ignored)) {
    if (PyList_GET_SIZE(p->connected) == 0)
        Py_RETURN_NONE;
    PyObject *fresh = PyList_New(0);
    if (!fresh)
        return NULL;
    PyObject *taken = p->connected;
    p->connected = fresh;
    return taken;
}

static PyObject *Plane_live(plane *p, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(p->total);
}

/* (epoll waits, returns to Python) of Plane.wait(): tests check that wake-ups with only
 * plane events stay in C. */
static PyObject *Plane_waits(plane *p, void *Py_UNUSED(closure)) {
    return Py_BuildValue("(KK)", p->wakes, p->returns);
}

static PyObject *Plane_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *names[] = {"on_handshake", "on_close",   "on_notice",       "on_rejected",
                            "on_accept",    "on_connect", "max_connections", NULL};
    PyObject *hs, *cl, *no, *rj, *ac, *cn;
    long maxc;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOl", names, &hs, &cl, &no, &rj, &ac, &cn,
                                     &maxc))
        return NULL;
    plane *p = (plane *)type->tp_alloc(type, 0);
    if (!p)
        return NULL;
    p->epfd = p->tfd = -1;
    p->tkind = K_TIMER;
    p->held = 1;
    p->max_total = maxc;
    Py_INCREF(hs);
    Py_INCREF(cl);
    Py_INCREF(no);
    p->on_handshake = hs;
    p->on_close = cl;
    p->on_notice = no;
    Py_INCREF(rj);
    p->on_rejected = rj;
    Py_INCREF(ac);
    p->on_accept = ac;
    Py_INCREF(cn);
    p->on_connect = cn;
    p->connected = PyList_New(0);
    if (!p->connected) {
        Py_DECREF(p);
        return NULL;
    }
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)&p->tkind};
    if (p->epfd < 0 || p->tfd < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->tfd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(p);
        return NULL;
    }
    return (PyObject *)p;
}

static void Plane_dealloc(plane *p) {
    while (p->live) {
        conn *c = p->live;
        set_reason_static(c, R_DONE);
        conn_close(p, c);
    }
    batch_end(p);
    for (int i = 0; i < p->nls; i++)
        listener_free(p->ls[i]);
    free(p->ls);
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->tfd >= 0)
        close(p->tfd);
    Py_XDECREF(p->on_handshake);
    Py_XDECREF(p->on_close);
    Py_XDECREF(p->on_notice);
    Py_XDECREF(p->on_rejected);
    Py_XDECREF(p->on_accept);
    Py_XDECREF(p->on_connect);
    Py_XDECREF(p->connected);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyMethodDef plane_methods[] = {
    {"run_once", (PyCFunction)Plane_run_once, METH_NOARGS, "Run one batch of events."},
    {"fileno", (PyCFunction)Plane_fileno, METH_NOARGS, "The epoll fd to watch."},
    {"wait", (PyCFunction)Plane_wait, METH_VARARGS, "Select for the worker's loop."},
    {"watch", (PyCFunction)Plane_watch, METH_VARARGS, "Watch an fd for the loop."},
    {"add_listener", (PyCFunction)Plane_add_listener, METH_VARARGS, "Serve a listener."},
    {"start_accepting", (PyCFunction)Plane_start_accepting, METH_NOARGS, "Accept."},
    {"stop_accepting", (PyCFunction)Plane_stop_accepting, METH_NOARGS, "Stop accepting."},
    {"close_all", (PyCFunction)Plane_close_all, METH_O, "Close every connection."},
    {"decide", (PyCFunction)Plane_decide, METH_VARARGS, "A deferred handshake decision."},
    {"take_connected", (PyCFunction)Plane_take_connected, METH_NOARGS, "Connect results."},
    {"proxy_in", (PyCFunction)Plane_proxy_in, METH_VARARGS, "Read a PROXY header first."},
    {"counts", (PyCFunction)Plane_counts, METH_O, "(accepted, active) of a listener."},
    {"set_policy", (PyCFunction)Plane_set_policy, METH_VARARGS, "keylog_file, deny_ja4."},
    {"passthrough", (PyCFunction)Plane_passthrough, METH_VARARGS, "Sniff the ClientHello."},
    {"quiet", (PyCFunction)Plane_quiet, METH_VARARGS, "Serve a listener without calls."},
    {"take_quiet", (PyCFunction)Plane_take_quiet, METH_O, "A quiet listener's counts."},
    {"quiet_served", (PyCFunction)Plane_quiet_served, METH_O, "Quiet connections so far."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef plane_getset[] = {
    {"live", (getter)Plane_live, NULL, "Open connections.", NULL},
    {"waits", (getter)Plane_waits, NULL, "(epoll waits, returns) of wait().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PlaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tunnel.dataplane._fastplane.Plane",
    .tp_basicsize = sizeof(plane),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The compiled data plane of one worker.",
    .tp_new = Plane_new,
    .tp_dealloc = (destructor)Plane_dealloc,
    .tp_methods = plane_methods,
    .tp_getset = plane_getset,
};

/* ------------------------------------------------------------------ module */

/* The SSL_CTX* of an ssl.SSLContext: the first field after the object header in CPython's
 * PySSLContext. Verified: OpenSSL must report the options Python reports for it. */
static PyObject *ctx_pointer(PyObject *Py_UNUSED(m), PyObject *ctx) {
    const char *tname = Py_TYPE(ctx)->tp_name;
    PyTypeObject *t = Py_TYPE(ctx);
    int ok = 0;
    for (; t; t = t->tp_base)
        if (strcmp(t->tp_name, "_ssl._SSLContext") == 0)
            ok = 1;
    if (!ok || (size_t)Py_TYPE(ctx)->tp_basicsize < sizeof(PyObject) + sizeof(void *))
        return PyErr_Format(PyExc_TypeError, "not an ssl.SSLContext: %s", tname);
    SSL_CTX *ptr = *(SSL_CTX **)((char *)ctx + sizeof(PyObject));
    if (!ptr)
        return PyErr_Format(PyExc_RuntimeError, "no SSL_CTX in the SSLContext");
    PyObject *opts = PyObject_GetAttrString(ctx, "options");
    if (!opts)
        return NULL;
    unsigned long long want = PyLong_AsUnsignedLongLong(opts);
    Py_DECREF(opts);
    if (PyErr_Occurred())
        return NULL;
    if ((unsigned long long)SSL_CTX_get_options(ptr) != want)
        return PyErr_Format(PyExc_RuntimeError, "SSL_CTX layout check failed");
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)ptr);
}

static PyObject *openssl_version(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a)) {
    return PyLong_FromUnsignedLong(OpenSSL_version_num());
}

static PyMethodDef module_methods[] = {
    {"ctx_pointer", ctx_pointer, METH_O, "The verified SSL_CTX* of an ssl.SSLContext."},
    {"openssl_version", openssl_version, METH_NOARGS, "OpenSSL_version_num() of our libssl."},
    {"ja4", fp_ja4, METH_O, "The JA4 of a ClientHello handshake message; None if refused."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastplane", "The compiled data plane.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastplane(void) {
    if (PyType_Ready(&PlaneType) < 0)
        return NULL;
    conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (conn_index < 0)
        return PyErr_Format(PyExc_RuntimeError, "no SSL ex_data index");
    scratch = malloc(SCRATCH_SIZE);
    if (!scratch || out_init() < 0)
        return PyErr_NoMemory();
    if (!(R_DONE = PyUnicode_InternFromString("done")) ||
        !(R_CLIENT_CLOSED = PyUnicode_InternFromString("client closed")) ||
        !(R_IDLE = PyUnicode_InternFromString("idle timeout")) ||
        !(R_HS_TIMEOUT = PyUnicode_InternFromString("handshake timeout")) ||
        !(R_HS_EOF = PyUnicode_InternFromString("client closed during handshake")) ||
        !(R_UNREACHABLE = PyUnicode_InternFromString("backend unreachable")) ||
        !(R_BACKEND_CLOSED = PyUnicode_InternFromString("backend closed")))
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    Py_INCREF(&PlaneType);
    if (PyModule_AddObject(m, "Plane", (PyObject *)&PlaneType) < 0) {
        Py_DECREF(&PlaneType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
