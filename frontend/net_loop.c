#include "frontend/net_loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <jansson.h>

#include "common/b64.h"
#include "common/log.h"
#include "common/util.h"
#include "frontend/api_keys.h"
#include "frontend/client_limits.h"
#include "frontend/conn.h"
#include "frontend/cors.h"
#include "frontend/handler_pool.h"
#include "frontend/http_api.h"
#include "frontend/http_head.h"
#include "frontend/messages.h"
#include "frontend/metrics.h"
#include "frontend/tls.h"
#include "frontend/ws_frame.h"

#define RBUF_CAP 65536        /* client input buffer (heads, frame headers, small frames) */
#define SBUF_CAP 65536        /* backend -> client relay buffer */
#define MSG_CHUNK (1u << 20)  /* a message buffer grows by at most this ahead of the data */

/* epoll tags: what an event's fd is */
#define TAG_CLIENT 0ULL
#define TAG_BACKEND 1ULL
#define TAG_LISTEN 2ULL
#define TAG_WAKE 3ULL
#define TAG(x) ((uint64_t)(x) << 32)

typedef enum { ST_HTTP = 1, ST_WS } conn_state;

/* What the connection is writing: a control frame of the loop's, a queued frame (or raw HTTP
 * output), or a relayed backend response. */
typedef enum { OUT_NONE = 0, OUT_CTL, OUT_FRAME, OUT_RELAY } out_kind;

/* A control frame of the loop's own (pong, ping), written between queued frames. */
typedef struct {
    uint8_t b[2 + WS_MAX_CONTROL];
    size_t len, sent;
} ctl_frame;

/* The loop's private state of one client connection (indexed like conn.h's slots). */
typedef struct {
    int active;
    uint64_t id;
    int fd, bfd;
    conn_state st;
    uint32_t ev, bev;              /* current epoll interest of fd / bfd */
    double last_rx, last_tx, wait_since;
    double last_data_tx;           /* last progress writing a queued frame (not our pings) */
    double body_deadline;          /* the forwarded request's body must have arrived by then */
    uint8_t *rbuf;
    size_t rlen, rcap;             /* rcap: RBUF_CAP, or a whole HTTP body while one is collected */
    /* output */
    conn_out *wq, *wq_tail;        /* frames taken from the slot, oldest first */
    ctl_frame ctl[4];
    int nctl;
    int close_after_flush;
    out_kind writing;              /* an item begun or refused (EAGAIN): continued first */
    /* HTTP */
    int requests;                  /* requests seen on this connection */
    int forwarding;                /* a request is with the backend */
    int connect_pending;           /* the body is collected first: CivetWeb only sees whole requests */
    int bconnecting;
    char *bout;                    /* rewritten request head for the backend */
    size_t bout_len, bout_sent;
    uint64_t body_left;            /* request body bytes still to be read from the client */
    size_t body_ready;             /* body bytes at the start of rbuf ready for the backend */
    uint8_t *sbuf;
    size_t slen, soff;
    int b_eof, c_eof;
    int resp_seen, resp_framed;    /* response head seen; it has a length (keep-alive possible) */
    int req_head, req_close;       /* the request was HEAD / asked to close */
    /* WebSocket */
    int opened_ev;                 /* OPEN delivered: CLOSED must follow */
    ws_frame_header fh;
    int in_frame;
    uint64_t frame_done, discard;
    uint8_t *msg;
    size_t mlen, mcap;
    int mop;
    uint8_t ctlbuf[WS_MAX_CONTROL];
    int paused, close_recv, close_sent, refusing;
    int starved;                   /* waiting for `want` bytes of the front's inbound budget */
    int resume_wanted;             /* a handler finished the message: read again */
    size_t want, reserved;         /* budget wanted by the current frame / held by the message */
    double close_sent_at;
    int ping_out;
    /* The current request's caller, checked by route() (name "" when keys are off), and its CORS
     * response headers, which the loop's own answers carry too. */
    api_identity who;
    char cors[300];
    char client[CLIENT_ADDR_MAX];  /* the client's address (client_limits.h), set by admit() */
    client_entry *cl;              /* WebSocket: its per-address limits */
    int dropping;                  /* the current message is over the message rate: skipped */
    int throttled;                 /* over the byte rate: not read until throttle_until */
    double throttle_until;
    /* TLS (tls.h): NULL on a plain listener */
    tls_conn *tls;
    int handshaking;               /* the TLS handshake is not done: nothing else happens yet */
    int read_wants_write;          /* a TLS read waits for the socket to be writable */
    int write_wants_read;          /* a TLS write waits for the socket to be readable */
    int again;                     /* on L.again: decrypted bytes wait inside OpenSSL */
    int prepaid;                   /* charged to its address at accept: the first request is paid */
} lconn;

static struct {
    net_config cfg;
    int ep;
    lconn *c;
    pthread_t thread;
    atomic_int stopping;
    int started;
    atomic_int conns, websockets;
    int relays;
    /* TLS connections whose decrypted input waits inside OpenSSL, where epoll cannot see it:
     * read again without waiting for an event. */
    int nagain;
} L;

static const char ALLOW[] = "GET, HEAD, POST, DELETE, OPTIONS";

static int pull_output(lconn *c);

/* ---- the client socket: plain or TLS ------------------------------------------------------ */

/* read(2) on the client connection. */
static ssize_t client_read(lconn *c, void *buf, size_t n) {
    if (!c->tls) return read(c->fd, buf, n);
    ssize_t r = tls_read(c->tls, buf, n);
    c->read_wants_write = r < 0 && errno == EAGAIN && tls_wants_write(c->tls);
    return r;
}

/* send(2) on the client connection, without SIGPIPE. */
static ssize_t client_send(lconn *c, const void *buf, size_t n) {
    if (!c->tls) return send(c->fd, buf, n, MSG_NOSIGNAL);
    return tls_write(c->tls, buf, n);
}

/* Gathered send of a frame's header and payload. Over TLS both go into one record where they
 * fit (a header alone in its own record would cost a record's overhead per frame). */
static ssize_t client_sendv(lconn *c, const struct iovec *iov, int n) {
    if (!c->tls) {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        return sendmsg(c->fd, &mh, MSG_NOSIGNAL);
    }
    if (n == 1 || iov[0].iov_len >= 16384) return tls_write(c->tls, iov[0].iov_base, iov[0].iov_len);
    uint8_t rec[16384];
    size_t take = iov[1].iov_len < sizeof rec - iov[0].iov_len ? iov[1].iov_len : sizeof rec - iov[0].iov_len;
    memcpy(rec, iov[0].iov_base, iov[0].iov_len);
    memcpy(rec + iov[0].iov_len, iov[1].iov_base, take);
    return tls_write(c->tls, rec, iov[0].iov_len + take);
}

int net_listen(const char *host, int port, char *err, size_t errlen) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "cannot resolve --host %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 4096)) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

int net_bound_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl)) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

void net_loop_counts(int *connections, int *websockets) {
    *connections = atomic_load(&L.conns);
    *websockets = atomic_load(&L.websockets);
}

/* ---- epoll interest --------------------------------------------------------------------- */

