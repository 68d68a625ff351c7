/* Compiled data plane: connections served without a call into Python ("quiet" listeners).
 *
 * Theory of operation. Python is called twice per connection: at handshake-done for the
 * backend decision, at close for the metrics and the log line. On some listeners neither
 * call can tell one connection from the next: one target, one numeric backend address
 * that is up, no PROXY header, no TLS to the backend, no client certificates, no per-IP
 * limits, deny_ja4, PROXY in or passthrough, and no per-connection log line (its level is
 * off). Python then hands C the decision once (Plane.quiet) and C counts what the two
 * calls would have counted, per listener: handshakes by (version, cipher, ALPN, group)
 * with the histogram of their durations, backend connects with theirs, closes by reason,
 * bytes each way, and connects/closes for the member's open connections. Python takes
 * these counts (Plane.take_quiet) each time it reports statistics, so /metrics shows the
 * same numbers as with the calls (fastplane_quiet.py).
 *
 * A connection leaves the quiet path for the usual calls at the first thing that is not
 * the common case: a table full of distinct rows, a failed connect (Python is told at
 * once, as always; it turns the quiet path off until the member is up again), or a close
 * while the plane drains (the worker counts the closes that end a drain). Python's side
 * takes a connection it never saw at handshake-done as one of these.
 */
#include "fastplane.h"

struct quiet {
    int on;
    target *targets;
    int ntargets;
    double timeout;
    double hs_bounds[QB], cn_bounds[QB];
    int nhs, ncn;
    unsigned long long hs_buckets[QB + 1], cn_buckets[QB + 1];
    double hs_sum, cn_sum;
    struct qrow {
        const char *version, *cipher; /* OpenSSL's own static names */
        char group[32]; /* a copy: OpenSSL's group names belong to an SSL_CTX */
        unsigned char alpn[QALPN];
        unsigned alen;
        unsigned long long n;
    } rows[QROWS];
    int nrows;
    PyObject *reasons[QREASONS]; /* the close reasons seen (references held) */
    unsigned long long closed[QREASONS];
    int nreasons;
    unsigned long long connects, bytes_in, bytes_out, opened, ended, served;
};

/* Histogram bounds from a tuple of floats: their count (at most QB), or -1. */
static int bounds(PyObject *t, double *out) {
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) > QB) {
        PyErr_SetString(PyExc_ValueError, "quiet: at most 16 histogram bounds expected");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(t, i));
        if (PyErr_Occurred())
            return -1;
    }
    return (int)n;
}

/* As Python's bisect_left: the bucket of a value is the number of bounds below it. */
static void observe(unsigned long long *buckets, const double *b, int n, double v) {
    int i = 0;
    while (i < n && b[i] < v)
        i++;
    buckets[i]++;
}

/* Plane.quiet(lid, addresses, timeout, handshake bounds, connect bounds): serve the
 * listener's connections with this decision, no call into Python; (lid, None, ...): stop. */
PyObject *Plane_quiet(plane *p, PyObject *args) {
    int lid;
    double timeout;
    PyObject *addrs, *hs, *cn;
    if (!PyArg_ParseTuple(args, "iOdOO", &lid, &addrs, &timeout, &hs, &cn))
        return NULL;
    listener *l = find_listener(p, lid);
    if (!l || !l->ctx)
        return PyErr_Format(PyExc_ValueError, "quiet: no such TLS listener: %d", lid);
    if (!l->q && !(l->q = calloc(1, sizeof *l->q)))
        return PyErr_NoMemory();
    struct quiet *q = l->q;
    if (addrs == Py_None) {
        q->on = 0;
        Py_RETURN_NONE;
    }
    double hb[QB], cb[QB];
    int nh = bounds(hs, hb), nc = nh < 0 ? -1 : bounds(cn, cb);
    if (nc < 0)
        return NULL;
    if (!PyTuple_Check(addrs))
        return PyErr_Format(PyExc_TypeError, "quiet: a tuple of addresses expected");
    target *ts = NULL;
    int n = parse_targets(addrs, &ts);
    if (n < 0)
        return NULL;
    if ((q->nhs && (q->nhs != nh || memcmp(q->hs_bounds, hb, sizeof(double) * (size_t)nh))) ||
        (q->ncn && (q->ncn != nc || memcmp(q->cn_bounds, cb, sizeof(double) * (size_t)nc)))) {
        free(ts);
        return PyErr_Format(PyExc_ValueError, "quiet: the histogram bounds changed");
    }
    free(q->targets);
    q->targets = ts;
    q->ntargets = n;
    q->timeout = timeout;
    memcpy(q->hs_bounds, hb, sizeof(double) * (size_t)nh);
    memcpy(q->cn_bounds, cb, sizeof(double) * (size_t)nc);
    q->nhs = nh;
    q->ncn = nc;
    q->on = 1;
    Py_RETURN_NONE;
}

