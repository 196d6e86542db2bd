/* The front's request-head parser (frontend/http_head.c) tried as a hostile client would: complete
 * and incomplete at every split point, the 16 KB and 64-header limits (431), versions (505),
 * malformed request lines and fields (400), control characters, case-insensitive lookups and
 * token lists, and random mutations that must never crash it nor produce a head pointing outside
 * the bytes given. Every input is copied into an exactly-sized heap buffer so that ASan
 * (make SAN=1) sees any read past the given length. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/http_head.h"
#include "tests/unit/check.h"

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x9e3779b97f4a7c15ULL;
}

/* Parses a heap copy of exactly len bytes. The copy is kept in *keep (the head points into it);
 * the caller frees it. */
static int parse_keep(const char *buf, size_t len, http_head *h, int *status, const char **why, char **keep) {
    char *b = malloc(len ? len : 1);
    if (len) memcpy(b, buf, len);
    *status = 0;
    *why = NULL;
    int r = http_head_parse(b, len, h, status, why);
    if (r == 1) {
        /* Every pointer of the head lies within the bytes given, before head_len. */
        CHECK(h->head_len <= len && h->head_len <= HTTP_HEAD_MAX);
        CHECK(h->method == b && h->method_len > 0);
        CHECK(h->target > b && h->target + h->target_len <= b + h->head_len);
        CHECK(h->num_headers >= 0 && h->num_headers <= HTTP_MAX_HEADERS);
        for (int i = 0; i < h->num_headers; i++) {
            const http_header *f = &h->headers[i];
            CHECK(f->name >= b && f->name + f->name_len <= b + h->head_len && f->name_len > 0);
            CHECK(f->value >= b && f->value + f->value_len <= b + h->head_len);
        }
    } else if (r == -1) {
        CHECK_MSG(*status == 400 || *status == 431 || *status == 505, "status %d", *status);
        CHECK(*why && **why);
    } else {
        CHECK(r == 0);
    }
    *keep = b;
    return r;
}

static int parse(const char *buf, size_t len, int *status) {
    http_head h;
    const char *why;
    char *keep;
    int r = parse_keep(buf, len, &h, status, &why, &keep);
    free(keep);
    return r;
}

static int parse_s(const char *s, int *status) { return parse(s, strlen(s), status); }