static int has_output(const lconn *c) {
    return c->wq || c->nctl || (c->st == ST_HTTP && c->slen > c->soff);
}

/* Keeps L.nagain equal to the number of connections marked `again`. */
static void mark_again(lconn *c, int on) {
    if (on == c->again) return;
    c->again = on;
    L.nagain += on ? 1 : -1;
}

static void set_interest(lconn *c) {
    uint32_t want = 0;
    if (c->handshaking) {
        want = tls_wants_write(c->tls) ? EPOLLOUT : EPOLLIN;
    } else {
        int can_read = c->st == ST_WS ? !c->paused && !c->close_recv && !c->starved && !c->throttled : c->rlen < c->rcap;
        int reading = !c->c_eof && can_read && !c->close_after_flush;
        if (reading || (c->write_wants_read && has_output(c))) want |= EPOLLIN;
        if ((has_output(c) && !c->write_wants_read) || (reading && c->read_wants_write)) want |= EPOLLOUT;
        if (c->tls) mark_again(c, reading && tls_pending(c->tls) > 0);
    }
    if (want != c->ev) {
        struct epoll_event e = {.events = want, .data.u64 = TAG(TAG_CLIENT) | (uint64_t)conn_index(c->id)};
        epoll_ctl(L.ep, EPOLL_CTL_MOD, c->fd, &e);
        c->ev = want;
    }
    if (c->bfd >= 0) {
        uint32_t bw = 0;
        if (c->bconnecting || c->bout_sent < c->bout_len || c->body_ready) bw |= EPOLLOUT;
        if (!c->bconnecting && !c->b_eof && c->slen < SBUF_CAP) bw |= EPOLLIN;
        if (bw != c->bev) {
            struct epoll_event e = {.events = bw, .data.u64 = TAG(TAG_BACKEND) | (uint64_t)conn_index(c->id)};
            epoll_ctl(L.ep, EPOLL_CTL_MOD, c->bfd, &e);
            c->bev = bw;
        }
    }
}

/* ---- teardown ----------------------------------------------------------------------------- */

static void close_backend(lconn *c) {
    if (c->bfd < 0) return;
    close(c->bfd);
    c->bfd = -1;
    c->bev = 0;
    L.relays--;
    c->forwarding = 0;
    c->bconnecting = 0;
    free(c->bout);
    c->bout = NULL;
    c->bout_len = c->bout_sent = 0;
    c->slen = c->soff = 0;
}

static void teardown(lconn *c, const char *why) {
    if (!c->active) return;
    log_debug("connection %llu closed: %s", (unsigned long long)c->id, why);
    close_backend(c);
    tls_conn_free(c->tls);
    if (c->again) L.nagain--;
    close(c->fd);
    conn_detach(c->id, why);
    while (c->wq) {
        conn_out *n = c->wq->next;
        conn_out_done(c->id, c->wq, 0, why);
        c->wq = n;
    }
    free(c->rbuf);
    free(c->sbuf);
    if (c->reserved) conn_inbound_release(c->reserved);
    free(c->msg);
    if (c->st == ST_WS) atomic_fetch_sub(&L.websockets, 1);
    client_ws_release(c->cl);
    atomic_fetch_sub(&L.conns, 1);
    uint64_t id = c->id;
    int opened = c->opened_ev;
    memset(c, 0, sizeof *c);
    if (opened) {
        conn_event *e = calloc(1, sizeof *e);
        if (e) {
            e->type = CONN_EV_CLOSED;
            if (conn_deliver(id, e)) handler_pool_schedule(id);
            return;
        }
    }
    conn_release(id);
}

/* ---- HTTP answers of the loop's own ------------------------------------------------------- */

static const char *status_text(int st) {
    switch (st) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* Queues raw bytes for the client (an HTTP head of the loop's own); -1 (and the connection torn
 * down) when out of memory. */
static int queue_raw(lconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int queue_raw(lconn *c, const char *fmt, ...) {
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        teardown(c, "out of memory");
        return -1;
    }
    conn_send_raw(c->id, text, (size_t)n);
    return 0;
}

/* Queues an HTTP error with a JSON {"detail": ...} body and closes once it is written. */
static void respond(lconn *c, int status, const char *detail, const char *extra_headers) {
    json_t *o = json_pack("{s:s}", "detail", detail);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    /* HEAD gets the same head, without the body (RFC 9110 9.3.2). */
    queue_raw(c,
              "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
              "%sConnection: close\r\n%s\r\n%s",
              status, status_text(status), body ? strlen(body) : 0, c->cors, extra_headers ? extra_headers : "",
              c->req_head || !body ? "" : body);
    free(body);
    c->close_after_flush = 1;
    c->st = ST_HTTP;
}

/* ---- output --------------------------------------------------------------------------------- */

/* Bookkeeping after w bytes of an item of `kind` went out: it is now begun (continued first). */
static void wrote(lconn *c, out_kind kind, ssize_t w) {
    c->writing = kind;
    metrics_bytes_sent((size_t)w);
    c->last_tx = now_mono();
}

/* Writes what the connection has queued until the socket is full. Returns -1 after teardown. */
static int flush_client(lconn *c) {
    pull_output(c); /* e.g. an answer or close frame the loop itself just queued */
    c->write_wants_read = 0;
    for (;;) {
        ssize_t w;
        /* An item whose write has begun, or was refused with EAGAIN, is continued before any
         * other: bytes of two items never interleave, and TLS requires a refused write to be
         * retried with the same bytes (OpenSSL may already hold them as a half-sent record). */
        out_kind kind = c->writing;
        if (!kind) {
            /* Never put a control frame of ours before an HTTP response (the 101) still queued
             * ahead of it. */
            if (c->wq && c->wq->opcode < 0) kind = OUT_FRAME;
            else if (c->nctl) kind = OUT_CTL;
            else if (c->wq) kind = OUT_FRAME;
            else if (c->st == ST_HTTP && c->slen > c->soff) kind = OUT_RELAY;
            else break;
        }
        /* Over TLS a refused write binds the next one; on a plain socket only bytes already
         * sent do (so a pong may still go ahead of a large result that has not started). */
        if (c->tls) c->writing = kind;
        if (kind == OUT_CTL) {
            ctl_frame *f = &c->ctl[0];
            w = client_send(c, f->b + f->sent, f->len - f->sent);
            if (w < 0) goto error;
            wrote(c, kind, w);
            f->sent += (size_t)w;
            if (f->sent == f->len) {
                memmove(c->ctl, c->ctl + 1, (size_t)(--c->nctl) * sizeof *c->ctl);
                c->writing = OUT_NONE;
            }
            continue;
        }
        if (kind == OUT_FRAME) {
            conn_out *o = c->wq;
            struct iovec iov[2];
            int n = 0;
            if (o->sent < o->hlen) iov[n++] = (struct iovec){o->hdr + o->sent, o->hlen - o->sent};
            size_t dsent = o->sent > o->hlen ? o->sent - o->hlen : 0;
            if (dsent < o->len) iov[n++] = (struct iovec){o->data + dsent, o->len - dsent};
            if (n) {
                w = client_sendv(c, iov, n);
                if (w < 0) goto error;
                wrote(c, kind, w);
                c->last_data_tx = c->last_tx;
                o->sent += (size_t)w;
            }
            if (o->sent < o->hlen + o->len) continue;
            c->writing = OUT_NONE;
            c->wq = o->next;
            if (!c->wq) c->wq_tail = NULL;
            int was_close = o->opcode == WS_OP_CLOSE;
            conn_out_done(c->id, o, 1, NULL);
            if (was_close) {
                c->close_sent = 1;
                c->close_sent_at = now_mono();
                if (c->close_recv || c->refusing == 2) c->close_after_flush = 1;
            }
            continue;
        }
        /* OUT_RELAY: the backend's response bytes (more may be appended meanwhile: a retry
         * then offers the same bytes and more, which TLS allows) */
        w = client_send(c, c->sbuf + c->soff, c->slen - c->soff);
        if (w < 0) goto error;
        wrote(c, kind, w);
        c->soff += (size_t)w;
        if (c->soff == c->slen) {
            c->soff = c->slen = 0;
            c->writing = OUT_NONE;
        }
    }
    if (c->close_after_flush && !has_output(c)) {
        teardown(c, "closed after its last message");
        return -1;
    }
    return 0;
error:
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        c->write_wants_read = c->tls && !tls_wants_write(c->tls);
        return 0;
    }
    if (errno == EINTR) return flush_client(c);
    teardown(c, errno == EPIPE || errno == ECONNRESET ? "peer went away" : strerror(errno));
    return -1;
}

