#include "frontend/ws_frame.h"

#include <string.h>

int ws_frame_parse_header(const uint8_t *buf, size_t len, ws_frame_header *h, int *close_code,
                          const char **why) {
    *close_code = WS_CLOSE_PROTOCOL_ERROR;
    if (len < 2) return 0;
    int fin = buf[0] & 0x80, rsv = buf[0] & 0x70, opcode = buf[0] & 0x0f;
    int masked = buf[1] & 0x80;
    uint64_t plen = buf[1] & 0x7f;
    /* Everything decidable from the first two bytes is decided before waiting for more. */
    if (rsv) {
        *why = "reserved bits set without a negotiated extension";
        return -1;
    }
    int control = opcode >= 0x8;
    if (!(opcode <= WS_OP_BINARY || (opcode >= WS_OP_CLOSE && opcode <= WS_OP_PONG))) {
        *why = "unknown opcode";
        return -1;
    }
    if (!masked) {
        *why = "client frames must be masked";
        return -1;
    }
    if (control && (!fin || plen > WS_MAX_CONTROL)) {
        *why = !fin ? "fragmented control frame" : "control frame longer than 125 bytes";
        return -1;
    }
    size_t need = 2 + (plen == 126 ? 2 : plen == 127 ? 8 : 0) + 4;
    if (len < need) return 0;
    size_t pos = 2;
    if (plen == 126) {
        plen = (uint64_t)buf[2] << 8 | buf[3];
        pos = 4;
    } else if (plen == 127) {
        plen = 0;
        for (int i = 0; i < 8; i++) plen = plen << 8 | buf[2 + i];
        pos = 10;
        if (plen >> 63) {
            *why = "payload length with the most significant bit set";
            return -1;
        }
    }
    memcpy(h->mask, buf + pos, 4);
    h->fin = fin != 0;
    h->opcode = opcode;
    h->payload_len = plen;
    h->header_len = pos + 4;
    return 1;
}

void ws_frame_unmask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t offset) {
    size_t i = 0;
    /* Word at a time once aligned to the mask's period: this runs over every uploaded byte. */
    while (i < n && ((offset + i) & 3)) {
        data[i] ^= mask[(offset + i) & 3];
        i++;
    }
    uint32_t m32;
    memcpy(&m32, mask, 4);
    uint64_t m64 = (uint64_t)m32 << 32 | m32;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, data + i, 8);
        w ^= m64;
        memcpy(data + i, &w, 8);
    }
    for (; i < n; i++) data[i] ^= mask[(offset + i) & 3];
}

size_t ws_frame_server_header(uint8_t *out, int opcode, uint64_t len) {
    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/* Codes a peer may send (RFC 6455 7.4.1-7.4.2): 1004-1006 and 1015 are reserved for local use. */
static int close_code_valid(int c) {
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

int ws_close_payload_check(const uint8_t *p, size_t n, int *code, int *fail_code) {
    if (n == 0) {
        *code = 1005; /* "no status received" */
        return 0;
    }
    if (n == 1) {
        *fail_code = WS_CLOSE_PROTOCOL_ERROR;
        return -1;
    }
    int c = p[0] << 8 | p[1];
    if (!close_code_valid(c)) {
        *fail_code = WS_CLOSE_PROTOCOL_ERROR;
        return -1;
    }
    if (!utf8_valid(p + 2, n - 2)) {
        *fail_code = WS_CLOSE_INVALID_DATA;
        return -1;
    }
    *code = c;
    return 0;
}

size_t ws_close_payload(uint8_t *out, int code, const char *reason) {
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    size_t r = reason ? strlen(reason) : 0;
    if (r > WS_MAX_CONTROL - 2) r = utf8_prefix((const uint8_t *)reason, WS_MAX_CONTROL - 2);
    if (r) memcpy(out + 2, reason, r);
    return r + 2;
}

int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII runs, eight bytes at a time: JSON messages are almost all ASCII. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) k = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef) k = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4) k = 3, cp = c & 0x07, min = 0x10000;
        else return 0;
        if (n - i <= k) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += k + 1;
    }
    return 1;
}

size_t utf8_prefix(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    size_t i = n;
    /* Step back over continuation bytes to the start of the last character. */
    size_t back = 0;
    while (i > 0 && back < 4 && (s[i - 1] & 0xc0) == 0x80) i--, back++;
    if (i == 0) return 0;
    uint8_t lead = s[i - 1];
    size_t want = lead < 0x80 ? 0 : lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : lead >= 0xc0 ? 1 : 0;
    return back == want ? n : i - 1;
}
