/* Raw-socket HTTP/1.1 and RFC 6455 client helpers for da3-load (see wsc.h for why raw sockets). */
#include "tests/load/wsc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "common/b64.h"

/* Resolves host:port to an IPv4/IPv6 address (first result); 0 or -1. */
static int resolve(const char *host, int port, struct sockaddr_storage *sa, socklen_t *salen, char *err,
                   size_t errlen) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    int rc = getaddrinfo(host, ports, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *salen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* Sets SO_RCVTIMEO and SO_SNDTIMEO to timeout_s on fd. */
static void set_timeouts(int fd, double timeout_s) {
    struct timeval tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int tcp_connect(const char *host, int port, double timeout_s, char *err, size_t errlen) {
    struct sockaddr_storage sa;
    socklen_t salen;
    if (resolve(host, port, &sa, &salen, err, errlen) < 0) return -1;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* Small request/reply messages: without NODELAY, Nagle + delayed ACK adds ~40 ms to a ping. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_timeouts(fd, timeout_s); /* Linux applies SO_SNDTIMEO to connect() too */
    if (connect(fd, (struct sockaddr *)&sa, salen) < 0) {
        snprintf(err, errlen, "connect %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int tcp_connect_nb(const char *host, int port, char *err, size_t errlen) {
    struct sockaddr_storage sa;
    socklen_t salen;
    if (resolve(host, port, &sa, &salen, err, errlen) < 0) return -1;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, salen) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Writes all len bytes to a blocking fd; 0 or -1. */
static int write_all(int fd, const void *p, size_t len) {
    const uint8_t *b = p;
    while (len > 0) {
        ssize_t n = send(fd, b, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += n;
        len -= (size_t)n;
    }
    return 0;
}

int http_request(const char *host, int port, const char *method, const char *path, double timeout_s,
                 int *status, char **body, uint64_t *bytes, char *err, size_t errlen) {
    *body = NULL;
    *status = 0;
    int fd = tcp_connect(host, port, timeout_s, err, errlen);
    if (fd < 0) return -1;
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", method, path,
                     host, port);
    if (n < 0 || (size_t)n >= sizeof req || write_all(fd, req, (size_t)n) < 0) {
        snprintf(err, errlen, "%s %s: send: %s", method, path, strerror(errno));
        close(fd);
        return -1;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    long content_length = -1;
    size_t head_len = 0;
    for (;;) {
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(err, errlen, "%s %s: recv: %s", method, path,
                     errno == EAGAIN ? "timed out" : strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (r == 0) break;
        len += (size_t)r;
        buf[len] = 0;
        if (!head_len) {
            char *e = strstr(buf, "\r\n\r\n");
            if (e) {
                head_len = (size_t)(e - buf) + 4;
                /* The front keeps connections alive when the response has a length, so read by
                 * Content-Length rather than waiting for a close that may come late. */
                for (char *h = strstr(buf, "\r\n"); h && h < e; h = strstr(h + 2, "\r\n"))
                    if (strncasecmp(h + 2, "Content-Length:", 15) == 0) content_length = strtol(h + 17, NULL, 10);
            }
        }
        if (head_len && content_length >= 0 && len >= head_len + (size_t)content_length) break;
    }
    close(fd);
    if (!head_len || sscanf(buf, "HTTP/1.%*d %d", status) != 1) {
        snprintf(err, errlen, "%s %s: malformed response (%zu bytes)", method, path, len);
        free(buf);
        return -1;
    }
    *bytes += (uint64_t)n + len;
    memmove(buf, buf + head_len, len - head_len + 1);
    *body = buf;
    return 0;
}

void wsc_init(wsc *c, int fd, uint64_t seed) {
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->rng = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    if (!c->rng) c->rng = 1;
    c->close_code = 1005;
}

void wsc_free(wsc *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    free(c->in);
    free(c->msg);
    free(c->out);
    c->in = c->msg = c->out = NULL;
    c->in_len = c->in_cap = c->msg_len = c->msg_cap = c->out_cap = 0;
}

/* Next xorshift64 value. */
static uint64_t rng_next(wsc *c) {
    uint64_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return c->rng = x;
}

size_t ws_handshake_request(wsc *c, char *buf, size_t cap, const char *host, int port, const char *path,
                            char key[25]) {
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next(c);
        memcpy(raw + i, &r, 8);
    }
    key[b64_encode(raw, 16, key)] = 0;
    int n = snprintf(buf, cap,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, host, port, key);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

int ws_handshake_check(wsc *c, const char *key, char *err, size_t errlen) {
    uint8_t *end = c->in_len >= 4 ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;
    if (!end) {
        if (c->in_len > 16384) {
            snprintf(err, errlen, "handshake: response head over 16 KB");
            return -1;
        }
        return 0;
    }
    size_t head = (size_t)(end - c->in) + 4;
    char *h = malloc(head + 1);
    memcpy(h, c->in, head);
    h[head] = 0;
    int status = 0;
    if (sscanf(h, "HTTP/1.1 %d", &status) != 1 || status != 101) {
        char *eol = strstr(h, "\r\n");
        if (eol) *eol = 0;
        snprintf(err, errlen, "handshake: %s", h);
        free(h);
        return -1;
    }
    char cat[80];
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t dig[20];
    SHA1((const uint8_t *)cat, strlen(cat), dig);
    char want[32];
    want[b64_encode(dig, 20, want)] = 0;
    int ok = 0;
    for (char *l = strstr(h, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, "Sec-WebSocket-Accept:", 21) == 0) {
            char *v = l + 23;
            while (*v == ' ') v++;
            ok = strncmp(v, want, strlen(want)) == 0;
            break;
        }
    }
    free(h);
    if (!ok) {
        snprintf(err, errlen, "handshake: missing or wrong Sec-WebSocket-Accept");
        return -1;
    }
    c->in_len -= head;
    memmove(c->in, c->in + head, c->in_len);
    return 1;
}

size_t wsc_build(wsc *c, int opcode, const void *payload, size_t len) {
    if (c->out_cap < len + 14) {
        c->out_cap = len + 14;
        c->out = realloc(c->out, c->out_cap);
    }
    uint8_t *o = c->out;
    size_t h = 0;
    o[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        o[h++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        o[h++] = 0x80 | 126;
        o[h++] = (uint8_t)(len >> 8);
        o[h++] = (uint8_t)len;
    } else {
        o[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) o[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t mask = (uint32_t)rng_next(c);
    memcpy(o + h, &mask, 4);
    h += 4;
    /* Masking 8 bytes at a time: a 640x480 JPEG per ack must cost the client microseconds, or the
     * load generator, on the same cores as the server, would become what is measured. */
    const uint8_t *p = payload;
    uint8_t *d = o + h;
    uint64_t m8 = (uint64_t)mask | (uint64_t)mask << 32;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= m8;
        memcpy(d + i, &v, 8);
    }
    const uint8_t *mb = (const uint8_t *)&mask;
    for (; i < len; i++) d[i] = p[i] ^ mb[i & 3];
    return h + len;
}

int wsc_feed(wsc *c, char *err, size_t errlen) {
    for (;;) {
        if (c->in_len < 2) return WSE_NONE;
        const uint8_t *b = c->in;
        int fin = b[0] & 0x80, opcode = b[0] & 0x0F;
        if (b[0] & 0x70) {
            snprintf(err, errlen, "server frame with RSV bits set");
            return WSE_ERROR;
        }
        if (b[1] & 0x80) {
            snprintf(err, errlen, "masked frame from the server");
            return WSE_ERROR;
        }
        size_t h = 2;
        uint64_t len = b[1] & 0x7F;
        if (len == 126) {
            if (c->in_len < 4) return WSE_NONE;
            len = (uint64_t)b[2] << 8 | b[3];
            h = 4;
        } else if (len == 127) {
            if (c->in_len < 10) return WSE_NONE;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | b[2 + i];
            h = 10;
        }
        if (len > (1ull << 32)) {
            snprintf(err, errlen, "server frame of %llu bytes", (unsigned long long)len);
            return WSE_ERROR;
        }
        if (c->in_len < h + len) return WSE_NONE;
        const uint8_t *p = b + h;
        size_t used = h + (size_t)len;
        int ev = WSE_NONE;
        if (opcode >= 8) {
            if (!fin || len > 125) {
                snprintf(err, errlen, "bad control frame from the server");
                return WSE_ERROR;
            }
            memcpy(c->ctl, p, (size_t)len);
            c->ctl_len = (size_t)len;
            if (opcode == WS_PING) ev = WSE_PING;
            else if (opcode == WS_CLOSE) {
                c->close_code = len >= 2 ? (p[0] << 8 | p[1]) : 1005;
                ev = WSE_CLOSE;
            } else if (opcode != WS_PONG) {
                snprintf(err, errlen, "unknown control opcode %d", opcode);
                return WSE_ERROR;
            }
        } else {
            if (opcode == WS_CONT ? !c->msg_opcode : (c->msg_opcode != 0 || (opcode != WS_TEXT && opcode != WS_BINARY))) {
                snprintf(err, errlen, "unexpected data frame opcode %d", opcode);
                return WSE_ERROR;
            }
            if (opcode != WS_CONT) {
                c->msg_opcode = opcode;
                c->msg_len = 0;
            }
            if (c->msg_len + len + 1 > c->msg_cap) {
                c->msg_cap = c->msg_len + (size_t)len + 1;
                c->msg = realloc(c->msg, c->msg_cap);
            }
            memcpy(c->msg + c->msg_len, p, (size_t)len);
            c->msg_len += (size_t)len;
            if (fin) {
                c->msg[c->msg_len] = 0;
                ev = WSE_MESSAGE;
            }
        }
        c->in_len -= used;
        memmove(c->in, c->in + used, c->in_len);
        if (ev == WSE_MESSAGE) c->msg_opcode = 0; /* the next frame starts a new message */
        if (ev != WSE_NONE) return ev;
    }
}

long wsc_read(wsc *c, size_t want) {
    if (c->in_cap - c->in_len < want) {
        c->in_cap = c->in_len + want;
        c->in = realloc(c->in, c->in_cap);
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, want, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n > 0) {
            c->in_len += (size_t)n;
            c->bytes_in += (uint64_t)n;
        }
        return (long)n;
    }
}

int wsc_open(wsc *c, const char *host, int port, const char *path, double timeout_s, uint64_t seed, char *err,
             size_t errlen) {
    int fd = tcp_connect(host, port, timeout_s, err, errlen);
    if (fd < 0) {
        wsc_init(c, -1, seed);
        return -1;
    }
    wsc_init(c, fd, seed);
    char req[1024], key[25];
    size_t n = ws_handshake_request(c, req, sizeof req, host, port, path, key);
    if (write_all(fd, req, n) < 0) {
        snprintf(err, errlen, "handshake send: %s", strerror(errno));
        return -1;
    }
    c->bytes_out += n;
    for (;;) {
        int r = ws_handshake_check(c, key, err, errlen);
        if (r) return r > 0 ? 0 : -1;
        long got = wsc_read(c, 4096);
        if (got <= 0) {
            snprintf(err, errlen, "handshake: %s", got == 0 ? "server closed" : errno == EAGAIN ? "timed out" : strerror(errno));
            return -1;
        }
    }
}

int wsc_send(wsc *c, int opcode, const void *payload, size_t len) {
    size_t n = wsc_build(c, opcode, payload, len);
    if (write_all(c->fd, c->out, n) < 0) return -1;
    c->bytes_out += n;
    return 0;
}

int wsc_recv(wsc *c, char *err, size_t errlen) {
    for (;;) {
        int ev = wsc_feed(c, err, errlen);
        if (ev == WSE_MESSAGE) return 1;
        if (ev == WSE_ERROR) return -1;
        if (ev == WSE_CLOSE) return 0;
        if (ev == WSE_PING) {
            uint8_t p[126];
            size_t l = c->ctl_len;
            memcpy(p, c->ctl, l);
            if (wsc_send(c, WS_PONG, p, l) < 0) {
                snprintf(err, errlen, "pong send: %s", strerror(errno));
                return -1;
            }
            continue;
        }
        /* Large reads: a GLB result can be tens of MB, and 64 KB reads would cost a realloc each. */
        long got = wsc_read(c, c->in_len > (1 << 20) ? (4u << 20) : (256u << 10));
        if (got == 0) {
            c->close_code = 1006;
            return 0;
        }
        if (got < 0) {
            snprintf(err, errlen, "recv: %s", errno == EAGAIN ? "timed out" : strerror(errno));
            return -1;
        }
    }
}

int wsc_close(wsc *c, double timeout_s) {
    int ok = -1;
    if (c->fd < 0) return -1;
    uint8_t code[2] = {1000 >> 8, 1000 & 0xFF};
    if (wsc_send(c, WS_CLOSE, code, 2) == 0) {
        set_timeouts(c->fd, timeout_s);
        double deadline = now_mono() + timeout_s;
        char err[128];
        while (now_mono() < deadline) {
            int ev = wsc_feed(c, err, sizeof err);
            if (ev == WSE_CLOSE) {
                ok = 0;
                break;
            }
            if (ev == WSE_ERROR) break;
            if (ev != WSE_NONE) continue; /* late messages and pings after our close are dropped */
            if (wsc_read(c, 65536) <= 0) break;
        }
    }
    close(c->fd);
    c->fd = -1;
    return ok;
}