static void queue_ctl(lconn *c, int opcode, const uint8_t *payload, size_t len) {
    if (c->nctl == 4) return; /* a peer flooding pings gets the first four answered */
    ctl_frame *f = &c->ctl[c->nctl++];
    size_t h = ws_frame_server_header(f->b, opcode, len);
    memcpy(f->b + h, payload, len);
    f->len = h + len;
    f->sent = 0;
}

/* ---- WebSocket ------------------------------------------------------------------------------ */

/* Fails the connection (RFC 6455 7.1.7): close frame with code, then TCP close once written. */
static void ws_fail(lconn *c, int code, const char *why) {
    log_info("connection %llu: WebSocket failed (%d): %s", (unsigned long long)c->id, code, why);
    conn_close(c->id, code, why);
    c->refusing = 2;
    c->close_sent_at = now_mono(); /* the close timeout runs from here */
    c->paused = 1; /* read nothing more: the stream can no longer be trusted */
    if (c->close_sent) c->close_after_flush = 1;
}

/* Refuses an oversized message: error message + close 1009; the rest of the frame is skipped
 * while the peer gets the chance to read both and answer the close. */
static void ws_too_big(lconn *c) {
    char text[200];
    snprintf(text, sizeof text, "Message too large: the limit is %zu MB (--max-message-mb)", L.cfg.max_message >> 20);
    char *m = msg_error(text);
    if (m) conn_send_text(c->id, m, strlen(m));
    free(m);
    conn_close(c->id, WS_CLOSE_TOO_BIG, "message too big");
    c->refusing = 1;
    c->close_sent_at = now_mono();
    conn_inbound_release(c->reserved);
    c->reserved = 0;
    free(c->msg);
    c->msg = NULL;
    c->mlen = c->mcap = 0;
    c->mop = 0;
}

/* Tells the client, in-band, why one of its messages was not processed (the socket stays). */
static void send_loop_error(lconn *c, const char *text) {
    char *m = msg_error(text);
    if (m) conn_send_text(c->id, m, strlen(m));
    free(m);
}

static void handle_control(lconn *c) {
    size_t n = (size_t)c->fh.payload_len;
    switch (c->fh.opcode) {
    case WS_OP_PING: queue_ctl(c, WS_OP_PONG, c->ctlbuf, n); break;
    case WS_OP_PONG: c->ping_out = 0; break;
    case WS_OP_CLOSE: {
        int code, fail;
        if (ws_close_payload_check(c->ctlbuf, n, &code, &fail)) {
            ws_fail(c, fail, fail == WS_CLOSE_INVALID_DATA ? "close reason is not UTF-8" : "invalid close code");
            return;
        }
        c->close_recv = 1;
        /* Echo the peer's code (nothing queued yet) and close TCP once our close is out. */
        conn_close(c->id, code == 1005 ? WS_CLOSE_NORMAL : code, "");
        c->close_after_flush = 1;
        break;
    }
    }
}

/* Makes room in the message buffer for up to `want` more bytes (growing gradually, so a frame
 * header announcing many megabytes allocates only as the bytes really arrive). */
static int msg_reserve(lconn *c, size_t want) {
    if (want > MSG_CHUNK) want = MSG_CHUNK;
    if (c->mcap - c->mlen >= want) return 0;
    size_t cap = c->mcap ? c->mcap : 4096;
    while (cap - c->mlen < want) cap *= 2;
    uint8_t *g = realloc(c->msg, cap);
    if (!g) return -1;
    c->msg = g;
    c->mcap = cap;
    return 0;
}

/* A frame's payload is complete. Returns -1 when the connection was torn down. */
static int ws_frame_complete(lconn *c) {
    c->in_frame = 0;
    if (c->fh.opcode >= WS_OP_CLOSE) {
        handle_control(c);
        return 0;
    }
    if (c->dropping) { /* a message refused by the rate limit ends with its last frame */
        if (c->fh.fin) c->dropping = 0, c->mop = 0;
        return 0;
    }
    if (c->discard || c->refusing) return 0;
    if (!c->fh.fin) return 0;
    if (c->mop == WS_OP_TEXT && !utf8_valid(c->msg, c->mlen)) {
        ws_fail(c, WS_CLOSE_INVALID_DATA, "text message is not valid UTF-8");
        return 0;
    }
    conn_event *e = calloc(1, sizeof *e);
    if (!e) {
        teardown(c, "out of memory");
        return -1;
    }
    e->type = CONN_EV_MESSAGE;
    e->opcode = c->mop;
    e->data = c->msg ? c->msg : malloc(1);
    e->len = c->mlen;
    e->cost = c->reserved; /* returned to the budget when the handler frees the event */
    c->reserved = 0;
    c->msg = NULL;
    c->mlen = c->mcap = 0;
    c->mop = 0;
    c->paused = 1; /* one message at a time per connection: resumed when it has been handled */
    if (conn_deliver(c->id, e)) handler_pool_schedule(c->id);
    return 0;
}

