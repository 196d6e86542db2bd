/* Fuzzes frontend/ws_frame.c, the RFC 6455 pieces the front's connection loop reads client bytes
 * with. The loop's frame reader itself (net_loop.c's ws_process) is static and owns sockets, so
 * this harness runs a model of it over the input as a client's byte stream: headers parsed from
 * a buffer that may hold part of one (ws_frame_parse_header), payloads unmasked piece by piece at
 * their offset (ws_frame_unmask), fragmented messages assembled with the same continuation rules
 * and a message limit checked from the header, control payloads into a 125-byte buffer, close
 * payloads checked (ws_close_payload_check) and answered (ws_close_payload), text messages
 * checked as UTF-8 (utf8_valid, utf8_prefix). The stream is read twice: whole, and in chunks of
 * 1-8 bytes (sizes from the first input byte), as a slow client would send it.
 * Invariants:
 *   - a parsed header is within the bytes given and at most 14 bytes, 6/8/14 by its length form;
 *     every shorter prefix of it asks for more bytes (returns 0); control frames are final and
 *     at most 125 bytes; payload lengths are below 2^63;
 *   - unmasking a piece at an offset equals XOR with the mask byte of each absolute position;
 *   - a server header for the same opcode and length, masked, parses back to them;
 *   - utf8_valid agrees with an independent validator written from RFC 3629's table, and
 *     utf8_prefix cuts a valid text to a valid prefix less than 4 bytes shorter;
 *   - a close payload we build from a valid received one is itself valid;
 *   - both readings produce the same events (messages, controls, failures with their codes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ws_frame.h"
#include "fuzz_util.h"

#define MAX_MESSAGE 65536 /* the loop's --max-message-mb, small so the 1009 path is reached */

/* RFC 3629 section 4's table, byte by byte. */
static int utf8_reference(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint8_t lo = 0x80, hi = 0xbf;
        size_t k;
        if (c <= 0x7f) k = 0;
        else if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c == 0xe0) k = 2, lo = 0xa0;
        else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) k = 2;
        else if (c == 0xed) k = 2, hi = 0x9f;
        else if (c == 0xf0) k = 3, lo = 0x90;
        else if (c >= 0xf1 && c <= 0xf3) k = 3;
        else if (c == 0xf4) k = 3, hi = 0x8f;
        else return 0;
        if (n - i - 1 < k) return 0;
        for (size_t j = 1; j <= k; j++) {
            uint8_t b = s[i + j];
            if (j == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return 0;
        }
        i += k + 1;
    }
    return 1;
}

static void check_utf8(const uint8_t *s, size_t n) {
    int valid = utf8_valid(s, n);
    FUZZ_ASSERT(valid == utf8_reference(s, n));
    if (!valid) return;
    size_t cuts[3] = {n, n / 2, n ? n - 1 : 0};
    for (int i = 0; i < 3; i++) {
        size_t p = utf8_prefix(s, cuts[i]);
        FUZZ_ASSERT(p <= cuts[i] && p + 3 >= cuts[i] && utf8_valid(s, p));
    }
}

