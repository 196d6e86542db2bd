/* The front's connection loop: one thread owns every client socket through epoll. It accepts,
 * reads each request head within a deadline, refuses what it must (capacity, methods, bad
 * handshakes) with a clear HTTP answer, performs WebSocket upgrades itself, and forwards plain
 * HTTP requests to CivetWeb on a private loopback port. For WebSockets it parses frames strictly
 * (RFC 6455), refuses a frame larger than the message limit from its header alone, hands whole
 * messages to the handler pool (conn.h), writes each connection's outgoing queue without ever
 * blocking, pings idle peers, and drops peers that stop reading, stop answering or never finish
 * a close handshake. */
#ifndef DA3_NET_LOOP_H
#define DA3_NET_LOOP_H

#include <stddef.h>

typedef struct {
    int listen_fd;           /* from net_listen */
    int backend_port;        /* CivetWeb on 127.0.0.1 */
    int max_conns;           /* size of the connection table (conn_table_init) */
    int max_websockets;      /* upgrades past this get 503 */
    int max_relays;          /* HTTP connections forwarded to CivetWeb at once; past it 503 */
    size_t max_message;      /* largest WebSocket message (bytes) */
    size_t max_inbound;      /* bytes all incoming messages may hold at once; past it payloads wait */
    size_t max_http_body;    /* largest HTTP request body forwarded (bytes) */
    double request_timeout;  /* a request head, or body, must complete within this (s) */
    double idle_timeout;     /* an idle keep-alive HTTP connection is closed after this (s) */
    double ping_interval;    /* a silent WebSocket is pinged after this (s) */
    double pong_timeout;     /* ... and dropped if still silent this much later (s) */
    double close_timeout;    /* a peer has this long to answer our close frame (s) */
    double send_timeout;     /* queued output that makes no progress this long drops the peer (s) */
    const char *ws_prefix;   /* WebSocket endpoint: this path, or it + "/..." or "?..." */
    const char *front_secret; /* sent to CivetWeb with every forwarded request (http_api.h) */
    int trust_proxy;          /* the client's address is the proxy's X-Real-IP / X-Forwarded-For */
    int tls;                  /* the listener speaks TLS (tls_init has run): handshake first */
} net_config;

/* Binds and listens on host:port (port 0: any). Returns the socket, or -1 with err set. */
int net_listen(const char *host, int port, char *err, size_t errlen);

/* The port a listening socket is bound to. */
int net_bound_port(int fd);

/* Starts the loop thread (conn_table_init and handler_pool_start must have run). Returns 0/-1. */
int net_loop_start(const net_config *cfg);

/* Closes the listener, closes every connection (WebSockets get 1001 "server shutting down"),
 * and joins the loop thread. */
void net_loop_stop(void);

/* Live counts: open client connections and WebSockets. */
void net_loop_counts(int *connections, int *websockets);

#endif