/* Consumes n bytes at the start of rbuf. */
static void rbuf_consume(lconn *c, size_t n) {
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

/* Parses frames out of rbuf until it is empty, the connection pauses or fails. */
static int ws_process(lconn *c) {
    size_t pos = 0;
    while (!c->paused && !c->close_recv && !c->starved && c->active) {
        uint8_t *p = c->rbuf + pos;
        size_t avail = c->rlen - pos;
        if (!c->in_frame) {
            int code;
            const char *why;
            int hr = ws_frame_parse_header(p, avail, &c->fh, &code, &why);
            if (hr == 0) break;
            if (hr < 0) {
                ws_fail(c, code, why);
                break;
            }
            pos += c->fh.header_len;
            c->in_frame = 1;
            c->frame_done = 0;
            c->discard = 0;
            int op = c->fh.opcode;
            if (op < WS_OP_CLOSE) {
                double now = now_mono();
                if (c->refusing || c->dropping) {
                    c->discard = 1;
                } else if (op != WS_OP_CONTINUATION && c->mop == 0 && !client_take_message(c->cl, now)) {
                    char m[200];
                    snprintf(m, sizeof m, "Too many messages: at most %.0f per second from one address "
                                          "(--client-msg-rate); this message was not processed", client_limits()->msg_rate);
                    send_loop_error(c, m);
                    c->dropping = 1;
                    c->mop = op;
                    c->discard = 1;
                } else if (op == WS_OP_CONTINUATION ? c->mop == 0 : c->mop != 0) {
                    ws_fail(c, WS_CLOSE_PROTOCOL_ERROR,
                            op == WS_OP_CONTINUATION ? "continuation frame without a message" : "new message inside a fragmented one");
                    break;
                } else if (c->mlen + c->fh.payload_len > L.cfg.max_message) {
                    ws_too_big(c);
                    c->discard = 1;
                } else {
                    if (op != WS_OP_CONTINUATION) c->mop = op;
                    /* The payload's memory is reserved before any of it is read. */
                    if (!conn_inbound_reserve((size_t)c->fh.payload_len, L.cfg.max_inbound)) {
                        c->starved = 1; /* the sweep retries as handlers free messages */
                        c->want = (size_t)c->fh.payload_len;
                        break;
                    }
                    c->reserved += (size_t)c->fh.payload_len;
                    double wait = client_take_bytes(c->cl, (size_t)c->fh.payload_len, now);
                    if (wait > 0) { /* over the byte rate: stop reading the socket for a while */
                        c->throttled = 1;
                        c->throttle_until = now + wait;
                    }
                }
            }
            if (c->fh.payload_len == 0) {
                if (ws_frame_complete(c) < 0) return -1;
                continue;
            }
            continue;
        }
        if (!avail) break;
        uint64_t left = c->fh.payload_len - c->frame_done;
        size_t take = avail < left ? avail : (size_t)left;
        if (c->fh.opcode >= WS_OP_CLOSE) {
            memcpy(c->ctlbuf + c->frame_done, p, take);
            ws_frame_unmask(c->ctlbuf + c->frame_done, take, c->fh.mask, c->frame_done);
        } else if (!c->discard) {
            if (msg_reserve(c, take)) {
                teardown(c, "out of memory");
                return -1;
            }
            memcpy(c->msg + c->mlen, p, take);
            ws_frame_unmask(c->msg + c->mlen, take, c->fh.mask, c->frame_done);
            c->mlen += take;
        }
        pos += take;
        c->frame_done += take;
        if (c->frame_done == c->fh.payload_len && ws_frame_complete(c) < 0) return -1;
    }
    if (c->active) rbuf_consume(c, pos);
    return 0;
}

/* Reads a large data frame's payload straight into the message buffer (one copy). Returns the
 * bytes read, 0 on EOF, -1 on EAGAIN/error (errno). */
static ssize_t ws_read_payload(lconn *c) {
    uint64_t left = c->fh.payload_len - c->frame_done;
    if (c->discard) {
        uint8_t sink[65536];
        ssize_t r = client_read(c, sink, left < sizeof sink ? (size_t)left : sizeof sink);
        if (r > 0) {
            c->frame_done += (uint64_t)r;
            if (c->frame_done == c->fh.payload_len) ws_frame_complete(c);
        }
        return r;
    }
    if (msg_reserve(c, left < MSG_CHUNK ? (size_t)left : MSG_CHUNK)) {
        errno = ENOMEM;
        return -1;
    }
    size_t room = c->mcap - c->mlen;
    ssize_t r = client_read(c, c->msg + c->mlen, left < room ? (size_t)left : room);
    if (r > 0) {
        ws_frame_unmask(c->msg + c->mlen, (size_t)r, c->fh.mask, c->frame_done);
        c->mlen += (size_t)r;
        c->frame_done += (uint64_t)r;
        if (c->frame_done == c->fh.payload_len) ws_frame_complete(c);
    }
    return r;
}

/* ---- HTTP: routing, upgrade, relay ------------------------------------------------------- */

static int valid_key(const char *k, size_t n) {
    if (n != 24 || k[22] != '=' || k[23] != '=') return 0;
    for (size_t i = 0; i < 22; i++)
        if (!((k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '+' || k[i] == '/'))
            return 0;
    return 1;
}

/* Answers the upgrade and turns the connection into a WebSocket. */
static void ws_upgrade(lconn *c, const http_head *h) {
    size_t klen;
    const char *key = http_head_get(h, "Sec-WebSocket-Key", &klen);
    size_t vlen;
    const char *ver = http_head_get(h, "Sec-WebSocket-Version", &vlen);
    if (!http_head_method_is(h, "GET") || h->minor_version < 1) {
        respond(c, 400, "a WebSocket upgrade must be an HTTP/1.1 GET", NULL);
        return;
    }
    if (!http_head_has_token(h, "Connection", "upgrade")) {
        respond(c, 400, "a WebSocket upgrade needs 'Connection: Upgrade'", NULL);
        return;
    }
    if (!ver || vlen != 2 || memcmp(ver, "13", 2)) {
        respond(c, 426, "only WebSocket version 13 is supported", "Sec-WebSocket-Version: 13\r\n");
        return;
    }
    if (!key || !valid_key(key, klen)) {
        respond(c, 400, "missing or malformed Sec-WebSocket-Key", NULL);
        return;
    }
    if (atomic_load(&L.websockets) >= L.cfg.max_websockets) {
        char d[200];
        snprintf(d, sizeof d, "server at capacity (%d WebSockets); retry later", L.cfg.max_websockets);
        log_warn("WebSocket refused: %s", d);
        respond(c, 503, d, "Retry-After: 5\r\n");
        return;
    }
    client_entry *cl = client_ws_acquire(c->client);
    if (!cl) {
        char d[200];
        snprintf(d, sizeof d, "too many WebSockets from your address (%d; --max-ws-per-client); close one first",
                 client_limits()->max_websockets);
        respond(c, 429, d, "Retry-After: 5\r\n");
        return;
    }
    c->cl = cl; /* released by teardown, whatever happens next */
    char target[1024];
    size_t tl = h->target_len < sizeof target - 1 ? h->target_len : sizeof target - 1;
    memcpy(target, h->target, tl);
    target[tl] = 0;
    uint8_t cat[64], digest[SHA_DIGEST_LENGTH];
    memcpy(cat, key, 24);
    memcpy(cat + 24, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    SHA1(cat, 60, digest);
    char accept[32];
    accept[b64_encode(digest, sizeof digest, accept)] = 0;
    if (queue_raw(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept))
        return;
    pull_output(c); /* the 101 is first on the write list, before any frame */
    rbuf_consume(c, h->head_len);
    c->st = ST_WS;
    atomic_fetch_add(&L.websockets, 1);
    metrics_websocket_opened();
    c->last_rx = now_mono();
    conn_event *e = calloc(1, sizeof *e);
    char *t = strdup(target);
    if (!e || !t) {
        free(e);
        free(t);
        teardown(c, "out of memory");
        return;
    }
    e->type = CONN_EV_OPEN;
    e->who = c->who;
    snprintf(e->client, sizeof e->client, "%s", c->client);
    e->data = (uint8_t *)t;
    e->len = strlen(t);
    c->opened_ev = 1;
    if (conn_deliver(c->id, e)) handler_pool_schedule(c->id);
}

static int connect_backend(lconn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)L.cfg.backend_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->bfd = fd;
    c->bconnecting = 1;
    c->bev = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.u64 = TAG(TAG_BACKEND) | (uint64_t)conn_index(c->id)};
    if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &e)) {
        close(fd);
        c->bfd = -1;
        return -1;
    }
    L.relays++;
    return 0;
}

