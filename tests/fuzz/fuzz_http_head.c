/* Fuzzes frontend/http_head.c, the connection loop's parser of request heads (every connection's
 * first bytes, before any thread or CivetWeb sees them): http_head_parse, then the lookups the
 * loop makes (http_head_get, http_head_has_token, http_head_method_is) with the names it uses and
 * with the parsed headers' own names. Invariants:
 *   - a complete head ends within the bytes given and within HTTP_HEAD_MAX, with the blank line;
 *     the method, target and every header name/value lie inside it, names are non-empty tokens,
 *     values have no CR/LF and no surrounding blanks; there are at most HTTP_MAX_HEADERS;
 *   - shorter prefixes of a complete head ask for more bytes (a head is never accepted from
 *     part of itself; five cuts are checked, see below), and a refusal has a status of 400, 431 or 505 and a reason;
 *   - input without a complete head is refused with 431 exactly when it reaches HTTP_HEAD_MAX;
 *   - http_head_get on a header's own name finds a header of that name. */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "frontend/http_head.h"
#include "fuzz_util.h"

static int inside(const char *p, size_t n, const char *buf, size_t len) {
    return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;
    http_head h;
    int status = 0;
    const char *why = NULL;
    int rc = http_head_parse(buf, size, &h, &status, &why);
    if (rc < 0) {
        FUZZ_ASSERT(status == 400 || status == 431 || status == 505);
        FUZZ_ASSERT(why && *why);
        return 0;
    }
    if (rc == 0) {
        FUZZ_ASSERT(size < HTTP_HEAD_MAX);
        return 0;
    }
    FUZZ_ASSERT(rc == 1);
    size_t end = h.head_len;
    FUZZ_ASSERT(end >= 2 && end <= size && end <= HTTP_HEAD_MAX);
    FUZZ_ASSERT(buf[end - 1] == '\n');
    FUZZ_ASSERT(buf[end - 2] == '\n' || (end >= 3 && buf[end - 2] == '\r' && buf[end - 3] == '\n'));
    FUZZ_ASSERT(h.method == buf && h.method_len > 0 && inside(h.method, h.method_len, buf, end));
    FUZZ_ASSERT(h.target_len > 0 && inside(h.target, h.target_len, buf, end));
    FUZZ_ASSERT(h.minor_version >= 0 && h.minor_version <= 9);
    FUZZ_ASSERT(h.num_headers >= 0 && h.num_headers <= HTTP_MAX_HEADERS);
    for (int i = 0; i < h.num_headers; i++) {
        const http_header *f = &h.headers[i];
        FUZZ_ASSERT(f->name_len > 0 && inside(f->name, f->name_len, buf, end));
        FUZZ_ASSERT(inside(f->value, f->value_len, buf, end));
        FUZZ_ASSERT(!memchr(f->name, ':', f->name_len));
        FUZZ_ASSERT(!memchr(f->value, '\r', f->value_len) && !memchr(f->value, '\n', f->value_len));
        if (f->value_len) {
            FUZZ_ASSERT(f->value[0] != ' ' && f->value[0] != '\t');
            FUZZ_ASSERT(f->value[f->value_len - 1] != ' ' && f->value[f->value_len - 1] != '\t');
        }
        /* Lookup by its own name (NUL-terminated copy; names are at most the head's size). */
        char name[HTTP_HEAD_MAX + 1];
        memcpy(name, f->name, f->name_len);
        name[f->name_len] = 0;
        size_t vl = 0;
        const char *v = http_head_get(&h, name, &vl);
        FUZZ_ASSERT(v != NULL);
        int same = 0;
        for (int j = 0; j <= i && !same; j++)
            same = h.headers[j].value == v && h.headers[j].name_len == f->name_len &&
                   !strncasecmp(h.headers[j].name, name, f->name_len);
        FUZZ_ASSERT(same);
    }
    /* What the loop asks of an upgrade request. */
    size_t len;
    (void)http_head_get(&h, "Sec-WebSocket-Key", &len);
    (void)http_head_get(&h, "Content-Length", &len);
    (void)http_head_has_token(&h, "Connection", "upgrade");
    (void)http_head_has_token(&h, "Upgrade", "websocket");
    (void)http_head_has_token(&h, "Transfer-Encoding", "chunked");
    (void)http_head_method_is(&h, "GET");
    /* Never complete from a part of itself: the cuts inside the terminator (where a bare LF or
     * CR could end it early) and the middle. Every cut would make each run quadratic. */
    size_t cuts[5] = {end - 1, end - 2, end > 3 ? end - 3 : 0, end / 2, 0};
    for (int i = 0; i < 5; i++) {
        http_head part;
        int st;
        const char *w;
        FUZZ_ASSERT(http_head_parse(buf, cuts[i], &part, &st, &w) == 0);
    }
    return 0;
}
