/* cv2-compatible INTER_AREA and INTER_CUBIC for 8-bit RGB. Every numeric choice (float vs fixed
 * point, rounding, order of accumulation) mirrors OpenCV 4.x imgproc/resize.cpp so the output is
 * bit-identical to cv2.resize as built for x86-64 (SSE2 baseline: 8-lane float vertical cubic
 * pass, no fused multiply-add). Where OpenCV mixes a vector path and a scalar tail, so do we. */
#include "worker/resize.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CN 3
#define COEF_BITS 11 /* OpenCV INTER_RESIZE_COEF_BITS */
#define COEF_SCALE (1 << COEF_BITS)
#define CUBIC_VEC_LANES 8 /* OpenCV's vertical cubic pass does 8 values at a time in float (SSE2) */

/* OpenCV's cvRound(float): round half to even. Adding and removing 1.5*2^23 leaves the FPU to round
 * in its default nearest-even mode; exact for |v| < 2^22, far beyond any value formed here. */
static inline int round_even(float v) {
    float t = v + 12582912.0f;
    return (int)(t - 12582912.0f);
}

static inline uint8_t saturate_u8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

static inline int clamp_index(int i, int n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

static int sizes_ok(int sw, int sh, int dw, int dh) {
    return sw > 0 && sh > 0 && dw > 0 && dh > 0 && sw <= INT32_MAX / 4 / CN && dw <= INT32_MAX / 4 / CN;
}

/* ------------------------------------------------------------------------------------------ */
/* INTER_AREA                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Integer factors kx x ky: OpenCV averages each block with integer sums. 2x2 uses (sum+2)>>2,
 * other factors round sum * (1/area) computed in float. Blocks cut by the border (only possible
 * when the sizes are not exact multiples) average what they cover. Sums are built row by row in
 * `acc` so the source is read sequentially (a 12 MP photo is 36 MB). */
static int area_integer(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh, int kx, int ky) {
    const float inv_area = 1.f / (float)(kx * ky);
    const size_t sstride = (size_t)sw * CN;
    int *acc = malloc(sizeof(int) * (size_t)dw * CN);
    if (!acc) return -1;
    for (int dy = 0; dy < dh; dy++) {
        uint8_t *d = dst + (size_t)dy * dw * CN;
        int sy0 = dy * ky;
        int full_cols = sy0 + ky <= sh ? sw / kx : 0;
        if (full_cols > dw) full_cols = dw;
        memset(acc, 0, sizeof(int) * (size_t)full_cols * CN);
        for (int y = 0; full_cols && y < ky; y++) {
            const uint8_t *row = src + (size_t)(sy0 + y) * sstride;
            for (int dx = 0; dx < full_cols; dx++) {
                const uint8_t *p = row + (size_t)dx * kx * CN;
                int r = 0, g = 0, b = 0;
                for (int x = 0; x < kx; x++, p += CN) r += p[0], g += p[1], b += p[2];
                acc[dx * CN] += r, acc[dx * CN + 1] += g, acc[dx * CN + 2] += b;
            }
        }
        for (int i = 0; i < full_cols * CN; i++)
            d[i] =
                kx == 2 && ky == 2 ? (uint8_t)((acc[i] + 2) >> 2) : saturate_u8(round_even((float)acc[i] * inv_area));
        for (int dx = full_cols; dx < dw; dx++) {
            for (int c = 0; c < CN; c++) {
                int sum = 0, count = 0;
                for (int y = sy0; y < sy0 + ky && y < sh; y++)
                    for (int x = dx * kx; x < dx * kx + kx && x < sw; x++, count++)
                        sum += src[(size_t)y * sstride + (size_t)x * CN + c];
                d[dx * CN + c] = count ? saturate_u8(round_even((float)sum / (float)count)) : 0;
            }
        }
    }
    free(acc);
    return 0;
}

/* One source pixel's share of a destination cell along one axis. */
typedef struct {
    int src;
    float alpha;
} area_tap;

/* Taps of destination cell d are taps[first[d] .. first[d+1]-1], in increasing source order. */
typedef struct {
    area_tap *taps;
    int *first;
} area_axis;

static void area_axis_free(area_axis *a) {
    free(a->taps);
    free(a->first);
}

/* OpenCV's computeResizeAreaTab: each destination cell [d*scale, (d+1)*scale) takes the source
 * cells it overlaps, weighted by overlap / cell width (in double, stored as float). */
static int area_axis_build(int ssize, int dsize, double scale, area_axis *a) {
    int cap = ssize * 2 + 2, k = 0;
    a->taps = malloc(sizeof(area_tap) * (size_t)cap);
    a->first = malloc(sizeof(int) * ((size_t)dsize + 1));
    if (!a->taps || !a->first) return -1;
    for (int d = 0; d < dsize; d++) {
        a->first[d] = k;
        double fs1 = d * scale, fs2 = fs1 + scale;
        double cell = ssize - fs1 < scale ? ssize - fs1 : scale;
        int s1 = (int)ceil(fs1), s2 = (int)floor(fs2);
        if (s2 > ssize - 1) s2 = ssize - 1;
        if (s1 > s2) s1 = s2;
        if (k + (s2 - s1) + 2 > cap) return -1; /* OpenCV asserts a similar bound (2*ssize) */
        if (s1 - fs1 > 1e-3) a->taps[k++] = (area_tap){s1 - 1, (float)((s1 - fs1) / cell)};
        for (int s = s1; s < s2; s++) a->taps[k++] = (area_tap){s, (float)(1.0 / cell)};
        if (fs2 - s2 > 1e-3) {
            double part = fs2 - s2 < 1.0 ? fs2 - s2 : 1.0;
            if (cell < part) part = cell;
            a->taps[k++] = (area_tap){s2, (float)(part / cell)};
        }
    }
    a->first[dsize] = k;
    return 0;
}

/* Horizontal pass of one source row: out[d] = sum of row[tap] * alpha, accumulated in float. */
static void area_row(const uint8_t *row, const area_axis *ax, int dw, float *out) {
    for (int d = 0; d < dw; d++) {
        float r = 0.f, g = 0.f, b = 0.f;
        for (int k = ax->first[d]; k < ax->first[d + 1]; k++) {
            const uint8_t *p = row + (size_t)ax->taps[k].src * CN;
            float a = ax->taps[k].alpha;
            r = r + p[0] * a;
            g = g + p[1] * a;
            b = b + p[2] * a;
        }
        out[d * CN] = r;
        out[d * CN + 1] = g;
        out[d * CN + 2] = b;
    }
}

/* Fractional factors: separable weighted sums in float (OpenCV's ResizeArea_Invoker). */
static int area_fractional(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh, double scale_x,
                           double scale_y) {
    area_axis ax = {0}, ay = {0};
    int n = dw * CN, rc = -1;
    float *row = malloc(sizeof(float) * (size_t)n * 2), *sum = row ? row + n : NULL;
    if (!row || area_axis_build(sw, dw, scale_x, &ax) || area_axis_build(sh, dh, scale_y, &ay)) goto out;
    int cached = -1; /* source row currently held in `row`: neighbouring cells share edge rows */
    for (int dy = 0; dy < dh; dy++) {
        for (int k = ay.first[dy]; k < ay.first[dy + 1]; k++) {
            int sy = ay.taps[k].src;
            float beta = ay.taps[k].alpha;
            if (sy != cached) {
                area_row(src + (size_t)sy * sw * CN, &ax, dw, row);
                cached = sy;
            }
            if (k == ay.first[dy])
                for (int i = 0; i < n; i++) sum[i] = beta * row[i];
            else
                for (int i = 0; i < n; i++) sum[i] = sum[i] + beta * row[i];
        }
        uint8_t *d = dst + (size_t)dy * n;
        for (int i = 0; i < n; i++) d[i] = saturate_u8(round_even(sum[i]));
    }
    rc = 0;
out:
    area_axis_free(&ax);
    area_axis_free(&ay);
    free(row);
    return rc;
}

int resize_area_rgb8(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh) {
    if (!src || !dst || !sizes_ok(sw, sh, dw, dh)) return -1;
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * sh * CN);
        return 0;
    }
    /* OpenCV derives everything from the inverse ratio dsize/ssize, in double. */
    double scale_x = 1. / ((double)dw / sw), scale_y = 1. / ((double)dh / sh);
    if (scale_x < 1 || scale_y < 1) return -1; /* enlarging: OpenCV switches to a bilinear variant */
    int kx = (int)rint(scale_x), ky = (int)rint(scale_y);
    if (fabs(scale_x - kx) < DBL_EPSILON && fabs(scale_y - ky) < DBL_EPSILON) {
        if ((long long)kx * ky > INT32_MAX / 255) return -1; /* int block sums, as OpenCV's, would overflow */
        return area_integer(src, sw, sh, dst, dw, dh, kx, ky);
    }
    return area_fractional(src, sw, sh, dst, dw, dh, scale_x, scale_y);
}