static uint64_t fold(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

typedef struct {
    uint8_t *rbuf; /* received, not yet consumed */
    size_t rlen;
    int in_frame, stopped;
    ws_frame_header fh;
    uint64_t frame_done;
    int mop, discard;     /* opcode of the message being assembled (0: none) */
    uint8_t *msg;
    size_t mlen;
    uint8_t *ctl;         /* exactly WS_MAX_CONTROL bytes: ASan sees any overrun */
    uint64_t events;      /* a hash of everything that happened, in order */
} reader;

static void event(reader *r, int kind, const void *p, size_t n) {
    r->events = fold(r->events, &kind, sizeof kind);
    r->events = fold(r->events, &n, sizeof n);
    r->events = fold(r->events, p, n);
}

static void check_header(const uint8_t *p, size_t avail, const ws_frame_header *h) {
    FUZZ_ASSERT(h->header_len <= avail && h->header_len <= WS_MAX_HEADER);
    uint8_t form = p[1] & 0x7f;
    FUZZ_ASSERT(h->header_len == (form == 127 ? 14u : form == 126 ? 8u : 6u));
    FUZZ_ASSERT(h->payload_len < (1ull << 63));
    FUZZ_ASSERT(form >= 126 || h->payload_len == form);
    FUZZ_ASSERT(!memcmp(h->mask, p + h->header_len - 4, 4));
    FUZZ_ASSERT(h->opcode == (p[0] & 0x0f) && h->fin == !!(p[0] & 0x80));
    if (h->opcode >= WS_OP_CLOSE) FUZZ_ASSERT(h->fin && h->payload_len <= WS_MAX_CONTROL);
    for (size_t k = 0; k < h->header_len; k++) {
        ws_frame_header part;
        int code;
        const char *why;
        FUZZ_ASSERT(ws_frame_parse_header(p, k, &part, &code, &why) == 0);
    }
    /* The server's header for the same frame, masked as a client's, reads back the same. */
    uint8_t back[WS_MAX_HEADER];
    size_t n = ws_frame_server_header(back, h->opcode, h->payload_len);
    /* Ours is the minimal form; a client's may be longer (126 or 127 announcing a short payload,
     * which RFC 6455 forbids but the parser accepts: the length is read correctly either way). */
    FUZZ_ASSERT(n == (h->payload_len < 126 ? 2u : h->payload_len <= 0xffff ? 4u : 10u) && n <= h->header_len - 4);
    back[1] |= 0x80;
    memcpy(back + n, h->mask, 4);
    ws_frame_header again;
    int code;
    const char *why;
    FUZZ_ASSERT(ws_frame_parse_header(back, n + 4, &again, &code, &why) == 1);
    FUZZ_ASSERT(again.opcode == h->opcode && again.payload_len == h->payload_len && again.header_len == n + 4);
}

static void unmask_checked(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4], uint64_t offset) {
    memcpy(dst, src, n);
    ws_frame_unmask(dst, n, mask, offset);
    for (size_t i = 0; i < n; i++) FUZZ_ASSERT(dst[i] == (uint8_t)(src[i] ^ mask[(offset + i) & 3]));
}

static void frame_complete(reader *r) {
    r->in_frame = 0;
    int op = r->fh.opcode;
    size_t n = (size_t)r->fh.payload_len;
    if (op == WS_OP_CLOSE) {
        int code = 0, fail = 0;
        if (ws_close_payload_check(r->ctl, n, &code, &fail)) {
            FUZZ_ASSERT(fail == WS_CLOSE_PROTOCOL_ERROR || fail == WS_CLOSE_INVALID_DATA);
            event(r, 'F', &fail, sizeof fail);
        } else {
            /* Answer with the same code and reason, as a NUL-terminated string. */
            char reason[WS_MAX_CONTROL + 1];
            size_t rl = n > 2 ? n - 2 : 0;
            memcpy(reason, r->ctl + 2, rl);
            reason[rl] = 0;
            uint8_t out[WS_MAX_CONTROL];
            size_t len = ws_close_payload(out, code == 1005 ? WS_CLOSE_NORMAL : code, reason);
            FUZZ_ASSERT(len >= 2 && len <= WS_MAX_CONTROL);
            int c2, f2;
            FUZZ_ASSERT(ws_close_payload_check(out, len, &c2, &f2) == 0);
            event(r, 'C', &code, sizeof code);
        }
        r->stopped = 1;
        return;
    }
    if (op >= WS_OP_CLOSE) {
        event(r, op, r->ctl, n);
        return;
    }
    if (r->discard || !r->fh.fin) return;
    if (r->mop == WS_OP_TEXT) {
        check_utf8(r->msg, r->mlen);
        if (!utf8_valid(r->msg, r->mlen)) {
            int fail = WS_CLOSE_INVALID_DATA;
            event(r, 'F', &fail, sizeof fail);
            r->stopped = 1;
            return;
        }
    }
    event(r, r->mop, r->msg, r->mlen);
    free(r->msg);
    r->msg = NULL;
    r->mlen = 0;
    r->mop = 0;
}

