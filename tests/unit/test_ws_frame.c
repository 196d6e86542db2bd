/* RFC 6455 framing (frontend/ws_frame.c) tried as a hostile client would: every header rule
 * checked exhaustively over the first two bytes against an independent reading of the RFC,
 * 16/64-bit lengths, partial headers at every byte boundary, unmasking at arbitrary offsets and
 * alignments against byte-wise XOR, server header encodings at the length boundaries, close
 * payloads (every code 0..65535), and utf8_valid / utf8_prefix against a reference validator
 * written here from the Unicode well-formed byte table (not from the implementation's method).
 * Inputs are copied into exactly-sized heap buffers so that ASan (make SAN=1) sees any read past
 * the given length. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ws_frame.h"
#include "tests/unit/check.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

/* A heap copy of exactly n bytes (n = 0: a 1-byte allocation never read). */
static uint8_t *exact(const uint8_t *p, size_t n) {
    uint8_t *b = malloc(n ? n : 1);
    if (n) memcpy(b, p, n);
    return b;
}

static int parse(const uint8_t *buf, size_t len, ws_frame_header *h, int *code, const char **why) {
    uint8_t *b = exact(buf, len);
    *code = 0;
    *why = NULL;
    int r = ws_frame_parse_header(b, len, h, code, why);
    free(b);
    return r;
}

/* Builds a client frame header: returns its length. ext: the 16/64-bit length bytes to use when
 * the 7-bit field is 126/127. */
