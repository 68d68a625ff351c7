/* Compiled data plane: the listeners of a Plane. add_listener takes a listener's sockets,
 * its SSL_CTX and SNI tables and its limits; stop_accepting closes the sockets (drain);
 * counts gives its statistics; listener_free releases it with the Plane. Accepting on
 * them is in fp_events.c, the accept gate (max_connections) in fp_core.c. */
#include "fastplane.h"

static int sni_table(PyObject *list, sni_entry **out, Py_ssize_t *count) {
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "SNI table: list of (name, SSL_CTX pointer)");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    *out = calloc((size_t)n + 1, sizeof(sni_entry));
    if (!*out) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *name;
        unsigned long long ptr;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "sK", &name, &ptr))
            return -1;
        (*out)[i].name = strdup(name);
        (*out)[i].ctx = (SSL_CTX *)(uintptr_t)ptr;
        if (!(*out)[i].name) {
            PyErr_NoMemory();
            return -1;
        }
        *count = i + 1;
    }
    return 0;
}

/* add_listener(lid, fds, ctx_ptr, exact, wildcard, strict, handshake_timeout,
 *              idle_timeout, buffer_size, max_connections, need_local, verify, per_ip) */
PyObject *Plane_add_listener(plane *p, PyObject *args) {
    int lid, strict, need_local, verify, per_ip;
    PyObject *fds, *exact, *wild;
    unsigned long long ctx;
    double hs, idle;
    Py_ssize_t cap;
    long maxc;
    if (!PyArg_ParseTuple(args, "iO!KOOpddnlppp", &lid, &PyList_Type, &fds, &ctx, &exact, &wild,
                          &strict, &hs, &idle, &cap, &maxc, &need_local, &verify, &per_ip))
        return NULL;
    listener *l = calloc(1, sizeof *l);
    listener **grown = l ? realloc(p->ls, sizeof(listener *) * (size_t)(p->nls + 1)) : NULL;
    if (!grown) {
        free(l);
        return PyErr_NoMemory();
    }
    p->ls = grown;
    p->ls[p->nls++] = l; /* owned by the plane from here on, also on errors below */
    l->p = p;
    l->lid = lid;
    l->ctx = (SSL_CTX *)(uintptr_t)ctx;
    l->strict = strict;
    l->need_local = need_local;
    l->verify = verify;
    l->per_ip = per_ip;
    l->hs_timeout = hs;
    l->idle_timeout = idle;
    l->cap = (size_t)(cap < 1024 ? 1024 : (cap > SCRATCH_SIZE ? SCRATCH_SIZE : cap));
    l->max_conns = maxc;
    if (sni_table(exact, &l->exact, &l->nexact) < 0 || sni_table(wild, &l->wild, &l->nwild) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(fds);
    l->socks = calloc((size_t)n + 1, sizeof(lsock));
    if (!l->socks)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        int fd = (int)PyLong_AsLong(PyList_GET_ITEM(fds, i));
        if (fd < 0 && PyErr_Occurred())
            return NULL;
        l->socks[i] = (lsock){.kind = K_LISTEN, .fd = fd, .polled = 0, .l = l};
        l->nsocks = (int)i + 1;
    }
    if (l->ctx) { /* 0: client mode, plaintext clients */
        SSL_CTX_set_tlsext_servername_callback(l->ctx, sni_callback);
        SSL_CTX_set_tlsext_servername_arg(l->ctx, l);
    }
    gate_apply(p);
    Py_RETURN_NONE;
}

/* The worker is ready (its pools have their first answers): accept from now on. Until
 * then the listening sockets are not in the epoll set, which the worker's loop may already
 * be waiting on (tunnel/dataplane/oneloop.py). */
PyObject *Plane_start_accepting(plane *p, PyObject *Py_UNUSED(ignored)) {
    p->held = 0;
    gate_apply(p);
    Py_RETURN_NONE;
}

PyObject *Plane_stop_accepting(plane *p, PyObject *Py_UNUSED(ignored)) {
    p->stopped = 1;
    for (int i = 0; i < p->nls; i++) {
        listener *l = p->ls[i];
        listener_poll(l, 0);
        for (int j = 0; j < l->nsocks; j++) {
            if (l->socks[j].fd >= 0)
                close(l->socks[j].fd);
            l->socks[j].fd = -1;
        }
    }
    Py_RETURN_NONE;
}

listener *find_listener(plane *p, long lid) {
    for (int i = 0; i < p->nls; i++)
        if (p->ls[i]->lid == lid)
            return p->ls[i];
    return NULL;
}

PyObject *Plane_counts(plane *p, PyObject *arg) {
    long lid = PyLong_AsLong(arg);
    if (lid == -1 && PyErr_Occurred())
        return NULL;
    listener *l = find_listener(p, lid);
    if (l)
        return Py_BuildValue("(ll)", l->accepted, l->count);
    return Py_BuildValue("(ii)", 0, 0);
}

/* Everything a listener holds (its sockets are closed here unless drain closed them). */
void listener_free(listener *l) {
    if (l->ctx)
        SSL_CTX_set_tlsext_servername_arg(l->ctx, NULL); /* no dangling listener */
    policy_release(l);
    for (int j = 0; j < l->nsocks; j++)
        if (l->socks[j].fd >= 0)
            close(l->socks[j].fd);
    for (Py_ssize_t j = 0; l->exact && j < l->nexact; j++)
        free(l->exact[j].name);
    for (Py_ssize_t j = 0; l->wild && j < l->nwild; j++)
        free(l->wild[j].name);
    proxy_free(l);
    pt_free(l);
    quiet_free(l);
    free(l->exact);
    free(l->wild);
    free(l->socks);
    free(l);
}
