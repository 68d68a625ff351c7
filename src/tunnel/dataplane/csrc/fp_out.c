/* Compiled data plane: the client socket's write side, a BIO that gathers records.
 *
 * OpenSSL's socket BIO writes every TLS record (16 KiB of plaintext at most) with its own
 * write(): four system calls for one 64 KiB chunk from the backend. This BIO is the SSL
 * object's write side instead (the read side stays a socket BIO):
 *  - Inside a gather window (ssl_send around SSL_write, do_handshake around
 *    SSL_do_handshake) records are appended to one shared buffer, and out_end() sends them
 *    with one send(): one system call per 64 KiB chunk, and one for the last handshake
 *    flight with both TLS 1.3 session tickets (OpenSSL flushes after each; a flush inside
 *    a window waits for its end).
 *  - Outside a window (alerts, close_notify, KeyUpdate answers) a write goes straight to
 *    the socket, as with the socket BIO; OpenSSL's BIO_flush calls (after every alert) find
 *    nothing left unless the socket was full.
 *  - What the socket does not take is kept per connection (c->out, allocated only while
 *    non-empty) and later writes are appended behind it, so the byte order on the wire is
 *    the order OpenSSL wrote in. The connection counts as "client side pending" meanwhile
 *    (want(): EPOLLOUT on the client, the backend is not read), which keeps back-pressure
 *    as exact as before. A write that would make the kept bytes exceed the listener's
 *    buffer_size + OUT_SLACK is refused with a retry (OpenSSL then reports WANT_WRITE, as a
 *    full socket would), so a client that sends without reading cannot grow it.
 */
#include "fastplane.h"

#define OUT_SIZE (SCRATCH_SIZE + 64 * 1024) /* one SSL_write of SCRATCH_SIZE, records and all */
#define OUT_SLACK (64 * 1024)

static char *gbuf;     /* the gather window's buffer (OUT_SIZE), shared by all connections */
static size_t glen;    /* bytes gathered in it */
static conn *gconn;    /* the connection whose window is open, or NULL */
static BIO_METHOD *method;

/* One send: bytes taken (0 for a full socket), or -1 with errno set. */
static ssize_t out_send(int fd, const char *d, size_t n) {
    for (;;) {
        ssize_t w = send(fd, d, n, MSG_NOSIGNAL);
        if (w >= 0)
            return w;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return -1;
    }
}

/* Keep bytes behind the ones already kept. force: part of this write already left (or it
 * was accepted earlier), so it must be kept whatever the limit (it is bounded by the
 * caller: a record, or one gather window). 1 kept, 0 refused (limit), -1 no memory. */
static int out_keep(conn *c, const char *d, size_t n, int force) {
    if (!force && c->out_len + n > c->l->cap + OUT_SLACK)
        return 0;
    if (c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len);
        c->out_off = 0;
    }
    char *b = realloc(c->out, c->out_len + n);
    if (!b) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(b + c->out_len, d, n);
    c->out = b;
    c->out_len += n;
    return 1;
}

/* Send what the window gathered; the rest is kept. 0, or -1 with errno set. */
static int gather_send(conn *c) {
    size_t n = glen;
    glen = 0;
    if (!n)
        return 0;
    ssize_t w = out_send(c->cfd, gbuf, n);
    if (w < 0)
        return -1;
    if ((size_t)w < n && out_keep(c, gbuf + w, n - (size_t)w, 1) < 0)
        return -1;
    return 0;
}

/* A record (or a flight) from OpenSSL: 1 accepted, 0 refused (retry), -1 errno set. */
static int out_put(conn *c, const char *d, size_t n) {
    if (c->out_len)
        return out_keep(c, d, n, 0); /* behind what is waiting: the order is kept */
    if (gconn == c) {
        if (glen + n <= OUT_SIZE) {
            memcpy(gbuf + glen, d, n);
            glen += n;
            return 1;
        }
        if (gather_send(c) < 0)
            return -1;
        if (c->out_len)
            return out_keep(c, d, n, 0);
        if (n <= OUT_SIZE) {
            memcpy(gbuf, d, n);
            glen = n;
            return 1;
        }
    }
    ssize_t w = out_send(c->cfd, d, n);
    if (w < 0)
        return -1;
    if ((size_t)w < n && out_keep(c, d + w, n - (size_t)w, 1) < 0)
        return -1;
    return 1;
}

/* Send the kept bytes: 1 all gone (the buffer is freed), 0 some left, -1 errno set. */
int out_flush(conn *c) {
    while (c->out_len) {
        ssize_t w = out_send(c->cfd, c->out + c->out_off, c->out_len);
        if (w < 0)
            return -1;
        if (w == 0)
            return 0;
        c->out_off += (size_t)w;
        c->out_len -= (size_t)w;
    }
    out_free(c);
    return 1;
}

void out_free(conn *c) {
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
}

void out_begin(conn *c) {
    gconn = c;
    glen = 0;
}

/* Close the window: send what it gathered. 0, or -1 with errno set. */
int out_end(conn *c) {
    int r = gather_send(c);
    gconn = NULL;
    return r;
}

static int bio_write(BIO *b, const char *d, int n) {
    conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!c || c->cfd < 0 || n < 0)
        return -1;
    int r = out_put(c, d, (size_t)n);
    if (r > 0)
        return n;
    if (r == 0)
        BIO_set_retry_write(b);
    return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)num;
    (void)ptr;
    conn *c = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH: {
        BIO_clear_retry_flags(b);
        if (!c || c->cfd < 0 || gconn == c)
            return 1; /* in a window: sent (or kept) when it closes */
        int r = out_flush(c);
        if (r == 0)
            BIO_set_retry_write(b);
        return r > 0 ? 1 : -1;
    }
    case BIO_CTRL_WPENDING:
        return c ? (long)c->out_len : 0;
    case BIO_CTRL_DUP:
        return 1;
    default:
        return 0;
    }
}

/* The read side's callback while the handshake runs (hold_reads): a read asked for while
 * this connection's flight still waits in the gather window is answered "retry" without a
 * system call. The client cannot have answered a flight it was not sent yet, so the read
 * could only find EAGAIN; the flight leaves when the window closes, and the
 * level-triggered EPOLLIN says when the answer is in (bytes the client sent earlier wake
 * the loop at once). One read() fewer per handshake. */
static long hold_read(BIO *b, int oper, const char *argp, size_t len, int argi, long argl,
                      int ret, size_t *processed) {
    (void)argp;
    (void)len;
    (void)argi;
    (void)argl;
    (void)processed;
    if (oper == BIO_CB_READ && glen > 0 && gconn && gconn == (conn *)BIO_get_callback_arg(b)) {
        BIO_clear_retry_flags(b);
        BIO_set_retry_read(b);
        return -1;
    }
    return ret;
}

void hold_reads(conn *c, BIO *rbio, int on) {
    BIO_set_callback_arg(rbio, on ? (char *)c : NULL);
    BIO_set_callback_ex(rbio, on ? hold_read : NULL);
}

/* Once per process, at import. 0, or -1. */
int out_init(void) {
    int index = BIO_get_new_index();
    gbuf = malloc(OUT_SIZE);
    method = index > 0 ? BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "tunnel gather") : NULL;
    if (!gbuf || !method || !BIO_meth_set_write(method, bio_write) ||
        !BIO_meth_set_ctrl(method, bio_ctrl))
        return -1;
    return 0;
}

/* The write side of a connection's SSL object. */
BIO *out_bio(conn *c) {
    BIO *b = BIO_new(method);
    if (b) {
        BIO_set_data(b, c);
        BIO_set_init(b, 1);
    }
    return b;
}