static void test_basic(void) {
    const char *req = "GET /ws/reconstruct/abc?x=1 HTTP/1.1\r\nHost: example.com\r\n"
                      "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
                      "Sec-WebSocket-Key:   dGhlIHNhbXBsZSBub25jZQ==  \t\r\nEmpty:\r\nX-Tab:\tv\t\r\n\r\nBODY";
    http_head h;
    int st;
    const char *why;
    char *keep;
    int r = parse_keep(req, strlen(req), &h, &st, &why, &keep);
    CHECK(r == 1);
    if (r == 1) {
        CHECK(h.method_len == 3 && !memcmp(h.method, "GET", 3));
        CHECK(h.target_len == strlen("/ws/reconstruct/abc?x=1") && !memcmp(h.target, "/ws/reconstruct/abc?x=1", h.target_len));
        CHECK(h.minor_version == 1);
        CHECK(h.num_headers == 6);
        CHECK(h.head_len == strlen(req) - 4);
        size_t n;
        const char *v = http_head_get(&h, "sec-websocket-key", &n);
        CHECK(v && n == 24 && !memcmp(v, "dGhlIHNhbXBsZSBub25jZQ==", 24)); /* leading and trailing OWS trimmed */
        v = http_head_get(&h, "HOST", &n);
        CHECK(v && n == 11 && !memcmp(v, "example.com", 11));
        v = http_head_get(&h, "hOsT", NULL); /* a NULL length is allowed */
        CHECK(v != NULL);
        v = http_head_get(&h, "empty", &n);
        CHECK(v && n == 0);
        v = http_head_get(&h, "x-tab", &n);
        CHECK(v && n == 1 && *v == 'v');
        CHECK(http_head_get(&h, "Hos", &n) == NULL);
        CHECK(http_head_get(&h, "Hostx", &n) == NULL);
        CHECK(http_head_get(&h, "Content-Length", &n) == NULL);
        CHECK(http_head_get(&h, "", &n) == NULL);
        CHECK(http_head_method_is(&h, "GET"));
        CHECK(!http_head_method_is(&h, "get"));
        CHECK(!http_head_method_is(&h, "GE"));
        CHECK(!http_head_method_is(&h, "GETX"));
        CHECK(http_head_has_token(&h, "connection", "upgrade"));
        CHECK(http_head_has_token(&h, "Connection", "KEEP-ALIVE"));
        CHECK(!http_head_has_token(&h, "Connection", "close"));
        CHECK(!http_head_has_token(&h, "Connection", "keep"));
        CHECK(http_head_has_token(&h, "upgrade", "WebSocket"));
        CHECK(!http_head_has_token(&h, "X-Missing", "websocket"));
    }
    free(keep);
    /* HTTP/1.0, other methods */
    r = parse_keep("POST /x HTTP/1.0\r\n\r\n", 20, &h, &st, &why, &keep);
    CHECK(r == 1 && h.minor_version == 0 && h.num_headers == 0 && http_head_method_is(&h, "POST"));
    free(keep);
    r = parse_keep("PROPFIND / HTTP/1.1\r\n\r\n", 23, &h, &st, &why, &keep);
    CHECK(r == 1 && http_head_method_is(&h, "PROPFIND"));
    free(keep);
    /* Bare LF line ends (lenient clients) */
    r = parse_keep("GET / HTTP/1.1\nHost: a\n\n", 24, &h, &st, &why, &keep);
    CHECK(r == 1 && h.num_headers == 1 && h.head_len == 24);
    free(keep);
    /* The first of two same-named headers is what get returns; a token in either counts. */
    const char *two = "GET / HTTP/1.1\r\nConnection: keep-alive\r\nconnection: Upgrade\r\n\r\n";
    r = parse_keep(two, strlen(two), &h, &st, &why, &keep);
    CHECK_MSG(r == 1, "two Connection headers");
    if (r == 1) {
        size_t n;
        const char *v = http_head_get(&h, "Connection", &n);
        CHECK(v && n == 10 && !memcmp(v, "keep-alive", 10));
        CHECK(http_head_has_token(&h, "Connection", "upgrade"));
    }
    free(keep);
}

static void test_tokens(void) {
    struct {
        const char *value;
        const char *token;
        int want;
    } cases[] = {
        {"keep-alive, Upgrade", "upgrade", 1},
        {"keep-alive,Upgrade", "upgrade", 1},
        {"Upgrade", "upgrade", 1},
        {"  upgrade  ", "upgrade", 1},
        {",,upgrade,,", "upgrade", 1},
        {"\tUPGRADE\t,close", "upgrade", 1},
        {"a, b, c, upgrade", "upgrade", 1},
        {"Upgraded", "upgrade", 0},
        {"xUpgrade", "upgrade", 0},
        {"up grade", "upgrade", 0},
        {"upgrade-x, keep-alive", "upgrade", 0},
        {"", "upgrade", 0},
        {",", "upgrade", 0},
        {"keep-alive, Upgrade", "keep-alive", 1},
        {"close", "close", 1},
        {"close", "clos", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char req[256];
        int n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nConnection: %s\r\n\r\n", cases[i].value);
        http_head h;
        int st;
        const char *why;
        char *keep;
        int r = parse_keep(req, (size_t)n, &h, &st, &why, &keep);
        CHECK_MSG(r == 1, "'%s' parses", cases[i].value);
        if (r == 1)
            CHECK_MSG(http_head_has_token(&h, "Connection", cases[i].token) == cases[i].want, "'%s' has '%s': want %d",
                      cases[i].value, cases[i].token, cases[i].want);
        free(keep);
    }
}

/* Every strict prefix of a complete head is "more bytes" (0); the whole head, and the head with
 * anything after it, is complete with the same head_len. */
static void test_splits(void) {
    const char *heads[] = {
        "GET / HTTP/1.1\r\n\r\n",
        "GET /status HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\nHost: x\n\n",
        "GET / HTTP/1.1\nHost: x\r\n\r\n",
        "POST /ws/session/create HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: 2\r\n"
        "Content-Type: application/json\r\n\r\n",
        "GET /ws/reconstruct/0123 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        /* malformed ones too: the verdict comes only once the head is complete */
        "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        "BAD REQUEST LINE\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
    };
    const char *tails[] = {"", "{}", "GET / HTTP/1.1\r\n\r\n", "\r\n\r\n\n\n"};
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++) {
        size_t n = strlen(heads[i]);
        int st, full = parse(heads[i], n, &st);
        CHECK_MSG(full != 0, "head %zu complete", i);
        for (size_t k = 0; k < n; k++) {
            int r = parse(heads[i], k, &st);
            CHECK_MSG(r == 0, "head %zu: prefix of %zu/%zu bytes gives %d (status %d)", i, k, n, r, st);
        }
        for (size_t t = 0; t < sizeof tails / sizeof *tails; t++) {
            char buf[1024];
            int m = snprintf(buf, sizeof buf, "%s%s", heads[i], tails[t]);
            http_head h;
            const char *why;
            char *keep;
            int r = parse_keep(buf, (size_t)m, &h, &st, &why, &keep);
            CHECK_MSG(r == full && (r != 1 || h.head_len == n), "head %zu + tail %zu: %d", i, t, r);
            free(keep);
        }
    }
}

