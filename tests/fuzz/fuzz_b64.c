/* Fuzzes common/b64.c (b64_decode: every base64 image upload goes through it; b64_encode: every
 * result). Invariants:
 *   - the decoded length never exceeds b64_decoded_max (the buffer callers allocate: it is sized
 *     exactly, so ASan sees any write past it), and a refusal always says why;
 *   - what decodes re-encodes to the input's alphabet characters, padded, except for the unused
 *     low bits of a final group (which the decoder ignores, as RFC 4648 allows); so decoding the
 *     re-encoding gives the same bytes;
 *   - any bytes encode to b64_encoded_len characters that decode back to them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/b64.h"
#include "fuzz_util.h"

static int is_b64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* The 6-bit value of an alphabet character. */
static int sixbit(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : 63;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *src = (const char *)data;
    size_t cap = b64_decoded_max(size);
    uint8_t *out = malloc(cap ? cap : 1);
    FUZZ_ASSERT(out);
    char err[128] = "";
    long n = b64_decode(src, size, out, err, sizeof err);
    if (n < 0) {
        FUZZ_ASSERT(n == -1 && err[0] != 0);
    } else {
        FUZZ_ASSERT((size_t)n <= cap);
        size_t elen = b64_encoded_len((size_t)n);
        char *enc = malloc(elen ? elen : 1);
        FUZZ_ASSERT(enc);
        FUZZ_ASSERT(b64_encode(out, (size_t)n, enc) == elen);
        /* The input's alphabet characters, in order, are the encoding's data characters; the
         * last one may differ only in the low bits no byte uses (6, 4 or 2 bits carried for 0, 3
         * or 2 characters in the last group). Then padding to a whole group. */
        char *chars = malloc(size ? size : 1);
        FUZZ_ASSERT(chars);
        size_t k = 0;
        for (size_t i = 0; i < size; i++)
            if (is_b64_char(src[i])) chars[k++] = src[i];
        FUZZ_ASSERT(k <= elen && k % 4 != 1);
        for (size_t j = 0; j + 1 < k; j++) FUZZ_ASSERT(enc[j] == chars[j]);
        if (k) {
            static const int used_bits[4] = {6, 0, 2, 4};
            int drop = 6 - used_bits[k % 4];
            FUZZ_ASSERT(sixbit(enc[k - 1]) >> drop == sixbit(chars[k - 1]) >> drop);
        }
        for (size_t j = k; j < elen; j++) FUZZ_ASSERT(enc[j] == '=');
        FUZZ_ASSERT(elen - k <= 2);
        free(chars);
        uint8_t *again = malloc(b64_decoded_max(elen));
        FUZZ_ASSERT(again);
        FUZZ_ASSERT(b64_decode(enc, elen, again, err, sizeof err) == n);
        FUZZ_ASSERT(n == 0 || memcmp(again, out, (size_t)n) == 0);
        free(again);
        free(enc);
    }
    free(out);

    /* The other direction, on the raw bytes. */
    size_t elen = b64_encoded_len(size);
    char *enc = malloc(elen ? elen : 1);
    FUZZ_ASSERT(enc);
    FUZZ_ASSERT(b64_encode(data, size, enc) == elen);
    uint8_t *back = malloc(b64_decoded_max(elen));
    FUZZ_ASSERT(back);
    FUZZ_ASSERT(b64_decode(enc, elen, back, err, sizeof err) == (long)size);
    FUZZ_ASSERT(size == 0 || memcmp(back, data, size) == 0);
    free(back);
    free(enc);
    return 0;
}