/* The request head for CivetWeb: the client's, with its Connection/Keep-Alive headers replaced
 * by "Connection: close" (so the end of each response is the backend closing; the loop keeps the
 * client's connection alive itself) and the client's address added. */
static char *backend_head(const lconn *c, const http_head *h, size_t *len) {
    size_t cap = h->head_len + 512;
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t n = (size_t)snprintf(out, cap, "%.*s %.*s HTTP/1.1\r\n", (int)h->method_len, h->method,
                                (int)h->target_len, h->target);
    for (int i = 0; i < h->num_headers; i++) {
        const http_header *f = &h->headers[i];
        /* X-DA3-* are ours: a client's copy would claim another identity. */
        if ((f->name_len == 10 && !strncasecmp(f->name, "Connection", 10)) ||
            (f->name_len == 10 && !strncasecmp(f->name, "Keep-Alive", 10)) ||
            (f->name_len == 15 && !strncasecmp(f->name, "X-Forwarded-For", 15)) ||
            (f->name_len >= 6 && !strncasecmp(f->name, "X-DA3-", 6)))
            continue;
        n += (size_t)snprintf(out + n, cap - n, "%.*s: %.*s\r\n", (int)f->name_len, f->name,
                              (int)f->value_len, f->value);
    }
    char ip[64] = "";
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (!getpeername(c->fd, (struct sockaddr *)&ss, &sl)) {
        if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof ip);
        else if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof ip);
    }
    n += (size_t)snprintf(out + n, cap - n,
                          "X-Forwarded-For: %s\r\n" HTTP_API_FRONT_HEADER ": %s\r\n" HTTP_API_IDENTITY_HEADER
                          ": %s\r\n" HTTP_API_ROLE_HEADER ": %s\r\n" HTTP_API_CLIENT_HEADER
                          ": %s\r\nConnection: close\r\n\r\n",
                          ip[0] ? ip : "unknown", L.cfg.front_secret, c->who.name,
                          c->who.role == API_ROLE_ADMIN ? "admin" : "user", c->client);
    *len = n;
    return out;
}

static int method_allowed(const http_head *h) {
    static const char *const ok[] = {"GET", "HEAD", "POST", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (http_head_method_is(h, ok[i])) return 1;
    return 0;
}

/* The request needs an API key (when keys are configured): the API and the WebSocket, not the
 * page's static files (the page must load to ask for a key), the probes, or a CORS preflight
 * (browsers send those without credentials). */
static int needs_key(const http_head *h) {
    if (http_head_method_is(h, "OPTIONS")) return 0;
    size_t n = h->target_len;
    const char *q = memchr(h->target, '?', n);
    if (q) n = (size_t)(q - h->target);
    const char *t = h->target;
    return (n >= 4 && !memcmp(t, "/ws/", 4)) || (n == 7 && !memcmp(t, "/status", 7)) ||
           (n == 8 && !memcmp(t, "/metrics", 8));
}

/* The key a request presents: "Authorization: Bearer KEY", or for a WebSocket upgrade (browsers
 * cannot set headers on one) a "token=KEY" query parameter. NULL when there is none. */
static const char *presented_key(const http_head *h, int upgrade, size_t *len) {
    size_t al;
    const char *a = http_head_get(h, "Authorization", &al);
    if (a && al > 7 && !strncasecmp(a, "Bearer ", 7)) {
        *len = al - 7;
        return a + 7;
    }
    const char *q = upgrade ? memchr(h->target, '?', h->target_len) : NULL;
    const char *end = h->target + h->target_len;
    for (const char *p = q; p && p < end;) {
        p++;
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop - p > 6 && !memcmp(p, "token=", 6)) {
            *len = (size_t)(stop - p - 6);
            return p + 6;
        }
        p = amp;
    }
    return NULL;
}

/* The client's address key (client_limits.h): the proxy's word with --trust-proxy, else the
 * TCP peer. */
static void client_address(lconn *c, const http_head *h) {
    size_t n;
    const char *v;
    if (L.cfg.trust_proxy) {
        if ((v = http_head_get(h, "X-Real-IP", &n)) && client_address_parse(v, n, c->client) == 0) return;
        /* The last X-Forwarded-For line: a proxy that appends its own line (rather than extending
         * the client's) puts the one it vouches for last. */
        for (int i = h->num_headers - 1; i >= 0; i--) {
            const http_header *x = &h->headers[i];
            if (x->name_len == 15 && !strncasecmp(x->name, "X-Forwarded-For", 15)) {
                if (client_address_forwarded(x->value, x->value_len, c->client) == 0) return;
                break;
            }
        }
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl)) snprintf(c->client, sizeof c->client, "unknown");
    else client_address_of_peer((struct sockaddr *)&ss, c->client);
}

static int admit(lconn *c, const http_head *h, int upgrade) {
    client_address(c, h);
    size_t ol = 0, hl = 0;
    const char *origin = http_head_get(h, "Origin", &ol), *host = http_head_get(h, "Host", &hl);
    cors_headers(c->cors, sizeof c->cors, origin, ol, host, hl);
    memset(&c->who, 0, sizeof c->who);
    /* Before the key check: a flood of unauthenticated requests is limited too. */
    double wait = c->prepaid ? 0 : client_take_request(c->client, now_mono());
    c->prepaid = 0;
    if (wait > 0) {
        char retry[40];
        snprintf(retry, sizeof retry, "Retry-After: %d\r\n", (int)wait + 1);
        respond(c, 429, "Too many requests from your address; slow down (--client-http-rate)", retry);
        return -1;
    }
    /* A WebSocket has no preflight: a page from a foreign origin is refused at the upgrade. */
    if (upgrade && !cors_allowed(origin, ol, host, hl)) {
        respond(c, 403, "this origin may not open WebSockets here (see --cors-origins)", NULL);
        return -1;
    }
    if (!api_keys_enabled() || !needs_key(h)) return 0;
    size_t kl = 0;
    const char *key = presented_key(h, upgrade, &kl);
    if (!key) {
        respond(c, 401, upgrade ? "an API key is required: add ?token=KEY to the WebSocket URL or send "
                                  "'Authorization: Bearer KEY'"
                                : "an API key is required: send 'Authorization: Bearer KEY'",
                "WWW-Authenticate: Bearer\r\n");
        return -1;
    }
    if (!api_keys_check(key, kl, &c->who)) {
        respond(c, 401, "invalid API key", "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n");
        return -1;
    }
    return 0;
}