/* A head of `total` bytes (request line, one header padded to size, blank line). */
static char *sized_head(size_t total, int complete) {
    const char *start = "GET / HTTP/1.1\r\nX-Pad: ";
    char *b = malloc(total + 1);
    size_t s = strlen(start);
    memcpy(b, start, s);
    size_t pad_end = complete ? total - 4 : total;
    for (size_t i = s; i < pad_end; i++) b[i] = 'a' + (char)(i % 26);
    if (complete) memcpy(b + total - 4, "\r\n\r\n", 4);
    b[total] = 0;
    return b;
}

static void test_limits(void) {
    int st;
    /* Exactly 16 KB is allowed; one byte more is 431, complete or not. */
    char *b = sized_head(HTTP_HEAD_MAX, 1);
    CHECK_MSG(parse(b, HTTP_HEAD_MAX, &st) == 1, "a 16384-byte head is allowed");
    free(b);
    b = sized_head(HTTP_HEAD_MAX + 1, 1);
    CHECK_MSG(parse(b, HTTP_HEAD_MAX + 1, &st) == -1 && st == 431, "a 16385-byte head: 431 (got %d)", st);
    free(b);
    b = sized_head(HTTP_HEAD_MAX - 1, 0);
    CHECK_MSG(parse(b, HTTP_HEAD_MAX - 1, &st) == 0, "16383 bytes, not complete yet: more");
    free(b);
    b = sized_head(HTTP_HEAD_MAX, 0);
    CHECK_MSG(parse(b, HTTP_HEAD_MAX, &st) == -1 && st == 431, "16384 bytes without an end: 431 (got %d)", st);
    free(b);
    b = sized_head(1 << 20, 0);
    CHECK_MSG(parse(b, 1 << 20, &st) == -1 && st == 431, "1 MB without an end: 431");
    free(b);
    /* A huge head that does end, far past the limit, is still 431 (not parsed past 16 KB). */
    b = sized_head(200000, 1);
    CHECK(parse(b, 200000, &st) == -1 && st == 431);
    free(b);
    /* Bare-LF heads at the limit */
    b = sized_head(HTTP_HEAD_MAX, 1);
    memcpy(b + HTTP_HEAD_MAX - 4, "\r\n\n\n", 4); /* ends at its 16383rd byte */
    CHECK(parse(b, HTTP_HEAD_MAX, &st) == 1);
    memcpy(b + HTTP_HEAD_MAX - 4, "xx\r\n", 4); /* 16384 bytes, the next one could end it */
    CHECK(parse(b, HTTP_HEAD_MAX, &st) == -1 && st == 431);
    memcpy(b + HTTP_HEAD_MAX - 4, "xx\n\n", 4); /* ends exactly at 16384 with a bare LF */
    CHECK(parse(b, HTTP_HEAD_MAX, &st) == 1);
    free(b);

    /* 64 headers are allowed, 65 are 431. */
    for (int count = 60; count <= 70; count++) {
        char req[8192];
        size_t n = (size_t)sprintf(req, "GET / HTTP/1.1\r\n");
        for (int i = 0; i < count; i++) n += (size_t)sprintf(req + n, "X-H%d: %d\r\n", i, i);
        n += (size_t)sprintf(req + n, "\r\n");
        int r = parse(req, n, &st);
        if (count <= HTTP_MAX_HEADERS) {
            CHECK_MSG(r == 1, "%d headers allowed (got %d)", count, r);
        } else {
            CHECK_MSG(r == -1 && st == 431, "%d headers: 431 (got %d %d)", count, r, st);
        }
    }
    /* 10,000 tiny headers within 16 KB: 431 too, not an overflow of the header array */
    {
        char *req = malloc(HTTP_HEAD_MAX);
        size_t n = (size_t)sprintf(req, "GET / HTTP/1.1\r\n");
        while (n + 8 < HTTP_HEAD_MAX) n += (size_t)sprintf(req + n, "a:\r\n");
        n += (size_t)sprintf(req + n, "\r\n");
        CHECK(parse(req, n, &st) == -1 && st == 431);
        free(req);
    }
}

