/* Standard base64 (RFC 4648, '+/' alphabet, '=' padding). */
#ifndef DA3_B64_H
#define DA3_B64_H

#include <stddef.h>
#include <stdint.h>

/* Encoded length for n input bytes (no terminator). */
size_t b64_encoded_len(size_t n);

/* Encodes n bytes into dst (at least b64_encoded_len(n) bytes); returns the length written. */
size_t b64_encode(const uint8_t *src, size_t n, char *dst);

/* Upper bound of the decoded length of n characters. */
size_t b64_decoded_max(size_t n);

/* Decodes n characters into dst (at least b64_decoded_max(n)). ASCII whitespace is skipped;
 * padding is optional at the end. Returns the decoded length, or -1 on a character outside the
 * alphabet, misplaced padding or an impossible length (with a reason in err). */
long b64_decode(const char *src, size_t n, uint8_t *dst, char *err, size_t errlen);

#endif