/* Decides what one complete request head gets. */
static void route(lconn *c, const http_head *h) {
    c->req_head = http_head_method_is(h, "HEAD");
    c->req_close = h->minor_version == 0 || http_head_has_token(h, "Connection", "close");
    cors_headers(c->cors, sizeof c->cors, NULL, 0, NULL, 0);
    if (!method_allowed(h)) {
        char allow[64];
        snprintf(allow, sizeof allow, "Allow: %s\r\n", ALLOW);
        respond(c, 405, "Method Not Allowed", allow);
        return;
    }
    if (http_head_get(h, "Transfer-Encoding", NULL)) {
        respond(c, 411, "chunked request bodies are not accepted; send a Content-Length", NULL);
        return;
    }
    size_t cl_len;
    const char *cl = http_head_get(h, "Content-Length", &cl_len);
    uint64_t body = 0;
    if (cl) {
        if (!cl_len || cl_len > 18) {
            respond(c, 400, "malformed Content-Length", NULL);
            return;
        }
        for (size_t i = 0; i < cl_len; i++) {
            if (cl[i] < '0' || cl[i] > '9') {
                respond(c, 400, "malformed Content-Length", NULL);
                return;
            }
            body = body * 10 + (uint64_t)(cl[i] - '0');
        }
        if (body > L.cfg.max_http_body) {
            char d[128];
            snprintf(d, sizeof d, "request body too large (limit %zu bytes)", L.cfg.max_http_body);
            respond(c, 413, d, NULL);
            return;
        }
    }
    int upgrade = http_head_has_token(h, "Upgrade", "websocket");
    if (admit(c, h, upgrade)) return;
    if (upgrade) {
        size_t pl = strlen(L.cfg.ws_prefix);
        /* Heads are only parsed between requests (the previous response fully written), so an
         * upgrade may come on a reused keep-alive connection, as nginx's upstream pool sends it. */
        /* The prefix itself (v2), or followed by '/' (v1: /ws/reconstruct/{id}) or a query. */
        if (h->target_len < pl || memcmp(h->target, L.cfg.ws_prefix, pl) ||
            (h->target_len > pl && h->target[pl] != '/' && h->target[pl] != '?'))
            respond(c, 404, "Not Found", NULL);
        else ws_upgrade(c, h);
        return;
    }
    if (L.relays >= L.cfg.max_relays) {
        char d[160];
        snprintf(d, sizeof d, "server busy (%d HTTP requests in progress); retry later", L.cfg.max_relays);
        respond(c, 503, d, "Retry-After: 1\r\n");
        return;
    }
    size_t blen;
    char *bh = backend_head(c, h, &blen);
    /* A body is collected whole before CivetWeb is contacted, so a client trickling its body
     * holds a buffer (bounded by max_http_body and the deadline), never a CivetWeb thread. */
    if (bh && body) {
        size_t need = h->head_len + body + RBUF_CAP;
        if (need > c->rcap) {
            uint8_t *g = realloc(c->rbuf, need);
            if (!g) {
                free(bh);
                respond(c, 503, "out of memory", NULL);
                return;
            }
            c->rbuf = g;
            c->rcap = need;
        }
    }
    if (!bh || (!body && connect_backend(c))) {
        free(bh);
        respond(c, 503, "cannot reach the HTTP handlers", NULL);
        return;
    }
    c->connect_pending = body > 0;
    c->requests++;
    c->forwarding = 1;
    c->bout = bh;
    c->bout_len = blen;
    c->bout_sent = 0;
    c->body_left = body;
    /* The whole body within the request timeout, plus a second per 64 KB: a trickled body
     * holds a CivetWeb thread, so it cannot be allowed to take forever. */
    c->body_deadline = now_mono() + L.cfg.request_timeout + (double)body / 65536.0;
    c->resp_seen = c->resp_framed = 0;
    c->b_eof = 0;
    rbuf_consume(c, h->head_len);
    c->wait_since = 0;
}

/* Moves the request's body bytes that have arrived into the "ready for the backend" span. */
static void http_take_body(lconn *c) {
    size_t avail = c->rlen - c->body_ready;
    size_t take = avail < c->body_left ? avail : (size_t)c->body_left;
    c->body_ready += take;
    c->body_left -= take;
    if (c->connect_pending && c->body_left == 0) {
        c->connect_pending = 0;
        if (connect_backend(c)) {
            c->forwarding = 0;
            respond(c, 503, "cannot reach the HTTP handlers", NULL);
        }
    }
}

/* Parses and routes the next request head when the connection is between requests. */
static void http_process(lconn *c) {
    if (c->forwarding) {
        http_take_body(c);
        return;
    }
    if (!c->rlen || c->close_after_flush) return;
    http_head h;
    int status;
    const char *why;
    int rc = http_head_parse((const char *)c->rbuf, c->rlen, &h, &status, &why);
    if (rc == 0) return;
    if (rc < 0) {
        respond(c, status, why, NULL);
        return;
    }
    route(c, &h);
    if (c->active && c->st == ST_WS) ws_process(c);
    else if (c->active && c->forwarding) http_take_body(c);
}

/* Looks at the start of the backend's response: does it carry its own length (so the client's
 * connection can stay open for another request)? */
static void inspect_response(lconn *c) {
    if (c->resp_seen || c->slen < 12) return;
    const char *b = (const char *)c->sbuf;
    size_t n = c->slen;
    const char *end = NULL;
    for (size_t i = 0; i + 3 < n; i++)
        if (!memcmp(b + i, "\r\n\r\n", 4)) {
            end = b + i;
            break;
        }
    if (!end) return;
    c->resp_seen = 1;
    int status = atoi(b + 9);
    int framed = c->req_head || status == 204 || status == 304;
    for (const char *p = b; p < end && !framed; p++) {
        if (*p != '\n') continue;
        if (!strncasecmp(p + 1, "Content-Length:", 15)) framed = 1;
        if (!strncasecmp(p + 1, "Transfer-Encoding:", 18)) framed = 1;
    }
    c->resp_framed = framed;
}

static void backend_event(lconn *c, uint32_t events) {
    if (c->bconnecting) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->bfd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (events & EPOLLERR)) {
            close_backend(c);
            respond(c, 503, "cannot reach the HTTP handlers", NULL);
            return;
        }
        c->bconnecting = 0;
    }
    /* client -> backend: the rewritten head, then body bytes as they arrive */
    while (c->bout_sent < c->bout_len) {
        ssize_t w = send(c->bfd, c->bout + c->bout_sent, c->bout_len - c->bout_sent, MSG_NOSIGNAL);
        if (w < 0) break;
        c->bout_sent += (size_t)w;
    }
    if (c->bout_sent == c->bout_len && c->body_ready) {
        ssize_t w = send(c->bfd, c->rbuf, c->body_ready, MSG_NOSIGNAL);
        if (w > 0) {
            rbuf_consume(c, (size_t)w);
            c->body_ready -= (size_t)w;
            http_take_body(c);
        }
    }
    /* backend -> client */
    if (!c->b_eof && c->slen < SBUF_CAP && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        if (!c->sbuf) c->sbuf = malloc(SBUF_CAP);
        ssize_t r = c->sbuf ? read(c->bfd, c->sbuf + c->slen, SBUF_CAP - c->slen) : -1;
        if (r > 0) {
            c->slen += (size_t)r;
            inspect_response(c);
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->b_eof = 1;
        }
    }
}

