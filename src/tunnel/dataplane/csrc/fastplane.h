/* The compiled data plane: accept -> TLS handshake -> backend connect -> relay -> close.
 *
 * Theory of operation (the Python side is tunnel/dataplane/fastplane.py):
 *  - A Plane owns an epoll set and a timerfd. The worker's asyncio loop watches the epoll
 *    fd as one reader and calls Plane.run_once(), which runs one batch of events in C;
 *    or, when every listener of the worker is compiled, the loop selects through
 *    Plane.wait() on that same epoll set, which runs the plane's events without returning
 *    to Python (fp_wait.c).
 *  - Per connection Python is called twice: on_handshake(...) once the TLS handshake is
 *    done (it returns the backend addresses, the bytes to send first, the connect timeout,
 *    or a refusal text), and on_close(...) with the summary (log line and metrics).
 *    The pools' passive health hears of connect attempts before the next connection picks
 *    its addresses: a failed attempt calls on_connect(...) at once (failures are rare); a
 *    success waits in a batch that Python takes at its next call (take_connected), unless
 *    on_handshake asked to hear of it at once (a member coming back logs it then).
 *  - A TLS connection's handshake starts at accept: the ClientHello usually came with the
 *    ACK that made the connection acceptable (one wait saved); what must see bytes first
 *    (the passthrough sniff, deny_ja4's peek) waits for them when none came yet.
 *  - The client's ClientHello message (at most HELLO_LIMIT bytes) is copied once, by an
 *    SSL message callback that is removed at handshake-done, and handed to the first of
 *    those calls; Python computes its JA4 only when it needs one, with ja4() (fp_ja4.c).
 *  - Listener policies that act inside the handshake (fp_policy.c): keylog_file is written
 *    by OpenSSL's keylog callback in C; deny_ja4 asks Python once (on_hello) with the
 *    copied ClientHello before OpenSSL parses it, and a refusal gets the Python plane's
 *    alert, not OpenSSL's answer.
 *  - TLS reads the client socket directly (a socket BIO) and writes it through a BIO that
 *    gathers the records of one SSL_write into one send (fp_out.c), from the SSL_CTX that
 *    Python built (certificates, ALPN, ciphers, ticket keys stay configured in one place).
 *    SNI selection
 *    is done here from a table of SSL_CTXs Python passes in.
 *  - Epoll is level-triggered; the interest of each socket is recomputed from the state
 *    after every event (want()), which is where back-pressure lives: a side is only read
 *    while the other side has nothing pending. Pending data is bounded by buffer_size.
 *    want() only records the interest; batch_end() applies what changed once per batch,
 *    before the next wait, so a mask that flips and flips back within one batch (the
 *    client unwatched while its backend connects, watched again when it has) costs no
 *    epoll_ctl.
 *  - Deadlines live in lists ordered by deadline (each list has one fixed duration, or is
 *    kept ordered by insertion from the tail); the timerfd is armed for the earliest.
 *  - A connection closed during a batch is only freed at the end of the batch, so a later
 *    event of the same batch never touches freed memory.
 *  - A listener with proxy_from starts each connection in S_PROXY: the PROXY header is
 *    peeked, decoded by Python, and exactly its bytes are read off the socket before
 *    OpenSSL sees any (fp_proxy.c says how).
 *  - TLS to a backend (fp_backend_tls.c): after the connect, the PROXY header (if any)
 *    goes in plaintext, then SSL_connect runs from the backend's client SSL_CTX that
 *    Python built, under the connect timeout; a failed handshake is a failed attempt
 *    (failover). The relay then reads and writes that side with SSL_read/SSL_write
 *    (fp_backend_relay.c): the hooks in fp_relay.c send each backend operation there
 *    when c->bt is set.
 *  - Client mode (fp_plain_client.c): a listener without SSL_CTX has connections without
 *    SSL (c->ssl NULL): accept goes straight to on_handshake, the client side is read and
 *    written with recv/send, and its end is a FIN.
 *  - SNI passthrough (fp_passthrough.c): on a listener with passthrough routes, the first
 *    bytes are peeked before OpenSSL reads any and Python's ClientHello reader decides
 *    once the hello is whole: terminate (OpenSSL reads it), refuse (our alert), or pass
 *    through (the SSL is freed and the connection relays as a client-mode one, the
 *    hello still on the socket being the first bytes relayed).
 *  - No length read from the network is trusted: every copy is bounded by the buffer it
 *    goes into (the scratch buffer, or a pending buffer allocated for exactly that size).
 */