/* ------------------------------------------------------------------------------------------ */
/* INTER_CUBIC                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Destination sample d reads source samples src-1 .. src+2 (clamped) with fixed-point weights. */
typedef struct {
    int src;
    int w[4];
} cubic_tap;

/* Keys' cubic with a = -0.75, evaluated in float in OpenCV's exact operation order (the last
 * weight is 1 minus the others), so the rounded fixed-point weights come out identical. */
static void cubic_weights(float x, float c[4]) {
    const float A = -0.75f;
    c[0] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
    c[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
    c[2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
    c[3] = 1.f - c[0] - c[1] - c[2];
}

/* Half-pixel-centred sample positions: (d + 0.5) * scale - 0.5 in double, then float. */
static void cubic_axis_build(int ssize, int dsize, cubic_tap *t) {
    double scale = 1. / ((double)dsize / ssize);
    for (int d = 0; d < dsize; d++) {
        float f = (float)((d + 0.5) * scale - 0.5);
        int s = (int)floorf(f);
        float c[4];
        f -= (float)s;
        cubic_weights(f, c);
        t[d].src = s;
        for (int k = 0; k < 4; k++) {
            int w = round_even(c[k] * (float)COEF_SCALE);
            t[d].w[k] = w < INT16_MIN ? INT16_MIN : w > INT16_MAX ? INT16_MAX : w;
        }
    }
}

/* Horizontal pass of one source row into integer sums (weights scaled by 2^11). */
static void cubic_row(const uint8_t *row, int sw, const cubic_tap *xt, int dw, int *out) {
    for (int d = 0; d < dw; d++) {
        const int *w = xt[d].w;
        const uint8_t *p0 = row + (size_t)clamp_index(xt[d].src - 1, sw) * CN;
        const uint8_t *p1 = row + (size_t)clamp_index(xt[d].src, sw) * CN;
        const uint8_t *p2 = row + (size_t)clamp_index(xt[d].src + 1, sw) * CN;
        const uint8_t *p3 = row + (size_t)clamp_index(xt[d].src + 2, sw) * CN;
        for (int c = 0; c < CN; c++) out[d * CN + c] = p0[c] * w[0] + p1[c] * w[1] + p2[c] * w[2] + p3[c] * w[3];
    }
}

/* Arithmetic right shift with floor semantics, also for negative sums (cubic overshoot). */
static inline int shift_floor(int v, int bits) { return v >= 0 ? v >> bits : -((-v + (1 << bits) - 1) >> bits); }

/* Vertical pass: OpenCV converts the 2^22-scaled sums to float and rounds for each complete group
 * of 8 values, and uses exact integer rounding for the remainder of the row. */
static void cubic_column(const int *const r[4], const int beta[4], int n, uint8_t *out) {
    const float unit = 1.f / (float)(COEF_SCALE * COEF_SCALE);
    const float b0 = (float)beta[0] * unit, b1 = (float)beta[1] * unit, b2 = (float)beta[2] * unit,
                b3 = (float)beta[3] * unit;
    int nvec = n - n % CUBIC_VEC_LANES, i = 0;
    for (; i < nvec; i++) {
        float t = (float)r[3][i] * b3;
        t = (float)r[2][i] * b2 + t;
        t = (float)r[1][i] * b1 + t;
        t = (float)r[0][i] * b0 + t;
        out[i] = saturate_u8(round_even(t));
    }
    for (; i < n; i++) {
        int v = r[0][i] * beta[0] + r[1][i] * beta[1] + r[2][i] * beta[2] + r[3][i] * beta[3];
        out[i] = saturate_u8(shift_floor(v + (1 << (2 * COEF_BITS - 1)), 2 * COEF_BITS));
    }
}

int resize_cubic_rgb8(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh) {
    if (!src || !dst || !sizes_ok(sw, sh, dw, dh)) return -1;
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * sh * CN);
        return 0;
    }
    int n = dw * CN;
    cubic_tap *xt = malloc(sizeof(cubic_tap) * (size_t)dw), *yt = malloc(sizeof(cubic_tap) * (size_t)dh);
    int *rows = malloc(sizeof(int) * (size_t)n * 4);
    if (!xt || !yt || !rows) {
        free(xt);
        free(yt);
        free(rows);
        return -1;
    }
    cubic_axis_build(sw, dw, xt);
    cubic_axis_build(sh, dh, yt);
    /* The 4 source rows of a destination row are consecutive (before clamping), so row index mod 4
     * names a distinct slot; a slot is recomputed only when its row changes. */
    int slot_row[4] = {-1, -1, -1, -1};
    for (int dy = 0; dy < dh; dy++) {
        const int *r[4];
        for (int k = 0; k < 4; k++) {
            int sy = clamp_index(yt[dy].src - 1 + k, sh), slot = sy & 3;
            if (slot_row[slot] != sy) {
                cubic_row(src + (size_t)sy * sw * CN, sw, xt, dw, rows + (size_t)slot * n);
                slot_row[slot] = sy;
            }
            r[k] = rows + (size_t)slot * n;
        }
        cubic_column(r, yt[dy].w, n, dst + (size_t)dy * n);
    }
    free(xt);
    free(yt);
    free(rows);
    return 0;
}