/* After the backend finished a response and it has all been written to the client: the next
 * request may come on the same connection, or the connection ends. */
static void http_response_done(lconn *c) {
    if (!c->b_eof || c->slen > c->soff || c->bfd < 0) return;
    int keep = c->resp_framed && !c->req_close && !c->c_eof && c->body_left == 0;
    close_backend(c);
    if (!keep) {
        c->close_after_flush = 1;
        return;
    }
    c->wait_since = now_mono();
    if (c->rcap > RBUF_CAP && c->rlen <= RBUF_CAP) { /* give a collected body's buffer back */
        uint8_t *g = realloc(c->rbuf, RBUF_CAP);
        if (g) c->rbuf = g, c->rcap = RBUF_CAP;
    }
    http_process(c);
}

/* ---- the loop ------------------------------------------------------------------------------ */

static void client_readable(lconn *c) {
    for (int rounds = 0; rounds < 16 && c->active; rounds++) {
        ssize_t r;
        if (c->starved) return;
        if (c->st == ST_WS && c->in_frame && c->fh.opcode < WS_OP_CLOSE && c->rlen == 0 && !c->paused) {
            r = ws_read_payload(c);
        } else {
            if (c->st == ST_WS && (c->paused || c->close_recv)) return;
            if (!c->rbuf) c->rbuf = malloc(c->rcap = RBUF_CAP);
            if (c->rbuf && c->rlen >= c->rcap) return;
            if (!c->rbuf) {
                teardown(c, "out of memory");
                return;
            }
            r = client_read(c, c->rbuf + c->rlen, c->rcap - c->rlen);
            if (r > 0) c->rlen += (size_t)r;
        }
        if (r == 0) {
            c->c_eof = 1;
            if (c->st == ST_WS) teardown(c, "peer closed the TCP connection");
            else if (!c->forwarding) teardown(c, "peer closed");
            return;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            teardown(c, errno == ENOMEM ? "out of memory" : "read error");
            return;
        }
        metrics_bytes_received((size_t)r);
        if (!c->active) return;
        c->last_rx = now_mono();
        c->ping_out = 0; /* anything from the peer proves it alive: the ping clock restarts */
        if (c->st == ST_WS) ws_process(c);
        else http_process(c);
        if ((size_t)r < 4096) return; /* the socket is probably drained: don't spin on it */
    }
}

/* Advances a TLS handshake; once done, what the client sent with it is read at once. */
static void client_handshake(lconn *c, uint32_t *events) {
    char why[240];
    int rc = tls_handshake(c->tls, why, sizeof why);
    if (rc < 0) {
        metrics_tls_handshake(0);
        log_debug("connection %llu: %s", (unsigned long long)c->id, why);
        teardown(c, why);
        return;
    }
    if (rc == 1) {
        metrics_tls_handshake(1);
        c->handshaking = 0;
        c->wait_since = now_mono(); /* the request head gets its own --request-timeout */
        *events |= EPOLLIN;
    }
}

/* One readiness event (or a TLS connection with input waiting) on a client socket. */
static void client_event(lconn *c, uint32_t e) {
    if (c->handshaking) {
        client_handshake(c, &e);
        if (!c->active) return;
        if (c->handshaking) {
            set_interest(c);
            return;
        }
    }
    if ((e & EPOLLIN) || (c->read_wants_write && (e & EPOLLOUT))) client_readable(c);
    if (!c->active) return;
    if (c->bfd >= 0 && c->forwarding) backend_event(c, 0);
    if (!c->active) return;
    if (flush_client(c) < 0) return;
    if (c->st == ST_HTTP) http_response_done(c);
    if (c->active) set_interest(c);
}

static void accept_all(int lfd) {
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int prepaid = 0;
        int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno == EMFILE || errno == ENFILE) log_warn("accept: %s (raise the open-files limit)", strerror(errno));
            return;
        }
        /* A TLS handshake costs the loop thread far more than a request (a signature): each
         * connection is charged to its address's request bucket before one is made, so one
         * address cannot spend the loop on handshakes. (Behind a proxy every connection is the
         * proxy's: not charged.) */
        if (L.cfg.tls && !L.cfg.trust_proxy) {
            char addr[CLIENT_ADDR_MAX];
            client_address_of_peer((struct sockaddr *)&peer, addr);
            if (client_take_request(addr, now_mono()) > 0) {
                metrics_tls_refused();
                close(fd);
                continue;
            }
            prepaid = 1;
        }
        uint64_t id = atomic_load(&L.stopping) ? 0 : conn_open();
        tls_conn *tls = NULL;
        if (id && L.cfg.tls && !(tls = tls_conn_new(fd))) {
            conn_detach(id, "out of memory");
            conn_release(id);
            id = 0;
        }
        if (!id && L.cfg.tls) { /* a plain-text answer would be noise to a TLS client */
            close(fd);
            continue;
        }
        if (!id) {
            static const char full[] =
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 56\r\n"
                "Retry-After: 5\r\nConnection: close\r\n\r\n{\"detail\":\"server at capacity (connections); retry later\"}";
            if (send(fd, full, sizeof full - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* best effort: the peer is refused either way */
            }
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        lconn *c = &L.c[conn_index(id)];
        memset(c, 0, sizeof *c);
        c->active = 1;
        c->id = id;
        c->fd = fd;
        c->bfd = -1;
        c->st = ST_HTTP;
        c->last_rx = c->last_tx = c->wait_since = now_mono();
        c->ev = EPOLLIN;
        c->rcap = RBUF_CAP;
        c->tls = tls;
        c->handshaking = tls != NULL;
        c->prepaid = prepaid;
        atomic_fetch_add(&L.conns, 1);
        struct epoll_event e = {.events = EPOLLIN, .data.u64 = TAG(TAG_CLIENT) | (uint64_t)conn_index(id)};
        if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &e)) teardown(c, "epoll");
    }
}

/* Moves what was queued for the connection (by other threads, or by the loop itself through
 * conn.h) onto its write list; a handler's request to resume reading is kept in resume_wanted. */
static int pull_output(lconn *c) {
    int resume;
    conn_out *o = conn_take_out(c->id, &resume);
    if (resume) c->resume_wanted = 1;
    if (o) {
        if (!c->wq) c->last_tx = now_mono(); /* the stall clock starts with pending output */
        if (c->wq_tail) c->wq_tail->next = o;
        else c->wq = o;
        while (o->next) o = o->next;
        c->wq_tail = o;
    }
    return c->resume_wanted;
}

/* Takes new output, close requests and resume-reading signals from other threads. */
static void take_work(void) {
    uint64_t ids[256];
    int n;
    while ((n = conn_take_dirty(ids, 256)) > 0) {
        for (int i = 0; i < n; i++) {
            lconn *c = &L.c[conn_index(ids[i])];
            if (!c->active || c->id != ids[i]) continue;
            pull_output(c);
            if (flush_client(c) < 0) continue;
            if (c->resume_wanted && c->st == ST_WS && c->refusing != 2) {
                c->resume_wanted = 0;
                c->paused = 0;
                ws_process(c);
                if (!c->active) continue;
            }
            set_interest(c);
        }
        if (n < 256) break;
    }
}