static void test_versions_and_malformed(void) {
    struct {
        const char *req;
        int want, status;
        const char *what;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", 1, 0, "1.1"},
        {"GET / HTTP/1.0\r\n\r\n", 1, 0, "1.0"},
        {"GET / HTTP/1.9\r\n\r\n", 1, 0, "1.9 (a future 1.x)"},
        {"GET / HTTP/2.0\r\n\r\n", -1, 505, "2.0"},
        {"GET / HTTP/3.0\r\n\r\n", -1, 505, "3.0"},
        {"GET / HTTP/0.9\r\n\r\n", -1, 505, "0.9"},
        {"GET / HTTP/9.9\r\nHost: x\r\n\r\n", -1, 505, "9.9"},
        {"GET / http/1.1\r\n\r\n", -1, 400, "lower-case protocol name"},
        {"GET / HTTPS/1.1\r\n\r\n", -1, 400, "HTTPS/"},
        {"GET / HTTP/1.1 \r\n\r\n", -1, 400, "space after the version"},
        {"GET / HTTP/1.11\r\n\r\n", -1, 400, "version 1.11"},
        /* A malformed version is 400 "malformed", not 505 "not supported" (505 is only for a
         * well-formed HTTP/<digit>.<digit> with another major digit). */
        {"GET / HTTP/1.\r\n\r\n", -1, 400, "version 1."},
        {"GET / HTTP/12.0\r\n\r\n", -1, 400, "version 12.0"},
        {"GET /\r\n\r\n", -1, 400, "no version (HTTP/0.9 style)"},
        {"GET\r\n\r\n", -1, 400, "method only"},
        {"GET  / HTTP/1.1\r\n\r\n", -1, 400, "two spaces after the method"},
        {"GET /  HTTP/1.1\r\n\r\n", -1, 400, "two spaces after the target"},
        {" GET / HTTP/1.1\r\n\r\n", -1, 400, "leading space"},
        {"GET\t/\tHTTP/1.1\r\n\r\n", -1, 400, "tabs in the request line"},
        {"GE(T / HTTP/1.1\r\n\r\n", -1, 400, "non-token method"},
        {"G\x01T / HTTP/1.1\r\n\r\n", -1, 400, "control char in the method"},
        {"GET /a\x01b HTTP/1.1\r\n\r\n", -1, 400, "control char in the target"},
        {"GET /a\x7f HTTP/1.1\r\n\r\n", -1, 400, "DEL in the target"},
        {"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", -1, 400, "raw non-ASCII in the target"},
        {"GET / HTTP/1.1\rHost: x\r\n\r\n", -1, 400, "bare CR ending the request line"},
        {"GET / HTTP/1.1\r\nHost x\r\n\r\n", -1, 400, "header without a colon"},
        {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", -1, 400, "space before the colon"},
        {"GET / HTTP/1.1\r\n: x\r\n\r\n", -1, 400, "empty header name"},
        {"GET / HTTP/1.1\r\nHo(st: x\r\n\r\n", -1, 400, "non-token header name"},
        {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", -1, 400, "obs-fold (space)"},
        {"GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n", -1, 400, "obs-fold (tab)"},
        {"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", -1, 400, "bare CR inside a value"},
        {"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", -1, 400, "\\x01 in a value"},
        {"GET / HTTP/1.1\r\nHost: a\x1f" "b\r\n\r\n", -1, 400, "\\x1f in a value"},
        {"GET / HTTP/1.1\r\nX: \x1b[31m\r\n\r\n", -1, 400, "ESC in a value"},
        {"GET / HTTP/1.1\r\nX: a\tb\r\n\r\n", 1, 0, "tab inside a value is allowed"},
        {"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", 1, 0, "obs-text in a value is allowed"},
        {"\r\n\r\n", -1, 400, "blank line only"},
        {"\n\n", -1, 400, "bare blank line only"},
        /* A line that starts with a bare CR is neither a header nor the blank line that ends the
         * head (RFC 9112 2.2): 400. Taking it for the blank line would drop every header after it
         * ("Content-Length: 5" here), so the body would be read as the next request while a
         * proxy in front sees one request with a body: a framing desync. */
        {"GET / HTTP/1.1\r\nHost: a\r\n\rContent-Length: 5\r\n\r\nhello", -1, 400, "line starting with a bare CR"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int st;
        int r = parse_s(cases[i].req, &st);
        CHECK_MSG(r == cases[i].want && (r != -1 || st == cases[i].status), "%s: got %d status %d, want %d %d",
                  cases[i].what, r, st, cases[i].want, cases[i].status);
    }
    /* NUL bytes anywhere (strlen cannot build these). */
    const char base[] = "GET /ab HTTP/1.1\r\nHost: ab\r\n\r\n";
    size_t n = sizeof base - 1;
    const size_t nul_at[] = {1, 5, 10, 24, 25};
    for (size_t i = 0; i < sizeof nul_at / sizeof *nul_at; i++) {
        char b[64];
        memcpy(b, base, n);
        b[nul_at[i]] = 0;
        int st;
        int r = parse(b, n, &st);
        CHECK_MSG(r == -1 && st == 400, "NUL at %zu: %d %d", nul_at[i], r, st);
    }
}

/* Random mutations of valid heads: never a crash, never a read past the bytes given (ASan), and
 * any head accepted points inside the bytes (checked in parse_keep). */
static void test_fuzz(void) {
    const char *seeds[] = {
        "GET /ws/reconstruct/abc HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "POST /ws/session/create HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"a\": 1}  ",
        "HEAD / HTTP/1.0\nX: y\n\n",
    };
    const char hostile[] = "\r\n :\t\0\x7f\xff/HTTP1.0";
    char buf[600];
    int accepted = 0, refused = 0, more = 0;
    for (int it = 0; it < 300000; it++) {
        const char *s = seeds[rnd() % 3];
        size_t n = strlen(s);
        memcpy(buf, s, n);
        int edits = 1 + (int)(rnd() % 6);
        for (int e = 0; e < edits; e++) {
            size_t at = n ? (size_t)(rnd() % n) : 0;
            switch (rnd() % 5) {
            case 0: buf[at] = (char)rnd(); break;
            case 1: buf[at] = hostile[rnd() % (sizeof hostile - 1)]; break;
            case 2: /* insert */
                if (n < sizeof buf - 1) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = hostile[rnd() % (sizeof hostile - 1)];
                    n++;
                }
                break;
            case 3: /* delete */
                if (n) {
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                }
                break;
            default: n = at; break; /* truncate */
            }
        }
        int st;
        int r = parse(buf, n, &st);
        accepted += r == 1;
        refused += r == -1;
        more += r == 0;
    }
    CHECK(accepted > 1000 && refused > 1000 && more > 1000);
    /* Pure random bytes, sometimes with line ends sprinkled in. */
    for (int it = 0; it < 100000; it++) {
        size_t n = (size_t)(rnd() % sizeof buf);
        for (size_t i = 0; i < n; i++) buf[i] = (it & 1) && rnd() % 8 == 0 ? '\n' : (char)rnd();
        int st;
        parse(buf, n, &st);
    }
}

int main(void) {
    test_basic();
    test_tokens();
    test_splits();
    test_limits();
    test_versions_and_malformed();
    test_fuzz();
    CHECK_DONE("test_http_head");
}
