/* One epoll wait per wake-up: the plane's epoll set as the worker loop's selector.
 *
 * When every listener of a worker is on the compiled plane, the worker's asyncio loop
 * selects through Plane.wait() (tunnel/dataplane/oneloop.py) instead of watching the
 * plane's epoll fd from uvloop. The fds the loop watches (its self-pipe, which is also the
 * signal wakeup fd, resolver and health-check sockets...) are registered in the plane's
 * own epoll set with Plane.watch(), tagged (fd << 2) | PY_TAG: the other tags are pointers
 * (at least 4-aligned, bit 0 the side of a connection), so bit 1 tells them apart.
 *
 * Plane.wait(timeout, ready, scheduled) waits (the GIL released if other threads exist:
 * resolver threads run meanwhile), runs the plane's events in C and waits again, until
 * one of these returns to Python: a watched fd is ready (level-triggered, so none is lost by returning
 * early), the timeout passes, a signal interrupts the wait (EINTR: Python's handlers run;
 * asyncio's also come through the self-pipe), or a call into Python from C scheduled
 * asyncio work: ``ready`` (the loop's queue of callbacks) is not empty, or ``scheduled``
 * (its heap of timers, only ever pushed to outside the loop's own step) grew. A wake-up
 * with only plane events thus costs one epoll_wait and no Python at all.
 */
#include "fastplane.h"

#include <limits.h>
#include <math.h>

#define PY_TAG 2

/* One batch of epoll events: connections, listeners, the timerfd in C; the watched fds of
 * Python appended to ``out`` as (fd, selectors mask). Then the due timers, re-arming. */
int plane_batch(plane *p, struct epoll_event *evs, int n, PyObject *out) {
    p->now = mono();
    int timers = 0;
    for (int i = 0; i < n; i++) {
        uintptr_t tag = (uintptr_t)evs[i].data.u64;
        if (tag & PY_TAG) {
            uint32_t e = evs[i].events;
            /* What selectors.EpollSelector reports: an error or hang-up wakes both ways. */
            long mask = ((e & ~EPOLLOUT) ? 1 : 0) | ((e & ~EPOLLIN) ? 2 : 0);
            PyObject *item = Py_BuildValue("(il)", (int)(tag >> 2), mask);
            if (!item || !out || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                return -1;
            }
            Py_DECREF(item);
            continue;
        }
        int side = (int)(tag & 1);
        void *obj = (void *)(tag & ~(uintptr_t)1);
        int kind = *(int *)obj;
        if (kind == K_CONN) {
            conn *c = obj;
            if (c->state == S_CLOSED)
                continue;
            if (side)
                on_backend(p, c, evs[i].events);
            else
                on_client(p, c, evs[i].events);
        } else if (kind == K_LISTEN) {
            do_accept(p, obj);
        } else {
            timers = 1;
        }
    }
    if (timers || (p->armed > 0 && p->armed <= p->now))
        run_timers(p);
    arm_timer(p);
    batch_end(p);
    return PyErr_Occurred() ? -1 : 0;
}

/* watch(fd, mask): watch fd for Python (mask: selectors' EVENT_READ 1 | EVENT_WRITE 2; 0
 * stops watching it). ``added`` says whether fd is watched already (ADD or MOD). */
PyObject *Plane_watch(plane *p, PyObject *args) {
    int fd, mask, added;
    if (!PyArg_ParseTuple(args, "iip", &fd, &mask, &added))
        return NULL;
    if (fd < 0 || fd > INT_MAX >> 2)
        return PyErr_Format(PyExc_ValueError, "bad file descriptor %d", fd);
    int rc;
    if (!mask) {
        rc = epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
    } else {
        uint32_t ev = ((mask & 1) ? EPOLLIN : 0) | ((mask & 2) ? EPOLLOUT : 0);
        struct epoll_event e = {.events = ev, .data.u64 = ((uint64_t)fd << 2) | PY_TAG};
        rc = epoll_ctl(p->epfd, added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &e);
    }
    if (rc < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* Whether this thread is the interpreter's only one. Then nobody can want the GIL while
 * it waits (a thread that runs Python is started by Python code: by this thread, not
 * while it waits), and keeping it saves a release and re-take per wake-up: about 400
 * instructions, a tenth of the wake-up's own cost. Resolver threads (run_in_executor)
 * have their thread state from their start, before the wait that must let them run. */
static int alone(void) {
    PyThreadState *me = PyThreadState_Get();
    PyThreadState *head = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(me));
    return head == me && PyThreadState_Next(me) == NULL;
}

static Py_ssize_t size_of(PyObject *o) {
    return o == Py_None ? 0 : PyObject_Length(o);
}

/* wait(timeout, ready, scheduled) -> [(fd, mask)]: see the comment atop this file.
 * timeout None: no limit. ready, scheduled: sized objects (or None). */
PyObject *Plane_wait(plane *p, PyObject *args) {
    PyObject *timeout_o, *ready, *scheduled;
    if (!PyArg_ParseTuple(args, "OOO", &timeout_o, &ready, &scheduled))
        return NULL;
    double timeout = -1;
    if (timeout_o != Py_None) {
        timeout = PyFloat_AsDouble(timeout_o);
        if (timeout == -1 && PyErr_Occurred())
            return NULL;
        if (timeout < 0)
            timeout = 0;
    }
    Py_ssize_t timers0 = size_of(scheduled);
    if (timers0 < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    double deadline = timeout >= 0 ? mono() + timeout : 0;
    struct epoll_event evs[MAX_EVENTS];
    for (int first = 1;; first = 0) {
        int ms = -1;
        if (timeout >= 0) {
            /* p->now: read by plane_batch() just after the last wait returned. */
            double left = first ? timeout : deadline - p->now;
            if (left <= 0 && !first)
                break;
            /* Rounded up, as selectors does: a wait never ends just short of a timer. */
            ms = left <= 0 ? 0 : left >= INT_MAX / 1000 ? INT_MAX : (int)ceil(left * 1e3);
        }
        int n, err;
        if (alone()) {
            n = epoll_wait(p->epfd, evs, MAX_EVENTS, ms);
            err = errno;
        } else {
            Py_BEGIN_ALLOW_THREADS
            n = epoll_wait(p->epfd, evs, MAX_EVENTS, ms);
            err = errno;
            Py_END_ALLOW_THREADS
        }
        p->wakes++;
        if (n < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    goto fail;
                break;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        if (plane_batch(p, evs, n, out) < 0)
            goto fail;
        if (PyList_GET_SIZE(out) || ms == 0)
            break;
        Py_ssize_t queued = size_of(ready), timers = size_of(scheduled);
        if (queued < 0 || timers < 0)
            goto fail;
        if (queued || timers != timers0)
            break;
    }
    p->returns++;
    return out;
fail:
    p->returns++;
    Py_DECREF(out);
    return NULL;
}
