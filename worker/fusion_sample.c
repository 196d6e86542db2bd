/* Seeded selection sampling; see fusion_sample.h. */
#include "worker/fusion_sample.h"

#include <string.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(sample_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

void sample_rng_seed(sample_rng *rng, uint64_t seed) {
    /* splitmix64 never yields four zero words, the one state xoshiro cannot leave. */
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

uint64_t sample_rng_below(sample_rng *rng, uint64_t bound) {
    __uint128_t m = (__uint128_t)next_u64(rng) * bound;
    uint64_t low = (uint64_t)m;
    if (low < bound) {
        uint64_t reject_below = -bound % bound; /* 2^64 mod bound: the biased low end */
        while (low < reject_below) {
            m = (__uint128_t)next_u64(rng) * bound;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

size_t subsample_points(float *xyz, uint8_t *rgba, size_t n, size_t keep, uint64_t seed) {
    if (keep >= n) return n;
    sample_rng rng;
    sample_rng_seed(&rng, seed);
    /* Selection sampling (Knuth's Algorithm S): point r is taken with probability
     * still_needed / still_left, which makes every keep-subset equally likely, walks the cloud
     * once in order (so the kept points stay in their original, cache-friendly order) and
     * compacts in place because the write index never passes the read index. */
    size_t out = 0;
    for (size_t r = 0; r < n && out < keep; r++) {
        int take = sample_rng_below(&rng, n - r) < keep - out;
        /* Copied every time and kept by advancing out: a coin-flip branch would mispredict
         * half the time. out <= r, and out == r copies a point onto itself. */
        float x = xyz[3 * r], y = xyz[3 * r + 1], z = xyz[3 * r + 2];
        uint32_t c;
        memcpy(&c, rgba + 4 * r, 4);
        xyz[3 * out] = x, xyz[3 * out + 1] = y, xyz[3 * out + 2] = z;
        memcpy(rgba + 4 * out, &c, 4);
        out += (size_t)take;
    }
    return out;
}
