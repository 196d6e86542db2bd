/* Order statistics (radix histogram + introselect) and numpy's percentile and median formulas
 * on top of them. */
#include "worker/percentile.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RADIX_BITS 16
#define RADIX_BUCKETS (1u << RADIX_BITS)
#define RADIX_MIN_N 16384 /* below this a copy + quickselect is cheaper than the histogram */

/* ---------- introselect ---------- */

static void swap_f(float *a, size_t i, size_t j) {
    float t = a[i];
    a[i] = a[j];
    a[j] = t;
}

static void insertion_sort(float *a, size_t n) {
    for (size_t i = 1; i < n; i++) {
        float v = a[i];
        size_t j = i;
        for (; j > 0 && v < a[j - 1]; j--) a[j] = a[j - 1];
        a[j] = v;
    }
}

static void sift_down(float *a, size_t root, size_t n) {
    for (size_t child; (child = 2 * root + 1) < n; root = child) {
        if (child + 1 < n && a[child] < a[child + 1]) child++;
        if (!(a[root] < a[child])) return;
        swap_f(a, root, child);
    }
}

/* The fallback that bounds the worst case at O(n log n) on adversarial inputs. */
static void heap_sort(float *a, size_t n) {
    for (size_t i = n / 2; i-- > 0;) sift_down(a, i, n);
    for (size_t end = n; end-- > 1;) {
        swap_f(a, 0, end);
        sift_down(a, 0, end);
    }
}

void pct_select_kth(float *a, size_t n, size_t k) {
    if (n < 2 || k >= n) return;
    size_t lo = 0, hi = n - 1; /* inclusive range known to hold the k-th smallest */
    int budget = 8;            /* ~2*log2(n) partitions before giving up on the pivots */
    for (size_t m = n; m > 1; m >>= 1) budget += 2;
    while (hi - lo >= 16) {
        if (budget-- == 0) {
            heap_sort(a + lo, hi - lo + 1);
            return;
        }
        /* Median of three moved to a[lo]; a[hi] >= pivot then stops the left scan, a[lo]
         * stops the right one, so neither needs a bounds check. */
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo]) swap_f(a, lo, mid);
        if (a[hi] < a[lo]) swap_f(a, lo, hi);
        if (a[hi] < a[mid]) swap_f(a, mid, hi);
        swap_f(a, lo, mid);
        float pivot = a[lo];
        /* Hoare scans stop on elements equal to the pivot, which keeps runs of duplicates
         * (many pixels with the same confidence) split evenly instead of going quadratic. */
        size_t i = lo, j = hi + 1;
        for (;;) {
            do i++; while (a[i] < pivot);
            do j--; while (pivot < a[j]);
            if (i >= j) break;
            swap_f(a, i, j);
        }
        swap_f(a, lo, j); /* a[lo..j) <= pivot == a[j] <= a(j..hi] */
        if (k == j) return;
        if (k < j) hi = j - 1;
        else lo = j + 1;
    }
    insertion_sort(a + lo, hi - lo + 1);
}

/* ---------- order statistics ---------- */

/* Small inputs: copy, then select the ranks in ascending order, each in what the previous
 * selection left unresolved above it. */
static int order_stats_copy(const float *a, size_t n, size_t stride, const size_t *ranks,
                            size_t count, float *scratch, float *out) {
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        scratch[i] = a[i * stride];
        nan |= isnan(scratch[i]);
    }
    if (nan) return 1;
    size_t done = 0, prev = SIZE_MAX;
    for (size_t step = 0; step < count; step++) {
        size_t cur = SIZE_MAX; /* next rank in ascending (rank, index) order */
        for (size_t i = 0; i < count; i++) {
            int after = prev == SIZE_MAX || ranks[i] > ranks[prev] || (ranks[i] == ranks[prev] && i > prev);
            int before = cur == SIZE_MAX || ranks[i] < ranks[cur] || (ranks[i] == ranks[cur] && i < cur);
            if (after && before) cur = i;
        }
        size_t k = ranks[cur];
        if (k >= done) { /* else k was selected already and a[k] is in place */
            pct_select_kth(scratch + done, n - done, k - done);
            done = k + 1;
        }
        out[cur] = scratch[k];
        prev = cur;
    }
    return 0;
}

/* Order-preserving map of a non-NaN float to uint32 (negatives reversed below positives). */
static uint32_t float_key(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return b ^ ((uint32_t) - (int32_t)(b >> 31) | 0x80000000u);
}

/* Large inputs: histogram of the keys' top 16 bits (one pass), the buckets holding the wanted
 * ranks copied out (a second pass), then quickselect inside those buckets only. */
