#include "common/b64.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t b64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }

size_t b64_encode(const uint8_t *src, size_t n, char *dst) {
    char *out = dst;
    size_t i = 0;
    /* Whole 3-byte groups first: the hot loop has no branches on the tail. */
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        out[0] = b64_alphabet[v >> 18];
        out[1] = b64_alphabet[(v >> 12) & 63];
        out[2] = b64_alphabet[(v >> 6) & 63];
        out[3] = b64_alphabet[v & 63];
        out += 4;
    }
    if (i < n) {
        uint32_t v = (uint32_t)src[i] << 16;
        if (i + 1 < n) v |= (uint32_t)src[i + 1] << 8;
        out[0] = b64_alphabet[v >> 18];
        out[1] = b64_alphabet[(v >> 12) & 63];
        out[2] = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        out[3] = '=';
        out += 4;
    }
    return (size_t)(out - dst);
}

size_t b64_decoded_max(size_t n) { return n / 4 * 3 + 3; }

/* 0..63 for alphabet characters, 64 for whitespace, 65 for '=', 255 for anything else. */
static uint8_t b64_table[256];
static pthread_once_t b64_table_once = PTHREAD_ONCE_INIT;
static void b64_table_fill(void) {
    memset(b64_table, 255, sizeof b64_table);
    for (int i = 0; i < 64; i++) b64_table[(uint8_t)b64_alphabet[i]] = (uint8_t)i;
    b64_table[' '] = b64_table['\n'] = b64_table['\r'] = b64_table['\t'] = 64;
    b64_table['='] = 65;
}
static void b64_table_init(void) { pthread_once(&b64_table_once, b64_table_fill); }

long b64_decode(const char *src, size_t n, uint8_t *dst, char *err, size_t errlen) {
    b64_table_init();
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    size_t out = 0, chars = 0, i = 0;
    /* Fast path: whole groups of 4 alphabet characters (uploads are one long unbroken run);
     * the general loop below takes over at the first whitespace, padding or bad character. */
    for (; i + 4 <= n; i += 4) {
        uint32_t a = b64_table[(uint8_t)src[i]], b = b64_table[(uint8_t)src[i + 1]],
                 c = b64_table[(uint8_t)src[i + 2]], d = b64_table[(uint8_t)src[i + 3]];
        if ((a | b | c | d) >= 64) break;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        dst[out] = (uint8_t)(v >> 16);
        dst[out + 1] = (uint8_t)(v >> 8);
        dst[out + 2] = (uint8_t)v;
        out += 3;
        chars += 4;
    }
    for (; i < n; i++) {
        uint8_t c = b64_table[(uint8_t)src[i]];
        if (c < 64) {
            if (pad) {
                snprintf(err, errlen, "invalid base64: data after '=' padding at offset %zu", i);
                return -1;
            }
            acc = acc << 6 | c;
            bits += 6;
            chars++;
            if (bits >= 8) {
                bits -= 8;
                dst[out++] = (uint8_t)(acc >> bits);
            }
        } else if (c == 65) {
            pad++;
        } else if (c != 64) {
            snprintf(err, errlen, "invalid base64: unexpected character 0x%02x at offset %zu",
                     (uint8_t)src[i], i);
            return -1;
        }
    }
    /* A lone trailing 6-bit group cannot encode a byte; more than 2 '=' is malformed. */
    if (chars % 4 == 1 || pad > 2 || (pad && (chars + (size_t)pad) % 4 != 0)) {
        snprintf(err, errlen, "invalid base64: bad length or padding");
        return -1;
    }
    return (long)out;
}