static size_t client_header(uint8_t *out, int b0, int masked, uint64_t len, const uint8_t mask[4]) {
    size_t n = 0;
    out[n++] = (uint8_t)b0;
    if (len < 126) {
        out[n++] = (uint8_t)((masked ? 0x80 : 0) | len);
    } else if (len <= 0xffff) {
        out[n++] = (uint8_t)((masked ? 0x80 : 0) | 126);
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = (uint8_t)((masked ? 0x80 : 0) | 127);
        for (int i = 7; i >= 0; i--) out[n++] = (uint8_t)(len >> (8 * i));
    }
    if (masked) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

/* ---- header rules, exhaustively over the first two bytes -------------------------------------- */

/* What RFC 6455 section 5.2 says about a client frame starting with b0 b1 (-1 refused, 1 ok). */
static int rfc_verdict(int b0, int b1) {
    int fin = b0 >> 7, rsv1 = (b0 >> 6) & 1, rsv2 = (b0 >> 5) & 1, rsv3 = (b0 >> 4) & 1, op = b0 & 15;
    int mask = b1 >> 7, len7 = b1 & 127;
    if (rsv1 || rsv2 || rsv3) return -1;                            /* 5.2: no extension negotiated */
    if (!(op == 0 || op == 1 || op == 2 || op == 8 || op == 9 || op == 10)) return -1; /* 3-7, B-F reserved */
    if (!mask) return -1;                                         /* 5.1: client frames are masked */
    if (op >= 8 && (!fin || len7 > 125)) return -1;               /* 5.5: control frames */
    return 1;
}

static void test_header_exhaustive(void) {
    const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    int bad = 0;
    for (int b0 = 0; b0 < 256; b0++) {
        for (int b1 = 0; b1 < 256; b1++) {
            uint8_t buf[WS_MAX_HEADER];
            buf[0] = (uint8_t)b0;
            buf[1] = (uint8_t)b1;
            int len7 = b1 & 127;
            size_t pos = 2;
            uint64_t want_len = (uint64_t)len7;
            if (len7 == 126) {
                buf[2] = 0x01, buf[3] = 0x02, pos = 4, want_len = 0x0102;
            } else if (len7 == 127) {
                const uint8_t e[8] = {0, 0, 0, 1, 0, 0, 0, 5}; /* 2^32 + 5 */
                memcpy(buf + 2, e, 8);
                pos = 10;
                want_len = (1ULL << 32) + 5;
            }
            size_t hl = pos + ((b1 & 0x80) ? 4 : 0);
            memcpy(buf + pos, mask, 4);
            ws_frame_header h;
            memset(&h, 0xAA, sizeof h);
            int code;
            const char *why;
            int want = rfc_verdict(b0, b1);
            /* Give it the whole header (and as many bytes as a masked one would need). */
            size_t give = pos + 4;
            int r = parse(buf, give, &h, &code, &why);
            if (r != want) {
                if (bad++ < 20) fprintf(stderr, "  b0=%02x b1=%02x: got %d, RFC says %d\n", b0, b1, r, want);
                continue;
            }
            if (r < 0) {
                CHECK_MSG(code == WS_CLOSE_PROTOCOL_ERROR && why && *why, "b0=%02x b1=%02x: code %d", b0, b1, code);
                /* Every one of these is decidable from the first two bytes. */
                int r2 = parse(buf, 2, &h, &code, &why);
                CHECK_MSG(r2 == -1, "b0=%02x b1=%02x: refused only once more bytes came (%d)", b0, b1, r2);
                continue;
            }
            CHECK_MSG(h.fin == (b0 >> 7) && h.opcode == (b0 & 15) && h.payload_len == want_len &&
                          h.header_len == hl && !memcmp(h.mask, mask, 4),
                      "b0=%02x b1=%02x: fin %d op %d len %llu hlen %zu", b0, b1, h.fin, h.opcode,
                      (unsigned long long)h.payload_len, h.header_len);
        }
    }
    CHECK_MSG(bad == 0, "%d first-two-byte combinations disagree with RFC 6455", bad);
}

/* The named cases of the brief, spelled out (they are also covered above). */
static void test_header_named(void) {
    const uint8_t m[4] = {1, 2, 3, 4};
    uint8_t b[WS_MAX_HEADER];
    ws_frame_header h;
    int code;
    const char *why;
    struct {
        int b0, masked;
        uint64_t len;
        int want;
        const char *what;
    } cases[] = {
        {0x81, 1, 5, 1, "masked text"},
        {0x81, 0, 5, -1, "unmasked text"},
        {0x82, 0, 0, -1, "unmasked empty binary"},
        {0xC1, 1, 5, -1, "RSV1"},
        {0xA1, 1, 5, -1, "RSV2"},
        {0x91, 1, 5, -1, "RSV3"},
        {0xF1, 1, 5, -1, "all RSV bits"},
        {0x83, 1, 0, -1, "opcode 3"},
        {0x87, 1, 0, -1, "opcode 7"},
        {0x8B, 1, 0, -1, "opcode 0xB"},
        {0x8F, 1, 0, -1, "opcode 0xF"},
        {0x89, 1, 125, 1, "ping of 125"},
        {0x89, 1, 126, -1, "ping of 126 (16-bit length)"},
        {0x89, 1, 65536, -1, "ping with a 64-bit length"},
        {0x8A, 1, 126, -1, "pong of 126"},
        {0x88, 1, 126, -1, "close of 126"},
        {0x09, 1, 3, -1, "fragmented ping"},
        {0x08, 1, 2, -1, "fragmented close"},
        {0x0A, 1, 0, -1, "fragmented pong"},
        {0x01, 1, 3, 1, "first fragment of a text message"},
        {0x00, 1, 3, 1, "middle continuation"},
        {0x80, 1, 3, 1, "final continuation"},
        {0x82, 1, 126, 1, "binary, 16-bit length 126"},
        {0x82, 1, 65535, 1, "binary, 16-bit length 65535"},
        {0x82, 1, 65536, 1, "binary, 64-bit length 65536"},
        {0x82, 1, 1ULL << 30, 1, "binary announcing 1 GiB"},
        {0x82, 1, 3ULL << 30, 1, "binary announcing 3 GiB"},
        {0x82, 1, (1ULL << 63) - 1, 1, "binary announcing 2^63-1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = client_header(b, cases[i].b0, cases[i].masked, cases[i].len, m);
        int r = parse(b, n, &h, &code, &why);
        CHECK_MSG(r == cases[i].want, "%s: got %d (%s)", cases[i].what, r, r < 0 && why ? why : "");
        if (r == 1) CHECK_MSG(h.payload_len == cases[i].len && h.header_len == n, "%s: len %llu hlen %zu",
                              cases[i].what, (unsigned long long)h.payload_len, h.header_len);
        if (r < 0) CHECK_MSG(code == 1002, "%s: code %d", cases[i].what, code);
    }
    /* A 64-bit length with its most significant bit set. */
    const uint64_t top[] = {1ULL << 63, ~0ULL, (1ULL << 63) | 5};
    for (size_t i = 0; i < 3; i++) {
        size_t n = client_header(b, 0x82, 1, top[i], m);
        CHECK(n == 14);
        int r = parse(b, n, &h, &code, &why);
        CHECK_MSG(r == -1 && code == 1002 && why, "64-bit length %llx with its top bit: %d", (unsigned long long)top[i], r);
        /* ... still only "more bytes" while the header is incomplete, never a success */
        for (size_t k = 0; k < n; k++) CHECK(parse(b, k, &h, &code, &why) <= 0);
    }
    /* 16-bit length field decoded big-endian; 64-bit likewise. */
    const uint8_t f16[] = {0x82, 0xFE, 0xAB, 0xCD, 9, 9, 9, 9};
    CHECK(parse(f16, sizeof f16, &h, &code, &why) == 1 && h.payload_len == 0xABCD && h.header_len == 8);
    const uint8_t f64[] = {0x82, 0xFF, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 1, 2, 3, 4};
    CHECK(parse(f64, sizeof f64, &h, &code, &why) == 1 && h.payload_len == 0x0123456789ABCDEFULL &&
          h.header_len == 14 && h.mask[0] == 1 && h.mask[3] == 4);
}

/* Partial headers: every strict prefix says "more bytes" (0); the whole header parses; bytes
 * after the header do not change it. */
static void test_header_partial(void) {
    const uint8_t m[4] = {0xde, 0xad, 0xbe, 0xef};
    const uint64_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 1ULL << 32, (1ULL << 63) - 1};
    const int b0s[] = {0x81, 0x82, 0x01, 0x00, 0x80, 0x89, 0x8A, 0x88};
    for (size_t bi = 0; bi < sizeof b0s / sizeof *b0s; bi++) {
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            if ((b0s[bi] & 15) >= 8 && lens[li] > 125) continue;
            uint8_t b[WS_MAX_HEADER + 8];
            size_t n = client_header(b, b0s[bi], 1, lens[li], m);
            for (size_t k = n; k < sizeof b; k++) b[k] = (uint8_t)(0x55 + k);
            ws_frame_header h;
            int code;
            const char *why;
            for (size_t k = 0; k < n; k++) {
                int r = parse(b, k, &h, &code, &why);
                CHECK_MSG(r == 0, "b0 %02x len %llu: prefix of %zu/%zu bytes gives %d", b0s[bi],
                          (unsigned long long)lens[li], k, n, r);
            }
            for (size_t k = n; k <= sizeof b; k++) {
                int r = parse(b, k, &h, &code, &why);
                CHECK_MSG(r == 1 && h.header_len == n && h.payload_len == lens[li] && !memcmp(h.mask, m, 4),
                          "b0 %02x len %llu: %zu bytes given: %d hlen %zu", b0s[bi], (unsigned long long)lens[li],
                          k, r, h.header_len);
            }
        }
    }
    /* Refusals need at most two bytes; one byte alone is always "more". */
    for (int b0 = 0; b0 < 256; b0++) {
        uint8_t one = (uint8_t)b0;
        ws_frame_header h;
        int code;
        const char *why;
        CHECK_MSG(parse(&one, 1, &h, &code, &why) == 0, "one byte %02x", b0);
        CHECK(parse(&one, 0, &h, &code, &why) == 0);
    }
}