static int order_stats_radix(const float *a, size_t n, size_t stride, const size_t *ranks,
                             size_t count, float *scratch, float *out) {
    uint32_t *hist = calloc(RADIX_BUCKETS + 1, sizeof *hist);
    if (!hist) return -1;
    for (size_t i = 0; i < n; i++) {
        float v = a[i * stride];
        if (isnan(v)) {
            free(hist);
            return 1;
        }
        hist[float_key(v) >> (32 - RADIX_BITS)]++;
    }
    /* Exclusive prefix sums: bucket b holds the ranks [hist[b], hist[b+1]). */
    uint32_t sum = 0;
    for (uint32_t b = 0; b <= RADIX_BUCKETS; b++) {
        uint32_t c = b < RADIX_BUCKETS ? hist[b] : 0;
        hist[b] = sum;
        sum += c;
    }
    uint32_t bucket[PCT_MAX], start[PCT_MAX], size[PCT_MAX], offset[PCT_MAX];
    size_t groups = 0, group_of[PCT_MAX];
    for (size_t r = 0; r < count; r++) {
        uint32_t lo = 0, hi = RADIX_BUCKETS; /* last bucket whose start <= rank */
        while (hi - lo > 1) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (hist[mid] <= ranks[r]) lo = mid;
            else hi = mid;
        }
        size_t g = 0;
        while (g < groups && bucket[g] != lo) g++;
        if (g == groups) {
            bucket[g] = lo, start[g] = hist[lo], size[g] = hist[lo + 1] - hist[lo];
            offset[g] = g ? offset[g - 1] + size[g - 1] : 0;
            groups++;
        }
        group_of[r] = g;
    }
    /* Reuse the histogram as bucket -> 1 + group (0: not wanted). */
    memset(hist, 0, (RADIX_BUCKETS + 1) * sizeof *hist);
    uint32_t fill[PCT_MAX];
    for (size_t g = 0; g < groups; g++) hist[bucket[g]] = (uint32_t)g + 1, fill[g] = offset[g];
    for (size_t i = 0; i < n; i++) {
        float v = a[i * stride];
        uint32_t g = hist[float_key(v) >> (32 - RADIX_BITS)];
        if (g) scratch[fill[g - 1]++] = v;
    }
    free(hist);
    for (size_t r = 0; r < count; r++) {
        size_t g = group_of[r], k = ranks[r] - start[g];
        pct_select_kth(scratch + offset[g], size[g], k);
        out[r] = scratch[offset[g] + k];
    }
    return 0;
}

int pct_order_statistics(const float *a, size_t n, size_t stride, const size_t *ranks,
                         size_t count, float *scratch, float *out) {
    if (count > PCT_MAX) count = PCT_MAX;
    if (n < RADIX_MIN_N || n >= UINT32_MAX)
        return order_stats_copy(a, n, stride, ranks, count, scratch, out);
    return order_stats_radix(a, n, stride, ranks, count, scratch, out);
}

/* ---------- numpy formulas ---------- */

/* numpy's _lerp: a + (b-a)*t, or b - (b-a)*(1-t) for t >= 0.5, with b-a in the array's dtype. */
static double numpy_lerp(float a, float b, double t, pct_dtype dtype) {
    double diff = dtype == PCT_LIKE_FLOAT32 ? (double)(float)(b - a) : (double)b - (double)a;
    double r = (double)a + diff * t;
    if (t >= 0.5) r = (double)b - diff * (1.0 - t);
    return r;
}

int pct_percentiles(const float *a, size_t n, size_t stride, const double *p, size_t count,
                    pct_dtype dtype, float *scratch, double *out) {
    if (count > PCT_MAX / 2) count = PCT_MAX / 2;
    size_t ranks[PCT_MAX] = {0};
    double gamma[PCT_MAX / 2] = {0};
    for (size_t i = 0; i < count; i++) {
        /* numpy: q = p/100, virtual index (n-1)*q, its floor and the next index; at or past the
         * end both indexes become -1 (the last element) and gamma = virtual - (-1). */
        double virt = (double)(n - 1) * (p[i] / 100.0);
        if (virt >= (double)(n - 1)) {
            ranks[2 * i] = ranks[2 * i + 1] = n - 1;
            gamma[i] = virt + 1.0;
        } else if (virt < 0) {
            ranks[2 * i] = ranks[2 * i + 1] = 0;
            gamma[i] = virt;
        } else {
            double f = floor(virt);
            ranks[2 * i] = (size_t)f;
            ranks[2 * i + 1] = (size_t)f + 1;
            gamma[i] = virt - f;
        }
    }
    float v[PCT_MAX];
    int rc = pct_order_statistics(a, n, stride, ranks, 2 * count, scratch, v);
    if (rc < 0) return -1;
    for (size_t i = 0; i < count; i++) out[i] = rc ? NAN : numpy_lerp(v[2 * i], v[2 * i + 1], gamma[i], dtype);
    return 0;
}

int pct_median(const float *a, size_t n, size_t stride, float *scratch, double *out) {
    size_t ranks[2] = {(n - 1) / 2, n / 2}; /* equal for odd n */
    float v[2];
    int rc = pct_order_statistics(a, n, stride, ranks, 2, scratch, v);
    if (rc < 0) return -1;
    *out = rc ? NAN : ((double)v[0] + (double)v[1]) / 2.0;
    return 0;
}