/* The row of this handshake's facts (added if new), or NULL: the table is full, or the
 * ALPN is longer than a row keeps. */
static struct qrow *row_of(struct quiet *q, SSL *ssl) {
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alen);
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
    const char *cname = cipher ? SSL_CIPHER_get_name(cipher) : NULL;
    const char *version = SSL_get_version(ssl);
    int nid = (int)SSL_get_negotiated_group(ssl);
    const char *group = nid > 0 ? SSL_group_to_name(ssl, nid) : NULL;
    if (!group)
        group = "";
    if (alen > QALPN || !cname || !version || strlen(group) >= sizeof q->rows[0].group)
        return NULL;
    for (int i = 0; i < q->nrows; i++) {
        struct qrow *r = &q->rows[i];
        if (r->alen == alen && !strcmp(r->version, version) && !strcmp(r->cipher, cname) &&
            !strcmp(r->group, group) && (!alen || !memcmp(r->alpn, alpn, alen)))
            return r;
    }
    if (q->nrows == QROWS)
        return NULL;
    struct qrow *r = &q->rows[q->nrows++];
    r->version = version;
    r->cipher = cname;
    strcpy(r->group, group); /* its length was checked above */
    r->alen = alen;
    if (alen)
        memcpy(r->alpn, alpn, alen);
    r->n = 0;
    return r;
}

/* At handshake-done: take the listener's decision and connect, counting the handshake.
 * 1: done so (c is quiet); 0: Python decides, as usual. */
int quiet_handshake(plane *p, conn *c) {
    struct quiet *q = c->l->q;
    if (!q || !q->on || !c->ssl || p->stopped)
        return 0;
    struct qrow *r = row_of(q, c->ssl);
    target *ts = r ? malloc(sizeof(target) * (size_t)q->ntargets) : NULL;
    if (!ts)
        return 0;
    r->n++;
    double seconds = p->now - c->started;
    observe(q->hs_buckets, q->hs_bounds, q->nhs, seconds);
    q->hs_sum += seconds;
    q->served++;
    free(c->hello); /* kept for a JA4 that nothing here asks for */
    c->hello = NULL;
    c->hello_len = 0;
    memcpy(ts, q->targets, sizeof(target) * (size_t)q->ntargets);
    c->targets = ts;
    c->ntargets = q->ntargets;
    c->connect_timeout = q->timeout;
    c->report_connect = 0;
    c->quiet = 1;
    begin_connect(p, c);
    return 1;
}

/* A quiet connection reached its backend after `seconds`. */
void quiet_connected(conn *c, double seconds) {
    struct quiet *q = c->l->q;
    q->connects++;
    q->opened++;
    observe(q->cn_buckets, q->cn_bounds, q->ncn, seconds);
    q->cn_sum += seconds;
    c->quiet_open = 1;
}

/* At close: count it here (1), or 0: Python's on_close counts it (draining, or a reason
 * table full). Either way a connection that reached its backend is counted as ended. */