/* Random bytes never crash the parser, and a success always describes a header within the
 * bytes given. */
static void test_header_fuzz(void) {
    for (int it = 0; it < 200000; it++) {
        uint8_t b[WS_MAX_HEADER];
        for (int i = 0; i < WS_MAX_HEADER; i++) b[i] = (uint8_t)rnd();
        if (it & 1) b[1] |= 0x80, b[0] &= 0x8F; /* bias toward plausible frames */
        size_t n = (size_t)(rnd() % (WS_MAX_HEADER + 1));
        ws_frame_header h;
        int code;
        const char *why;
        int r = parse(b, n, &h, &code, &why);
        CHECK(r >= -1 && r <= 1);
        if (r == 1) {
            CHECK(h.header_len <= n && h.header_len >= 6);
            CHECK(h.payload_len >> 63 == 0);
            CHECK(h.opcode < 8 || h.payload_len <= WS_MAX_CONTROL);
        }
        if (r == -1) CHECK(code == 1002 && why);
    }
}

/* ---- unmasking --------------------------------------------------------------------------------- */

static void test_unmask(void) {
    enum { N = 4096 };
    uint8_t *orig = malloc(N + 16), *work = malloc(N + 16), *ref = malloc(N + 16);
    for (int it = 0; it < 3000; it++) {
        uint8_t mask[4];
        for (int i = 0; i < 4; i++) mask[i] = (uint8_t)rnd();
        size_t n = (size_t)(rnd() % N);
        size_t align = (size_t)(rnd() % 8); /* misaligned data pointers */
        uint64_t base = (it % 3 == 0) ? (rnd() & 0xffffffffffULL) : 0; /* frame offsets past 4 GiB too */
        for (size_t i = 0; i < n; i++) orig[align + i] = (uint8_t)rnd();
        memcpy(work + align, orig + align, n);
        for (size_t i = 0; i < n; i++) ref[i] = orig[align + i] ^ mask[(base + i) & 3];
        /* Unmask in random pieces, each told its offset within the payload. */
        size_t done = 0;
        while (done < n) {
            size_t piece = 1 + (size_t)(rnd() % (it % 2 ? 13 : 700));
            if (piece > n - done) piece = n - done;
            ws_frame_unmask(work + align + done, piece, mask, base + done);
            done += piece;
        }
        if (memcmp(work + align, ref, n)) {
            size_t k = 0;
            while (work[align + k] == ref[k]) k++;
            CHECK_MSG(0, "unmask of %zu bytes (align %zu, base %llu) differs at byte %zu", n, align,
                      (unsigned long long)base, k);
            break;
        }
        /* Twice = identity; zero bytes touch nothing. */
        ws_frame_unmask(work + align, n, mask, base);
        CHECK(!memcmp(work + align, orig + align, n));
        uint8_t guard = 0x5a;
        ws_frame_unmask(&guard, 0, mask, 1);
        CHECK(guard == 0x5a);
    }
    /* Exactly-sized buffers of every small length at every offset mod 4: no over-read/over-write. */
    const uint8_t mask[4] = {0xa1, 0xb2, 0xc3, 0xd4};
    for (size_t n = 0; n < 40; n++) {
        for (uint64_t off = 0; off < 8; off++) {
            uint8_t *b = malloc(n ? n : 1);
            for (size_t i = 0; i < n; i++) b[i] = (uint8_t)i;
            ws_frame_unmask(b, n, mask, off);
            for (size_t i = 0; i < n; i++) CHECK(b[i] == (uint8_t)(i ^ mask[(off + i) & 3]));
            free(b);
        }
    }
    free(orig);
    free(work);
    free(ref);
}

