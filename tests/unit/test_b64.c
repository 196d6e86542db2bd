/* base64: RFC 4648 vectors, round trips of every length, and rejection of malformed input. */
#include <string.h>

#include "common/b64.h"
#include "tests/unit/check.h"

static void vector(const char *plain, const char *encoded) {
    char out[64];
    size_t n = b64_encode((const uint8_t *)plain, strlen(plain), out);
    CHECK_MSG(n == strlen(encoded) && !memcmp(out, encoded, n), "encode '%s'", plain);
    uint8_t back[64];
    char err[128];
    long m = b64_decode(encoded, strlen(encoded), back, err, sizeof err);
    CHECK_MSG(m == (long)strlen(plain) && !memcmp(back, plain, (size_t)m), "decode '%s'", encoded);
}

static void rejects(const char *text, const char *why) {
    uint8_t out[64];
    char err[128] = "";
    CHECK_MSG(b64_decode(text, strlen(text), out, err, sizeof err) < 0, "should reject %s (%s)", text, why);
    CHECK_MSG(strstr(err, "invalid base64") != NULL, "message for %s: %s", text, err);
}

int main(void) {
    vector("", "");
    vector("f", "Zg==");
    vector("fo", "Zm8=");
    vector("foo", "Zm9v");
    vector("foob", "Zm9vYg==");
    vector("fooba", "Zm9vYmE=");
    vector("foobar", "Zm9vYmFy");

    uint8_t buf[1024], back[1100];
    char enc[1400], err[128];
    for (int i = 0; i < 1024; i++) buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t n = 0; n <= 300; n++) {
        size_t e = b64_encode(buf, n, enc);
        CHECK(e == b64_encoded_len(n));
        long d = b64_decode(enc, e, back, err, sizeof err);
        CHECK_MSG(d == (long)n && !memcmp(back, buf, n), "round trip length %zu", n);
    }

    /* Unpadded input and embedded whitespace (MIME line breaks) are accepted. */
    uint8_t out[16];
    CHECK(b64_decode("Zm9vYg", 6, out, err, sizeof err) == 4 && !memcmp(out, "foob", 4));
    CHECK(b64_decode("Zm9v\r\nYmFy", 10, out, err, sizeof err) == 6 && !memcmp(out, "foobar", 6));

    rejects("Zm9v!mFy", "character outside the alphabet");
    rejects("Zm9vY", "a lone 6-bit group");
    rejects("Zg==Zg==", "data after padding");
    rejects("Zg===", "three padding characters");
    rejects("Z===", "padding in the second position");
    CHECK_DONE("test_b64");
}