/* Deadlines, pings and stalls, checked a few times a second over every connection. */
static void sweep(double now) {
    const net_config *k = &L.cfg;
    for (int i = 0; i < k->max_conns; i++) {
        lconn *c = &L.c[i];
        if (!c->active) continue;
        if (c->starved && conn_inbound_reserve(c->want, k->max_inbound)) {
            c->reserved += c->want;
            c->starved = 0;
            c->last_rx = now; /* waiting for the budget is not the peer's silence */
            ws_process(c);     /* payload bytes may already be in rbuf */
            if (!c->active) continue;
            set_interest(c);
        }
        if (c->throttled && now >= c->throttle_until) {
            c->throttled = 0;
            c->last_rx = now; /* held back by us, not silent */
            set_interest(c);
        }
        if (has_output(c) && now - c->last_tx > k->send_timeout) {
            log_warn("connection %llu: dropped, it read nothing for %.0f s (%zu bytes queued); its session is kept",
                     (unsigned long long)c->id, k->send_timeout, conn_out_bytes(c->id));
            teardown(c, "the client stopped reading");
            continue;
        }
        if (c->handshaking) {
            if (now - c->wait_since > k->request_timeout) {
                metrics_tls_handshake(0);
                teardown(c, "TLS handshake not completed in time");
            }
            continue;
        }
        if (c->st == ST_HTTP) {
            if (c->forwarding) {
                if (c->body_left && now > c->body_deadline) teardown(c, "request body not received in time");
                continue;
            }
            if (c->close_after_flush) continue;
            double limit = c->requests && !c->rlen ? k->idle_timeout : k->request_timeout;
            if (now - c->wait_since > limit) {
                if (c->rlen) respond(c, 408, "request head not completed in time", NULL);
                else teardown(c, "idle");
                if (c->active) flush_client(c);
                if (c->active) set_interest(c);
            }
            continue;
        }
        if ((c->close_sent || c->refusing) && now - c->close_sent_at > k->close_timeout) {
            teardown(c, "peer did not answer the close frame");
            continue;
        }
        /* A peer that keeps taking a large result is alive even while its pong waits behind
         * that frame; our own pings' bytes prove nothing. */
        double silent = now - (c->last_rx > c->last_data_tx ? c->last_rx : c->last_data_tx);
        if (c->starved || c->throttled) continue;
        if (!c->paused && silent > k->ping_interval + k->pong_timeout) {
            log_info("connection %llu: dropped, silent for %.0f s (no pong); its session is kept", (unsigned long long)c->id, silent);
            teardown(c, "peer stopped answering pings");
            continue;
        }
        if (!c->paused && silent > k->ping_interval && !c->ping_out) {
            queue_ctl(c, WS_OP_PING, (const uint8_t *)"da3", 3);
            c->ping_out = 1;
            if (flush_client(c) == 0) set_interest(c);
        }
    }
}

static void shutdown_all(void) {
    for (int i = 0; i < L.cfg.max_conns; i++)
        if (L.c[i].active && L.c[i].st == ST_WS) conn_close(L.c[i].id, WS_CLOSE_GOING_AWAY, "server shutting down");
    take_work();
    double until = now_mono() + 1.0;
    struct epoll_event evs[64];
    while (now_mono() < until) {
        int busy = 0;
        for (int i = 0; i < L.cfg.max_conns; i++)
            if (L.c[i].active && L.c[i].st == ST_WS && has_output(&L.c[i])) busy = 1;
        if (!busy) break;
        int n = epoll_wait(L.ep, evs, 64, 50);
        for (int j = 0; j < n; j++) {
            uint64_t tag = evs[j].data.u64 >> 32;
            lconn *c = &L.c[evs[j].data.u64 & 0xffffffffu];
            if (tag == TAG_CLIENT && c->active && (evs[j].events & EPOLLOUT)) flush_client(c);
        }
    }
    for (int i = 0; i < L.cfg.max_conns; i++)
        if (L.c[i].active) teardown(&L.c[i], "server shutting down");
}

static void *loop_thread(void *arg) {
    (void)arg;
    struct epoll_event evs[256];
    double last_sweep = now_mono();
    while (!atomic_load(&L.stopping)) {
        int n = epoll_wait(L.ep, evs, 256, L.nagain ? 0 : 200);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64 >> 32;
            uint32_t idx = (uint32_t)(evs[i].data.u64 & 0xffffffffu);
            uint32_t e = evs[i].events;
            if (tag == TAG_LISTEN) {
                accept_all(L.cfg.listen_fd);
                continue;
            }
            if (tag == TAG_WAKE) {
                take_work();
                continue;
            }
            lconn *c = &L.c[idx];
            if (!c->active) continue;
            if (tag == TAG_BACKEND) {
                if (c->bfd < 0) continue;
                backend_event(c, e);
                if (!c->active) continue;
                if (flush_client(c) < 0) continue;
                http_response_done(c);
                if (!c->active) continue;
                if (flush_client(c) < 0) continue;
                set_interest(c);
                continue;
            }
            if (e & (EPOLLERR | EPOLLHUP)) {
                if (c->handshaking) metrics_tls_handshake(0);
                teardown(c, "connection reset");
                continue;
            }
            client_event(c, e);
        }
        /* TLS input already decrypted inside OpenSSL: no event will announce it. */
        for (int i = 0; L.nagain > 0 && i < L.cfg.max_conns; i++) {
            lconn *c = &L.c[i];
            if (!c->active || !c->again) continue;
            mark_again(c, 0);
            client_event(c, EPOLLIN);
        }
        double now = now_mono();
        if (now - last_sweep > 0.25) {
            sweep(now);
            last_sweep = now;
        }
    }
    shutdown_all();
    return NULL;
}

int net_loop_start(const net_config *cfg) {
    L.cfg = *cfg;
    L.c = calloc((size_t)cfg->max_conns, sizeof *L.c);
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!L.c || L.ep < 0) return -1;
    struct epoll_event le = {.events = EPOLLIN, .data.u64 = TAG(TAG_LISTEN)};
    struct epoll_event we = {.events = EPOLLIN, .data.u64 = TAG(TAG_WAKE)};
    if (epoll_ctl(L.ep, EPOLL_CTL_ADD, cfg->listen_fd, &le) ||
        epoll_ctl(L.ep, EPOLL_CTL_ADD, conn_table_wake_fd(), &we))
        return -1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20); /* ws_read_payload keeps a 64 KB sink on it */
    int rc = pthread_create(&L.thread, &attr, loop_thread, NULL);
    pthread_attr_destroy(&attr);
    if (rc) return -1;
    L.started = 1;
    return 0;
}

void net_loop_stop(void) {
    if (!L.started) return;
    atomic_store(&L.stopping, 1);
    pthread_join(L.thread, NULL);
    close(L.cfg.listen_fd);
    close(L.ep);
    free(L.c);
    L.c = NULL;
    L.started = 0;
}
