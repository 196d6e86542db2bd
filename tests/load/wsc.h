/* The load generator's client side of HTTP/1.1 and RFC 6455 on raw sockets.
 *
 * da3-load does not use CivetWeb's WebSocket client for its own traffic: that client runs one
 * reader thread per connection (measured in docs/load-testing.md: 1,000 idle sockets cost 1,000
 * threads in the load generator), so thousands of sockets would measure the client, not the
 * server. These helpers keep every connection a plain fd plus buffers, driven either by one
 * epoll loop (idle scenario) or by one blocking thread per session (the others). */
#ifndef DA3_LOAD_WSC_H
#define DA3_LOAD_WSC_H

#include <stddef.h>
#include <stdint.h>

#include "common/util.h" /* now_mono */

enum { WS_CONT = 0, WS_TEXT = 1, WS_BINARY = 2, WS_CLOSE = 8, WS_PING = 9, WS_PONG = 10 };

/* What wsc_feed found in the bytes read so far. */
enum { WSE_NONE = 0, WSE_MESSAGE, WSE_PING, WSE_CLOSE, WSE_ERROR };

typedef struct {
    int fd;
    uint8_t *in;          /* bytes read and not yet parsed */
    size_t in_len, in_cap;
    uint8_t *msg;         /* the data message being reassembled (NUL-terminated when complete) */
    size_t msg_len, msg_cap;
    int msg_opcode;       /* WS_TEXT/WS_BINARY of the message in progress, 0 when none */
    uint8_t ctl[126];     /* payload of the last ping/close (control frames are <= 125 bytes) */
    size_t ctl_len;
    uint8_t *out;         /* scratch for building one outgoing frame */
    size_t out_cap;
    uint64_t rng;         /* mask keys and handshake keys (xorshift; not security, RFC asks for unpredictable) */
    uint64_t bytes_in, bytes_out;
    int close_code;       /* from the peer's close frame, 1005 when it carried none */
} wsc;


/* Blocking TCP connection to host:port with send/receive timeouts of timeout_s; fd or -1 (err set). */
int tcp_connect(const char *host, int port, double timeout_s, char *err, size_t errlen);

/* Non-blocking TCP connect started (EINPROGRESS is success); fd or -1. */
int tcp_connect_nb(const char *host, int port, char *err, size_t errlen);

/* One HTTP/1.1 request with Connection: close and an empty body; reads the whole response.
 * Returns 0 with *status and a malloc'd NUL-terminated *body (caller frees), -1 on a transport
 * error (err set). *bytes gets request + response bytes for throughput figures. */
int http_request(const char *host, int port, const char *method, const char *path, double timeout_s,
                 int *status, char **body, uint64_t *bytes, char *err, size_t errlen);

/* Sets up c around a connected fd (buffers empty, rng seeded from seed). */
void wsc_init(wsc *c, int fd, uint64_t seed);

/* Frees c's buffers and closes its fd if still open. */
void wsc_free(wsc *c);

/* Writes the upgrade request for path into buf (cap bytes) and the key it used into key[25];
 * returns its length. */
size_t ws_handshake_request(wsc *c, char *buf, size_t cap, const char *host, int port, const char *path,
                            char key[25]);

/* Checks a 101 response head in c->in against key: returns 1 when complete and valid (the head is
 * consumed, any frames after it stay in c->in), 0 when more bytes are needed, -1 when invalid. */
int ws_handshake_check(wsc *c, const char *key, char *err, size_t errlen);

/* Builds one masked, final client frame in c->out; returns its length (c->out holds it). */
size_t wsc_build(wsc *c, int opcode, const void *payload, size_t len);

/* Parses what c->in holds: returns WSE_MESSAGE (c->msg/msg_len/msg_opcode, valid until the next
 * call), WSE_PING / WSE_CLOSE (c->ctl), WSE_NONE when more bytes are needed, WSE_ERROR on a
 * protocol violation by the server (err set). Pongs are consumed silently. */
int wsc_feed(wsc *c, char *err, size_t errlen);

/* Appends up to want bytes read from c->fd to c->in: >0 bytes read, 0 on EOF, -1 on error
 * (errno; EAGAIN on a non-blocking fd with nothing to read). */
long wsc_read(wsc *c, size_t want);

/* Blocking: connects to host:port and completes the upgrade for path; 0 or -1 (err set). */
int wsc_open(wsc *c, const char *host, int port, const char *path, double timeout_s, uint64_t seed,
             char *err, size_t errlen);

/* Blocking: sends one frame; 0 or -1. */
int wsc_send(wsc *c, int opcode, const void *payload, size_t len);

/* Blocking: receives the next data message, answering pings on the way. Returns 1 (message in
 * c->msg), 0 when the server closed (close frame or EOF; c->close_code), -1 on error/timeout. */
int wsc_recv(wsc *c, char *err, size_t errlen);

/* Blocking: sends close 1000 and waits up to timeout_s for the server's close; closes the fd.
 * Returns 0 when the server answered with a close frame, -1 otherwise. */
int wsc_close(wsc *c, double timeout_s);

#endif