/* ---- server headers ------------------------------------------------------------------------------ */

static void test_server_header(void) {
    struct {
        uint64_t len;
        size_t hlen;
        uint8_t bytes[10];
    } cases[] = {
        {0, 2, {0x82, 0}},
        {1, 2, {0x82, 1}},
        {125, 2, {0x82, 125}},
        {126, 4, {0x82, 126, 0x00, 0x7E}},
        {127, 4, {0x82, 126, 0x00, 0x7F}},
        {65535, 4, {0x82, 126, 0xFF, 0xFF}},
        {65536, 10, {0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
        {1ULL << 32, 10, {0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0}},
        {0x0102030405060708ULL, 10, {0x82, 127, 1, 2, 3, 4, 5, 6, 7, 8}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t out[16];
        memset(out, 0xEE, sizeof out);
        size_t n = ws_frame_server_header(out, WS_OP_BINARY, cases[i].len);
        CHECK_MSG(n == cases[i].hlen && !memcmp(out, cases[i].bytes, n), "server header for %llu: %zu bytes",
                  (unsigned long long)cases[i].len, n);
        CHECK_MSG(out[n] == 0xEE, "server header for %llu wrote past its length", (unsigned long long)cases[i].len);
    }
    /* FIN + opcode, unmasked, for each opcode the server sends. */
    const int ops[] = {WS_OP_TEXT, WS_OP_BINARY, WS_OP_CLOSE, WS_OP_PING, WS_OP_PONG};
    for (size_t i = 0; i < 5; i++) {
        uint8_t out[10];
        ws_frame_server_header(out, ops[i], 3);
        CHECK(out[0] == (0x80 | ops[i]) && out[1] == 3);
    }
    /* Round trip: a server header + a mask key, with the mask bit set, parses back to the length. */
    for (int it = 0; it < 2000; it++) {
        uint64_t len = it < 300 ? (uint64_t)it * 250 : rnd() >> (1 + rnd() % 63);
        uint8_t out[WS_MAX_HEADER];
        size_t n = ws_frame_server_header(out, WS_OP_BINARY, len);
        size_t want = len < 126 ? 2 : len <= 65535 ? 4 : 10;
        CHECK_MSG(n == want, "len %llu: %zu header bytes", (unsigned long long)len, n);
        out[1] |= 0x80;
        memcpy(out + n, "\1\2\3\4", 4);
        ws_frame_header h;
        int code;
        const char *why;
        CHECK_MSG(parse(out, n + 4, &h, &code, &why) == 1 && h.payload_len == len && h.header_len == n + 4,
                  "round trip of %llu", (unsigned long long)len);
    }
}

/* ---- close payloads --------------------------------------------------------------------------- */

static int ref_code_ok(int c) { /* RFC 6455 7.4.1/7.4.2 + the IANA registry (1012-1014) */
    if (c >= 3000 && c <= 4999) return 1;
    return c == 1000 || c == 1001 || c == 1002 || c == 1003 || (c >= 1007 && c <= 1014);
}

static int close_check(const uint8_t *p, size_t n, int *code, int *fail) {
    uint8_t *b = exact(p, n);
    *code = *fail = -7;
    int r = ws_close_payload_check(b, n, code, fail);
    free(b);
    return r;
}

static void test_close_payload(void) {
    int code, fail;
    CHECK(close_check(NULL, 0, &code, &fail) == 0 && code == 1005);
    const uint8_t one[1] = {0x03};
    CHECK(close_check(one, 1, &code, &fail) == -1 && fail == 1002);
    /* Every code, with and without a reason. */
    int bad = 0;
    for (int c = 0; c < 65536; c++) {
        uint8_t p[8] = {(uint8_t)(c >> 8), (uint8_t)c, 'b', 'y', 'e'};
        for (int with_reason = 0; with_reason < 2; with_reason++) {
            int r = close_check(p, with_reason ? 5 : 2, &code, &fail);
            int want = ref_code_ok(c) ? 0 : -1;
            if (r != want || (r == 0 && code != c) || (r < 0 && fail != 1002)) {
                if (bad++ < 10) fprintf(stderr, "  close code %d: got %d code %d fail %d\n", c, r, code, fail);
            }
        }
    }
    CHECK_MSG(bad == 0, "%d close codes judged wrongly", bad);
    const int refused[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        uint8_t p[2] = {(uint8_t)(refused[i] >> 8), (uint8_t)refused[i]};
        CHECK_MSG(close_check(p, 2, &code, &fail) == -1 && fail == 1002, "code %d must be refused", refused[i]);
    }
    const int accepted[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999};
    for (size_t i = 0; i < sizeof accepted / sizeof *accepted; i++) {
        uint8_t p[2] = {(uint8_t)(accepted[i] >> 8), (uint8_t)accepted[i]};
        CHECK_MSG(close_check(p, 2, &code, &fail) == 0 && code == accepted[i], "code %d must be accepted", accepted[i]);
    }
    /* The reason must be UTF-8: 1007 otherwise (a valid code is no excuse). */
    const struct {
        const char *r;
        size_t n;
        int ok;
    } reasons[] = {
        {"normal", 6, 1},
        {"\xc3\xa9t\xc3\xa9", 6, 1},            /* été */
        {"\xf0\x9f\x98\x80", 4, 1},             /* U+1F600 */
        {"\xff", 1, 0},
        {"ab\xc3", 3, 0},                       /* truncated */
        {"\xc0\xaf", 2, 0},                     /* overlong '/' */
        {"\xed\xa0\x80", 3, 0},                 /* surrogate */
        {"\xf4\x90\x80\x80", 4, 0},             /* > U+10FFFF */
        {"a\0b", 3, 1},                         /* NUL is valid UTF-8 */
    };
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++) {
        uint8_t p[16] = {0x03, 0xE8};
        memcpy(p + 2, reasons[i].r, reasons[i].n);
        int r = close_check(p, 2 + reasons[i].n, &code, &fail);
        if (reasons[i].ok) CHECK_MSG(r == 0 && code == 1000, "reason %zu accepted: %d", i, r);
        else CHECK_MSG(r == -1 && fail == 1007, "bad UTF-8 reason %zu: %d fail %d", i, r, fail);
    }
    /* An invalid code decides before the reason (1002, not 1007). */
    const uint8_t both[] = {0x03, 0xE7, 0xff};
    CHECK(close_check(both, 3, &code, &fail) == -1 && fail == 1002);

    /* ws_close_payload: code big-endian, reason cut at a character boundary to fit 125 bytes. */
    uint8_t out[WS_MAX_CONTROL + 8];
    memset(out, 0xEE, sizeof out);
    size_t n = ws_close_payload(out, 1009, "too big");
    CHECK(n == 9 && out[0] == 0x03 && out[1] == 0xF1 && !memcmp(out + 2, "too big", 7));
    CHECK(ws_close_payload(out, 1000, "") == 2);
    char ascii[300];
    memset(ascii, 'x', sizeof ascii - 1);
    ascii[sizeof ascii - 1] = 0;
    memset(out, 0xEE, sizeof out);
    CHECK(ws_close_payload(out, 1001, ascii) == WS_MAX_CONTROL && out[WS_MAX_CONTROL] == 0xEE);
    for (int width = 2; width <= 4; width++) {
        static const char *chars[] = {NULL, NULL, "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
        char r[400] = "";
        for (int pre = 0; pre < 4; pre++) {
            snprintf(r, sizeof r, "%.*s", pre, "abc");
            while (strlen(r) + 4 < sizeof r - 1) strcat(r, chars[width]);
            memset(out, 0xEE, sizeof out);
            n = ws_close_payload(out, 1000, r);
            CHECK_MSG(n <= WS_MAX_CONTROL && n > (size_t)(WS_MAX_CONTROL - width) && out[WS_MAX_CONTROL] == 0xEE,
                      "width %d pre %d: %zu bytes", width, pre, n);
            CHECK(close_check(out, n, &code, &fail) == 0 && code == 1000);
            CHECK(!memcmp(out + 2, r, n - 2));
        }
    }
}

/* ---- UTF-8 --------------------------------------------------------------------------------------- */

/* Reference: Unicode 15, Table 3-7 (well-formed UTF-8 byte sequences), applied byte range by
 * byte range. Returns the length of the well-formed sequence at s (0 when ill-formed). */
static size_t ref_seq(const uint8_t *s, size_t n) {
    static const struct {
        uint8_t lo[4], hi[4];
        int len;
    } rows[] = {
        {{0x00}, {0x7F}, 1},
        {{0xC2, 0x80}, {0xDF, 0xBF}, 2},
        {{0xE0, 0xA0, 0x80}, {0xE0, 0xBF, 0xBF}, 3},
        {{0xE1, 0x80, 0x80}, {0xEC, 0xBF, 0xBF}, 3},
        {{0xED, 0x80, 0x80}, {0xED, 0x9F, 0xBF}, 3},
        {{0xEE, 0x80, 0x80}, {0xEF, 0xBF, 0xBF}, 3},
        {{0xF0, 0x90, 0x80, 0x80}, {0xF0, 0xBF, 0xBF, 0xBF}, 4},
        {{0xF1, 0x80, 0x80, 0x80}, {0xF3, 0xBF, 0xBF, 0xBF}, 4},
        {{0xF4, 0x80, 0x80, 0x80}, {0xF4, 0x8F, 0xBF, 0xBF}, 4},
    };
    for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
        if (s[0] < rows[r].lo[0] || s[0] > rows[r].hi[0]) continue;
        if ((size_t)rows[r].len > n) return 0;
        for (int k = 1; k < rows[r].len; k++)
            if (s[k] < rows[r].lo[k] || s[k] > rows[r].hi[k]) return 0;
        return (size_t)rows[r].len;
    }
    return 0;
}

static int ref_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t k = ref_seq(s + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

static int impl_valid(const uint8_t *s, size_t n) {
    uint8_t *b = exact(s, n);
    int r = utf8_valid(b, n);
    free(b);
    return r;
}

/* Encodes code point cp (any value below 0x110000 that is not a surrogate); returns its length. */
static size_t encode(uint32_t cp, uint8_t *o) {
    if (cp < 0x80) return o[0] = (uint8_t)cp, 1;
    if (cp < 0x800) return o[0] = (uint8_t)(0xC0 | cp >> 6), o[1] = (uint8_t)(0x80 | (cp & 63)), 2;
    if (cp < 0x10000)
        return o[0] = (uint8_t)(0xE0 | cp >> 12), o[1] = (uint8_t)(0x80 | ((cp >> 6) & 63)),
               o[2] = (uint8_t)(0x80 | (cp & 63)), 3;
    return o[0] = (uint8_t)(0xF0 | cp >> 18), o[1] = (uint8_t)(0x80 | ((cp >> 12) & 63)),
           o[2] = (uint8_t)(0x80 | ((cp >> 6) & 63)), o[3] = (uint8_t)(0x80 | (cp & 63)), 4;
}

static uint32_t random_cp(void) {
    for (;;) {
        uint32_t cp;
        switch (rnd() % 5) {
        case 0: cp = (uint32_t)(rnd() % 0x80); break;
        case 1: cp = 0x80 + (uint32_t)(rnd() % 0x780); break;
        case 2: cp = 0x800 + (uint32_t)(rnd() % 0xF800); break;
        case 3: cp = 0x10000 + (uint32_t)(rnd() % 0x100000); break;
        default: { /* the edges */
            static const uint32_t e[] = {0, 0x7F, 0x80, 0x7FF, 0x800, 0xFFF, 0x1000, 0xD7FF, 0xE000, 0xFFFD,
                                         0xFFFF, 0x10000, 0x3FFFF, 0x40000, 0xFFFFF, 0x100000, 0x10FFFF};
            cp = e[rnd() % (sizeof e / sizeof *e)];
        }
        }
        if (cp < 0xD800 || cp > 0xDFFF) return cp;
    }
}

static void test_utf8_exhaustive(void) {
    int bad = 0;
    uint8_t s[4];
    /* Every 1-, 2- and 3-byte string, alone. */
    for (uint32_t v = 0; v < 256; v++) {
        s[0] = (uint8_t)v;
        if (impl_valid(s, 1) != ref_valid(s, 1) && bad++ < 10) fprintf(stderr, "  %02x\n", v);
    }
    for (uint32_t v = 0; v < 65536; v++) {
        s[0] = (uint8_t)(v >> 8), s[1] = (uint8_t)v;
        if (impl_valid(s, 2) != ref_valid(s, 2) && bad++ < 10) fprintf(stderr, "  %02x %02x\n", s[0], s[1]);
    }
    for (uint32_t v = 0; v < (1u << 24); v++) {
        s[0] = (uint8_t)(v >> 16), s[1] = (uint8_t)(v >> 8), s[2] = (uint8_t)v;
        /* no exact-size copy here (16M mallocs): a 4-byte stack array, length 3 */
        if (utf8_valid(s, 3) != ref_valid(s, 3) && bad++ < 10)
            fprintf(stderr, "  %02x %02x %02x\n", s[0], s[1], s[2]);
    }
    /* 4-byte strings: every lead E0-FF x every second byte x edge values of the rest. */
    const uint8_t edge[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xE0, 0xF0, 0xFF};
    for (int a = 0xE0; a < 256; a++)
        for (int b = 0; b < 256; b++)
            for (size_t c = 0; c < sizeof edge; c++)
                for (size_t d = 0; d < sizeof edge; d++) {
                    s[0] = (uint8_t)a, s[1] = (uint8_t)b, s[2] = edge[c], s[3] = edge[d];
                    if (utf8_valid(s, 4) != ref_valid(s, 4) && bad++ < 10)
                        fprintf(stderr, "  %02x %02x %02x %02x\n", s[0], s[1], s[2], s[3]);
                }
    CHECK_MSG(bad == 0, "%d short strings judged differently from the reference", bad);
}

static void test_utf8_named(void) {
    struct {
        const char *s;
        size_t n;
        int ok;
        const char *what;
    } cases[] = {
        {"", 0, 1, "empty"},
        {"plain ascii text, longer than eight bytes", 41, 1, "ascii"},
        {"\xc2\x80", 2, 1, "U+0080"},
        {"\xdf\xbf", 2, 1, "U+07FF"},
        {"\xe0\xa0\x80", 3, 1, "U+0800"},
        {"\xed\x9f\xbf", 3, 1, "U+D7FF"},
        {"\xee\x80\x80", 3, 1, "U+E000"},
        {"\xef\xbf\xbf", 3, 1, "U+FFFF"},
        {"\xf0\x90\x80\x80", 4, 1, "U+10000"},
        {"\xf4\x8f\xbf\xbf", 4, 1, "U+10FFFF"},
        {"\xc0\x80", 2, 0, "overlong NUL"},
        {"\xc1\xbf", 2, 0, "overlong U+007F"},
        {"\xe0\x80\x80", 3, 0, "overlong 3-byte NUL"},
        {"\xe0\x9f\xbf", 3, 0, "overlong U+07FF"},
        {"\xf0\x80\x80\x80", 4, 0, "overlong 4-byte NUL"},
        {"\xf0\x8f\xbf\xbf", 4, 0, "overlong U+FFFF"},
        {"\xed\xa0\x80", 3, 0, "surrogate D800"},
        {"\xed\xbf\xbf", 3, 0, "surrogate DFFF"},
        {"\xed\xa0\xbd\xed\xb8\x80", 6, 0, "surrogate pair (CESU-8)"},
        {"\xf4\x90\x80\x80", 4, 0, "U+110000"},
        {"\xf5\x80\x80\x80", 4, 0, "lead F5"},
        {"\xf7\xbf\xbf\xbf", 4, 0, "U+1FFFFF"},
        {"\xf8\x88\x80\x80\x80", 5, 0, "5-byte form"},
        {"\xfc\x84\x80\x80\x80\x80", 6, 0, "6-byte form"},
        {"\xfe", 1, 0, "FE"},
        {"\xff", 1, 0, "FF"},
        {"\x80", 1, 0, "lone continuation"},
        {"a\xbf", 2, 0, "continuation after ascii"},
        {"\xc3", 1, 0, "truncated 2-byte"},
        {"\xe2\x82", 2, 0, "truncated 3-byte"},
        {"\xf0\x9f\x98", 3, 0, "truncated 4-byte"},
        {"\xe2\x82z", 3, 0, "3-byte cut by ascii"},
        {"\xf0\x9f\x98z", 4, 0, "4-byte cut by ascii"},
        {"abcdefgh\xc3", 9, 0, "truncated after an 8-byte ascii run"},
        {"abcdefg\xe2\x82\xac", 10, 1, "euro after 7 ascii"},
        {"\xe2\x82\xac" "abcdefghijklmnop", 19, 1, "euro then ascii run"},
        {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11, 1, "kosme"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int got = impl_valid((const uint8_t *)cases[i].s, cases[i].n);
        CHECK_MSG(got == cases[i].ok, "%s: utf8_valid %d", cases[i].what, got);
        CHECK_MSG(ref_valid((const uint8_t *)cases[i].s, cases[i].n) == cases[i].ok, "reference on %s", cases[i].what);
    }
}

/* Random strings: mostly valid text with a corruption now and then, at every alignment of the
 * 8-byte ASCII fast path; and raw random bytes. */
static void test_utf8_random(void) {
    enum { MAXN = 300 };
    uint8_t buf[MAXN + 8];
    int bad = 0, valid_seen = 0, invalid_seen = 0;
    for (int it = 0; it < 300000; it++) {
        size_t n = 0, target = (size_t)(rnd() % MAXN);
        int mode = it % 4;
        if (mode == 3) {
            for (n = 0; n < target % 24; n++) buf[n] = (uint8_t)rnd();
        } else {
            while (n + 4 < target) {
                uint32_t cp = (mode == 0 && rnd() % 4) ? (uint32_t)(0x20 + rnd() % 0x5f) : random_cp();
                n += encode(cp, buf + n);
            }
            if (mode >= 1 && n) { /* corrupt: flip, truncate, or insert a hostile byte */
                size_t at = (size_t)(rnd() % n);
                switch (rnd() % 3) {
                case 0: buf[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
                case 1: n = at; break;
                default: buf[at] = (uint8_t)(0x80 + rnd() % 0x80); break;
                }
            }
        }
        int want = ref_valid(buf, n), got = impl_valid(buf, n);
        valid_seen += want;
        invalid_seen += !want;
        if (want != got && bad++ < 10) {
            fprintf(stderr, "  random string of %zu bytes: utf8_valid %d, reference %d:", n, got, want);
            for (size_t k = 0; k < n && k < 40; k++) fprintf(stderr, " %02x", buf[k]);
            fputc('\n', stderr);
        }
    }
    CHECK_MSG(bad == 0, "%d random strings judged differently from the reference", bad);
    CHECK(valid_seen > 10000 && invalid_seen > 10000);
}

/* utf8_prefix(s, n) on a valid string: the largest character boundary <= n. */
static void test_utf8_prefix(void) {
    for (int it = 0; it < 20000; it++) {
        uint8_t s[200];
        size_t bounds[200], nb = 0, n = 0;
        bounds[nb++] = 0;
        size_t target = (size_t)(rnd() % 190);
        while (n + 4 <= target) {
            n += encode(random_cp(), s + n);
            bounds[nb++] = n;
        }
        for (size_t cut = 0; cut <= n; cut++) {
            size_t want = 0;
            for (size_t b = 0; b < nb; b++)
                if (bounds[b] <= cut) want = bounds[b];
            uint8_t *e = exact(s, cut);
            size_t got = utf8_prefix(e, cut);
            free(e);
            if (got != want) {
                CHECK_MSG(0, "utf8_prefix(%zu of %zu bytes) = %zu, want %zu", cut, n, got, want);
                return;
            }
            CHECK(ref_valid(s, got));
        }
    }
    CHECK(utf8_prefix((const uint8_t *)"", 0) == 0);
    CHECK(utf8_prefix((const uint8_t *)"abc", 3) == 3);
    CHECK(utf8_prefix((const uint8_t *)"ab\xe2\x82", 4) == 2);
    CHECK(utf8_prefix((const uint8_t *)"ab\xe2", 3) == 2);
    CHECK(utf8_prefix((const uint8_t *)"ab\xe2\x82\xac", 5) == 5);
    CHECK(utf8_prefix((const uint8_t *)"\xf0\x9f\x98\x80", 3) == 0);
    CHECK(utf8_prefix((const uint8_t *)"\xf0\x9f\x98\x80", 4) == 4);
    /* Hostile input must not read before the start: a run of continuation bytes. */
    const uint8_t conts[8] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80};
    for (size_t k = 0; k <= 8; k++) {
        uint8_t *e = exact(conts, k);
        size_t got = utf8_prefix(e, k);
        free(e);
        CHECK(got <= k);
    }
}

/* A NULL reason is allowed (no reason text); under make SAN=1 UBSan checks that no memcpy from
 * NULL happens on the way. */
static void test_close_payload_null_reason(void) {
    uint8_t out[WS_MAX_CONTROL];
    CHECK(ws_close_payload(out, 1000, NULL) == 2 && out[0] == 0x03 && out[1] == 0xE8);
}

int main(void) {
    test_header_exhaustive();
    test_header_named();
    test_header_partial();
    test_header_fuzz();
    test_unmask();
    test_server_header();
    test_close_payload();
    test_utf8_exhaustive();
    test_utf8_named();
    test_utf8_random();
    test_utf8_prefix();
    test_close_payload_null_reason();
    CHECK_DONE("test_ws_frame");
}
