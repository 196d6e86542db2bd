/* Deterministic uniform subsampling of a point cloud (replaces the reference's unseeded
 * np.random.choice so the same input and seed give the same cloud). */
#ifndef DA3_FUSION_SAMPLE_H
#define DA3_FUSION_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

/* xoshiro256** state, seeded through splitmix64. */
typedef struct {
    uint64_t s[4];
} sample_rng;

/* Seeds rng from any 64-bit seed (0 included). */
void sample_rng_seed(sample_rng *rng, uint64_t seed);

/* Uniform integer in [0, bound), bound >= 1, without modulo bias (Lemire's method). */
uint64_t sample_rng_below(sample_rng *rng, uint64_t bound);

/* Keeps a uniform random subset of `keep` of the n points (without replacement, fixed by seed),
 * in their original order, compacting xyz (n,3) and rgba (n,4) in place. Returns the new count,
 * min(n, keep). */
size_t subsample_points(float *xyz, uint8_t *rgba, size_t n, size_t keep, uint64_t seed);

#endif