#ifndef TUNNEL_FASTPLANE_H
#define TUNNEL_FASTPLANE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SCRATCH_SIZE (256 * 1024)
#define MAX_EVENTS 256
/* Accepts per wake-up of a listening socket: one, as nginx does by default. Looping until
 * EAGAIN costs a failed accept4 per connection when they come one at a time; the socket
 * is level-triggered, so one still pending is the next wait's first event. */
#define ACCEPT_BATCH 1
/* A client socket's read interest: with its FIN (RDHUP) seen even before the relay reads
 * (client_left), and the same mask from accept to relay, so no epoll_ctl in between. */
#define CLIENT_IN (EPOLLIN | EPOLLRDHUP)
#define BACKEND_READS 8
#define LINGER_SECONDS 2.0
#define CLOSE_SECONDS 30.0
#define RESUME_FRACTION 0.9
#define AWAITING 1e300 /* the "deadline" of a connection waiting for Plane.decide() */
#define HELLO_LIMIT (16 * 1024 + 4) /* the ClientHello kept for JA4: the reader's limit + header */

enum { K_LISTEN = 1, K_CONN = 2, K_TIMER = 3 };
enum { S_PROXY, S_HANDSHAKE, S_CONNECTING, S_RELAY, S_LINGER, S_CLOSING, S_CLOSED };

typedef struct conn conn;
typedef struct listener listener;
typedef struct plane plane;
struct fp_policy; /* fp_policy.c: keylog_file, deny_ja4 */
struct quiet;     /* fp_quiet.c: connections served without a call into Python */
#define QB 16      /* histogram bounds a quiet listener counts with, at most */
#define QROWS 16   /* distinct (version, cipher, ALPN, group) between two takes */
#define QALPN 32   /* the longest ALPN a quiet row keeps */
#define QREASONS 8 /* distinct close reasons between two takes */

typedef struct {
    conn *head, *tail;
} tlist;

typedef struct {
    int kind; /* K_LISTEN: first field, read through the epoll data pointer */
    int fd;
    int polled;
    listener *l;
} lsock;

typedef struct {
    char *name;
    SSL_CTX *ctx;
} sni_entry;

typedef struct {
    int len, bits; /* 4 or 16 address bytes, prefix length */
    unsigned char addr[16];
} proxy_net;

struct listener {
    plane *p;
    int lid;
    int nsocks;
    lsock *socks;
    SSL_CTX *ctx;
    sni_entry *exact, *wild;
    Py_ssize_t nexact, nwild;
    int strict, need_local, full;
    int verify; /* client certificates are asked for: on_handshake gets the DER, on_rejected */
    int per_ip; /* per-IP limits: on_accept admits (or refuses) each new connection */
    double hs_timeout, idle_timeout;
    size_t cap;
    long max_conns, count, accepted;
    tlist hs_list, idle_list;
    tlist proxy_list; /* S_PROXY: one duration (proxy_timeout), appended at the tail */
    int proxy, nnets; /* proxy_from: read a PROXY header first, from these networks only */
    double proxy_timeout;
    proxy_net *nets;
    PyObject *on_proxy, *r_untrusted, *r_expired;
    struct fp_policy *policy; /* NULL: none (set_policy) */
    PyObject *on_sniff; /* passthrough routes: the ClientHello is sniffed (fp_passthrough.c) */
    struct quiet *q;    /* NULL: every connection calls Python (fp_quiet.c) */
};

typedef struct {
    struct sockaddr_storage sa;
    socklen_t len;
} target;

typedef union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} peer_addr;

