/* A bounded parser of HTTP/1.x request heads, used by the front's connection loop to decide,
 * before any handler thread is involved, whether a connection is a WebSocket upgrade, plain HTTP
 * for CivetWeb, or something to refuse. Pure: it only reads the bytes it is given. */
#ifndef DA3_HTTP_HEAD_H
#define DA3_HTTP_HEAD_H

#include <stddef.h>

#define HTTP_HEAD_MAX 16384  /* request line + headers; more is refused with 431 */
#define HTTP_MAX_HEADERS 64

typedef struct {
    const char *name, *value;  /* not NUL-terminated: use the lengths */
    size_t name_len, value_len;
} http_header;

typedef struct {
    const char *method, *target;
    size_t method_len, target_len;
    int minor_version;         /* HTTP/1.<minor> */
    int num_headers;
    http_header headers[HTTP_MAX_HEADERS];
    size_t head_len;           /* bytes up to and including the blank line */
} http_head;

/* Parses the head at the start of buf. Returns 1 when complete (*h filled, pointing into buf), 0
 * when more bytes are needed, or -1 with the HTTP status to answer (400 malformed, 431 too large
 * or too many headers, 505 not HTTP/1.x) and a reason. */
int http_head_parse(const char *buf, size_t len, http_head *h, int *status, const char **why);

/* The value of the first header called name (case-insensitive), or NULL; *len gets its length. */
const char *http_head_get(const http_head *h, const char *name, size_t *len);

/* 1 when the header's comma-separated value list contains token (case-insensitive). */
int http_head_has_token(const http_head *h, const char *name, const char *token);

/* 1 when the method equals m exactly. */
int http_head_method_is(const http_head *h, const char *m);

#endif
