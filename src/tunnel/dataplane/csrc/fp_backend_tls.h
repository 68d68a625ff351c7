/* TLS to backends: the state shared by fp_backend_tls.c (settings, handshake) and
 * fp_backend_relay.c (the relay over that TLS). See fp_backend_tls.c's theory. */
#ifndef TUNNEL_FP_BACKEND_TLS_H
#define TUNNEL_FP_BACKEND_TLS_H

#include "fastplane.h"

#define TLS_FAILED (-2)       /* attempt result: the handshake failed (text: why) */
#define CLOSED_IN_HS (-3)     /* attempt result: the backend closed during the handshake */

struct btls {
    PyObject *settings; /* (SSLContext, SSL_CTX*, host flags | -1, names, key log fd | -1) */
    SSL_CTX *ctx;
    int keylog_fd; /* the backend's keylog_file (Python's, open for the worker's life) */
    int hostflags; /* -1: the context does not check the host name */
    SSL *ssl;      /* of the current attempt / the relay */
    char *pre;     /* the PROXY header, sent in plaintext before every ClientHello */
    size_t pre_len, pre_off;
    unsigned hs_want_write : 1, rd_want_write : 1, wr_want_read : 1, shut_pending : 1,
        eof : 1, fin_sent : 1;
};

#endif