struct conn {
    int kind; /* K_CONN */
    int state;
    listener *l;
    unsigned long long id;
    int cfd, bfd;
    SSL *ssl;
    uint32_t cmask, bmask; /* the interest want() chose last (what the handlers test) */
    uint32_t creg, breg;   /* the interest the epoll set has (applied by batch_end) */
    conn *dnext;           /* on the plane's list of interest to apply (dirty set) */
    unsigned dirty : 1;
    unsigned client_done : 1, backend_done : 1, fatal : 1, hs_want_write : 1,
        rd_want_write : 1, shut_pending : 1, bmask_set : 1, sni_refused : 1, hello_seen : 1;
    unsigned tickets_due : 3; /* TLS 1.3 tickets still to send, with the first reply */
    unsigned client_gone : 1; /* the client's FIN (or error) was seen before the relay */
    unsigned client_more : 1; /* it sent more while the backend connects: read in the relay */
    unsigned char *hello; /* the client's first ClientHello message, until handshake-done */
    size_t hello_len; /* also the size of a ClientHello too large to keep */
    unsigned denied : 1;        /* deny_ja4 refused the ClientHello (fp_policy.c) */
    unsigned peeked : 1;        /* deny_ja4 looked at the first bytes (fp_policy.c) */
    unsigned char deny_alert;   /* the alert description it is refused with */
    unsigned char hello_records; /* records the ClientHello came in (at most 255 counted) */
    char *c2b; /* plaintext not yet written to the backend */
    size_t c2b_len, c2b_off;
    char *b2c; /* a blocked SSL_write, retried with the same bytes */
    size_t b2c_len;
    char *out; /* encrypted bytes the client's socket did not take yet (fp_out.c) */
    size_t out_len, out_off;
    unsigned long long bytes_in, bytes_out;
    double started, deadline, attempt_start, connect_timeout;
    conn *tprev, *tnext;
    tlist *tl;
    conn *prev, *next; /* every live connection of the plane */
    peer_addr peer;
    socklen_t peerlen;
    target *targets;
    int ntargets, cur, backend_index;
    int report_connect; /* Python asked to hear of a successful connect at once */
    PyObject *attempts; /* list of (index, errno | 0 ok | -1 timeout | < -1 + text, seconds) */
    PyObject *reason;
    struct btls *bt; /* TLS to the backend (fp_backend_tls.c); NULL: a plain backend */
    unsigned sniff : 1;     /* the ClientHello is still to be sniffed (fp_passthrough.c) */
    unsigned sniff_end : 1; /* meanwhile, the client's input ended (or failed) */
    unsigned passed : 1;    /* passed through: no TLS of ours, the client's bytes as they are */
    unsigned quiet : 1;      /* served without Python so far (fp_quiet.c) */
    unsigned quiet_open : 1; /* a quiet connection that reached its backend */
    size_t sniffed;         /* bytes the last sniff saw */
};

struct plane {
    PyObject_HEAD
    int epfd, tfd;
    int tkind; /* K_TIMER: &tkind is the timerfd's epoll data */
    PyObject *on_handshake, *on_close, *on_notice, *on_rejected, *on_accept;
    PyObject *on_connect; /* connect attempts, at once: each failure, a success if asked */
    listener **ls;
    int nls;
    long max_total, total;
    int full, starved, stopped;
    int held; /* no accepting before start_accepting(): the worker is not ready yet */
    unsigned long long next_id;
    conn *live, *dead;
    conn *dirty; /* connections whose interest changed in this batch (batch_end) */
    PyObject *connected; /* [(lid, id, attempts)] of connections that reached a backend */
    tlist connect_list, linger_list;
    tlist awaiting; /* connections whose backend addresses Python is still resolving */
    double now, armed;
    unsigned long long wakes, returns; /* Plane.wait(): epoll waits, and returns to Python */
};

extern int conn_index; /* SSL ex_data index of the connection (for the SNI callback) */
extern char *scratch; /* one read buffer for every connection (SCRATCH_SIZE) */
extern PyObject *R_DONE, *R_CLIENT_CLOSED, *R_IDLE, *R_HS_TIMEOUT, *R_HS_EOF, *R_UNREACHABLE,
    *R_BACKEND_CLOSED;

/* Functions shared between the files of the extension (all hidden: -fvisibility=hidden).
 * First fp_core.c: helpers, epoll interest, the accept gate, closing. */
double mono(void);
void tl_remove(conn *c);
void tl_insert(tlist *tl, conn *c, double deadline);
void set_reason(conn *c, PyObject *reason);
void set_reason_static(conn *c, PyObject *reason);
PyObject *errno_text(const char *prefix, int err);
PyObject *ssl_error_text(const char *prefix);
int sock_error(int fd);
void want(plane *p, conn *c);
void listener_poll(listener *l, int on);
void gate_apply(plane *p);
void notice(plane *p, const char *what, listener *l, long limit);
void gate_opened(plane *p, listener *l);
void gate_closed(plane *p, listener *l);
PyObject *addr_tuple(const struct sockaddr *sa);
PyObject *tls_facts(conn *c);
void conn_close(plane *p, conn *c);
void batch_end(plane *p);
void close_backend(conn *c);
void close_early(plane *p, conn *c, PyObject *reason);
void client_lost(plane *p, conn *c, int err);
void finish(plane *p, conn *c);
/* The relay both ways (fp_relay.c). */
void send_close_notify(conn *c);
void backend_finished(plane *p, conn *c);
void client_finished(plane *p, conn *c);
int send_backend(plane *p, conn *c, const char *data, size_t n);
void flush_c2b(plane *p, conn *c);
void pump_c2b(plane *p, conn *c);
int ssl_send(plane *p, conn *c, const char *data, size_t n);
void flush_b2c(plane *p, conn *c);
void pump_b2c(plane *p, conn *c);
/* The client socket's write side (fp_out.c). */
int out_init(void);
BIO *out_bio(conn *c);
void hold_reads(conn *c, BIO *rbio, int on);
void out_begin(conn *c);
int out_end(conn *c);
int out_flush(conn *c);
void out_free(conn *c);
/* The backend connect, from Python's decision (fp_connect.c). */
void add_attempt(plane *p, conn *c, int result);
void attempt_failed(plane *p, conn *c, int result);
void report_attempts(plane *p, conn *c);
void start_relay(plane *p, conn *c);
void try_connect(plane *p, conn *c);
void connect_result(plane *p, conn *c, int err);
int take_decision(plane *p, conn *c, PyObject *d);
int client_left(plane *p, conn *c);
void apply_decision(plane *p, conn *c, PyObject *d);
/* The client's TLS handshake (fp_handshake.c). */
void handshake_done(plane *p, conn *c);
void do_handshake(plane *p, conn *c);
int sni_callback(SSL *s, int *alert, void *arg);
void hello_callback(int write_p, int version, int content_type, const void *buf, size_t len,
                    SSL *ssl, void *arg);