int quiet_close(plane *p, conn *c) {
    struct quiet *q = c->l->q;
    if (c->quiet_open)
        q->ended++;
    if (!c->quiet || p->stopped || c->attempts)
        return 0;
    int i = 0;
    for (; i < q->nreasons; i++)
        if (q->reasons[i] == c->reason || PyUnicode_Compare(q->reasons[i], c->reason) == 0)
            break;
    if (PyErr_Occurred())
        PyErr_Clear();
    if (i == q->nreasons) {
        if (i == QREASONS)
            return 0;
        Py_INCREF(c->reason);
        q->reasons[q->nreasons++] = c->reason;
        q->closed[i] = 0;
    }
    q->closed[i]++;
    q->bytes_in += c->bytes_in;
    q->bytes_out += c->bytes_out;
    return 1;
}

/* Plane.take_quiet(lid): the counts since the last call, or None (nothing new):
 * (rows [(version, cipher, alpn, group, n)], handshake buckets, their sum, connects,
 *  connect buckets, their sum, closes [(reason, n)], bytes in, bytes out, opened, ended). */
PyObject *Plane_take_quiet(plane *p, PyObject *arg) {
    long lid = PyLong_AsLong(arg);
    if (lid == -1 && PyErr_Occurred())
        return NULL;
    listener *l = find_listener(p, lid);
    struct quiet *q = l ? l->q : NULL;
    if (!q || (!q->nrows && !q->nreasons && !q->connects && !q->opened && !q->ended))
        Py_RETURN_NONE;
    PyObject *rows = PyList_New(0), *closes = PyList_New(0);
    PyObject *hb = PyTuple_New(q->nhs + 1), *cb = PyTuple_New(q->ncn + 1);
    PyObject *out = NULL;
    if (!rows || !closes || !hb || !cb)
        goto done;
    for (int i = 0; i < q->nrows; i++) {
        struct qrow *r = &q->rows[i];
        PyObject *t = Py_BuildValue("(ssz#zK)", r->version, r->cipher,
                                    r->alen ? (const char *)r->alpn : NULL, (Py_ssize_t)r->alen,
                                    r->group[0] ? r->group : NULL, r->n);
        if (!t || PyList_Append(rows, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    for (int i = 0; i < q->nreasons; i++) {
        PyObject *t = Py_BuildValue("(OK)", q->reasons[i], q->closed[i]);
        if (!t || PyList_Append(closes, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    for (int i = 0; i <= q->nhs; i++)
        PyTuple_SET_ITEM(hb, i, PyLong_FromUnsignedLongLong(q->hs_buckets[i]));
    for (int i = 0; i <= q->ncn; i++)
        PyTuple_SET_ITEM(cb, i, PyLong_FromUnsignedLongLong(q->cn_buckets[i]));
    if (PyErr_Occurred())
        goto done;
    out = Py_BuildValue("(OOdKOdOKKKK)", rows, hb, q->hs_sum, q->connects, cb, q->cn_sum,
                        closes, q->bytes_in, q->bytes_out, q->opened, q->ended);
    if (!out)
        goto done;
    /* Taken: start again from zero (the rows and reasons are found again as they come). */
    for (int i = 0; i < q->nreasons; i++)
        Py_CLEAR(q->reasons[i]);
    q->nrows = q->nreasons = 0;
    memset(q->hs_buckets, 0, sizeof q->hs_buckets);
    memset(q->cn_buckets, 0, sizeof q->cn_buckets);
    q->hs_sum = q->cn_sum = 0.0;
    q->connects = q->bytes_in = q->bytes_out = q->opened = q->ended = 0;
done:
    Py_XDECREF(rows);
    Py_XDECREF(closes);
    Py_XDECREF(hb);
    Py_XDECREF(cb);
    return out;
}

/* Plane.quiet_served(lid): connections served on the quiet path so far (a debug aid). */
PyObject *Plane_quiet_served(plane *p, PyObject *arg) {
    long lid = PyLong_AsLong(arg);
    if (lid == -1 && PyErr_Occurred())
        return NULL;
    listener *l = find_listener(p, lid);
    return PyLong_FromUnsignedLongLong(l && l->q ? l->q->served : 0);
}

void quiet_free(listener *l) {
    struct quiet *q = l->q;
    if (!q)
        return;
    for (int i = 0; i < q->nreasons; i++)
        Py_CLEAR(q->reasons[i]);
    free(q->targets);
    free(q);
    l->q = NULL;
}