/* ws_process: frames out of rbuf until it runs dry or the connection fails. */
static void process(reader *r) {
    size_t pos = 0;
    while (!r->stopped) {
        uint8_t *p = r->rbuf + pos;
        size_t avail = r->rlen - pos;
        if (!r->in_frame) {
            int code = 0;
            const char *why = NULL;
            int hr = ws_frame_parse_header(p, avail, &r->fh, &code, &why);
            if (hr == 0) {
                FUZZ_ASSERT(avail < WS_MAX_HEADER);
                break;
            }
            if (hr < 0) {
                FUZZ_ASSERT(code == WS_CLOSE_PROTOCOL_ERROR && why && *why);
                event(r, 'F', &code, sizeof code);
                r->stopped = 1;
                break;
            }
            FUZZ_ASSERT(hr == 1);
            check_header(p, avail, &r->fh);
            pos += r->fh.header_len;
            r->in_frame = 1;
            r->frame_done = 0;
            r->discard = 0;
            int op = r->fh.opcode;
            if (op < WS_OP_CLOSE) {
                if (op == WS_OP_CONTINUATION ? r->mop == 0 : r->mop != 0) {
                    int fail = WS_CLOSE_PROTOCOL_ERROR;
                    event(r, 'F', &fail, sizeof fail);
                    r->stopped = 1;
                    break;
                }
                if (r->mlen + r->fh.payload_len > MAX_MESSAGE) {
                    int fail = WS_CLOSE_TOO_BIG;
                    event(r, 'F', &fail, sizeof fail);
                    r->stopped = 1;
                    break;
                }
                if (op != WS_OP_CONTINUATION) r->mop = op;
                uint8_t *grown = realloc(r->msg, r->mlen + (size_t)r->fh.payload_len + 1);
                FUZZ_ASSERT(grown);
                r->msg = grown;
            }
            if (r->fh.payload_len == 0) frame_complete(r);
            continue;
        }
        if (!avail) break;
        uint64_t left = r->fh.payload_len - r->frame_done;
        size_t take = avail < left ? avail : (size_t)left;
        if (r->fh.opcode >= WS_OP_CLOSE)
            unmask_checked(r->ctl + r->frame_done, p, take, r->fh.mask, r->frame_done);
        else {
            unmask_checked(r->msg + r->mlen, p, take, r->fh.mask, r->frame_done);
            r->mlen += take;
        }
        pos += take;
        r->frame_done += take;
        if (r->frame_done == r->fh.payload_len) frame_complete(r);
    }
    memmove(r->rbuf, r->rbuf + pos, r->rlen - pos);
    r->rlen -= pos;
}

static uint64_t read_stream(const uint8_t *data, size_t size, size_t chunk) {
    reader r = {0};
    r.events = 14695981039346656037ull;
    r.rbuf = malloc(size ? size : 1);
    r.ctl = malloc(WS_MAX_CONTROL);
    FUZZ_ASSERT(r.rbuf && r.ctl);
    for (size_t off = 0; off < size && !r.stopped; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        memcpy(r.rbuf + r.rlen, data + off, n);
        r.rlen += n;
        process(&r);
    }
    free(r.rbuf);
    free(r.ctl);
    free(r.msg);
    return r.events;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t whole = read_stream(data, size, size ? size : 1);
    uint64_t trickled = read_stream(data, size, size ? 1 + data[0] % 8 : 1);
    FUZZ_ASSERT(whole == trickled);
    /* The validator on the raw bytes too, not only on assembled text messages. */
    check_utf8(data, size);
    return 0;
}