PyObject *take_hello(conn *c);
/* fp_ja4.c: ja4(message) -> str | None, the JA4 of a ClientHello handshake message */
PyObject *fp_ja4(PyObject *m, PyObject *arg);
/* Listener policies inside the handshake (fp_policy.c). */
void hello_policy(conn *c, SSL *ssl);
void hello_refuse(plane *p, conn *c);
int hello_peek(plane *p, conn *c);
PyObject *Plane_set_policy(plane *p, PyObject *args);
void policy_release(listener *l);
/* TLS to backends (fp_backend_tls.c, fp_backend_relay.c): called where c->bt is set, except backend_eof (FIN
 * to a plain backend), btls_drop and btls_free (nothing to do without c->bt). */
int btls_take(conn *c, PyObject *tls);
void btls_connecting(plane *p, conn *c);
uint32_t btls_mask(conn *c, uint32_t bm);
void btls_relay(plane *p, conn *c, uint32_t ev);
int btls_write(plane *p, conn *c, const char *data, size_t n);
void btls_flush(plane *p, conn *c);
void btls_pump(plane *p, conn *c);
void btls_resume(plane *p, conn *c);
void backend_eof(conn *c);
/* Client mode (fp_plain_client.c): the client side without TLS (c->ssl NULL). */
void plain_pump_c2b(plane *p, conn *c);
int plain_send(plane *p, conn *c, const char *data, size_t n);
void btls_drop(conn *c);
void btls_free(conn *c);
/* Accept, the events of both sockets, the timers (fp_events.c). */
void do_accept(plane *p, lsock *s);
void on_client(plane *p, conn *c, uint32_t ev);
void on_backend(plane *p, conn *c, uint32_t ev);
void expire(plane *p, tlist *tl);
void arm_timer(plane *p);
void run_timers(plane *p);
/* The PROXY header from load balancers (fp_proxy.c). */
PyObject *Plane_proxy_in(plane *p, PyObject *args);
void proxy_free(listener *l);
void proxy_start(plane *p, conn *c);
void proxy_read(plane *p, conn *c);
void proxy_expired(plane *p, conn *c);
/* SNI passthrough (fp_passthrough.c). */
PyObject *Plane_passthrough(plane *p, PyObject *args);
void pt_free(listener *l);
int pt_sniff(plane *p, conn *c);
int pt_expired(plane *p, conn *c);
void pt_unreachable(conn *c);
/* The listeners of a Plane (fp_listener.c); the other Plane methods are in fp_module.c. */
PyObject *Plane_add_listener(plane *p, PyObject *args);
PyObject *Plane_start_accepting(plane *p, PyObject *ignored);
PyObject *Plane_stop_accepting(plane *p, PyObject *ignored);
PyObject *Plane_counts(plane *p, PyObject *arg);
void listener_free(listener *l);
/* The listener Python calls ``lid``, or NULL. */
listener *find_listener(plane *p, long lid);
/* Connections served without a call into Python (fp_quiet.c); fp_connect.c's parts. */
int parse_targets(PyObject *addrs, target **out);
void begin_connect(plane *p, conn *c);
PyObject *Plane_quiet(plane *p, PyObject *args);
PyObject *Plane_take_quiet(plane *p, PyObject *arg);
PyObject *Plane_quiet_served(plane *p, PyObject *arg);
int quiet_handshake(plane *p, conn *c);
void quiet_connected(conn *c, double seconds);
int quiet_close(plane *p, conn *c);
void quiet_free(listener *l);

/* One batch of events, and the worker loop's selector (fp_wait.c). */
int plane_batch(plane *p, struct epoll_event *evs, int n, PyObject *out);
PyObject *Plane_watch(plane *p, PyObject *args);
PyObject *Plane_wait(plane *p, PyObject *args);

#endif
