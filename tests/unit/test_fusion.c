/* Fusion: numpy-exact percentiles and threshold, back-projection and alignment on known depth
 * maps, median centring, non-finite filtering, seeded downsampling, frustums and their colours,
 * and the time for 10 views of 504x378. Expected numpy values were computed with numpy 1.24
 * (DA3 pins numpy<2); the expression is in the comment next to each. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/unit/check.h"
#include "worker/fusion.h"
#include "worker/fusion_frustum.h"
#include "worker/fusion_sample.h"
#include "worker/percentile.h"

/* ---------- helpers ---------- */

typedef struct {
    da3_prediction pred;
    uint8_t *rgb;
} scene;

static scene scene_new(int n, int h, int w) {
    scene s;
    size_t px = (size_t)n * h * w;
    s.pred.n = n, s.pred.height = h, s.pred.width = w;
    s.pred.depth = calloc(px, sizeof(float));
    s.pred.conf = calloc(px, sizeof(float));
    s.pred.extrinsics = calloc((size_t)n * 12, sizeof(float));
    s.pred.intrinsics = calloc((size_t)n * 9, sizeof(float));
    s.rgb = calloc(px * 3, 1);
    for (size_t i = 0; i < px; i++) s.pred.conf[i] = 2.0f;
    return s;
}

static void scene_free(scene *s) {
    free(s->pred.depth), free(s->pred.conf), free(s->pred.extrinsics), free(s->pred.intrinsics);
    free(s->rgb);
}

/* Rotation about a unit axis (Rodrigues). */
static void rotation(double ax, double ay, double az, double angle, double r[9]) {
    double c = cos(angle), s = sin(angle), t = 1 - c;
    double m[9] = {t * ax * ax + c,      t * ax * ay - s * az, t * ax * az + s * ay,
                   t * ax * ay + s * az, t * ay * ay + c,      t * ay * az - s * ax,
                   t * ax * az - s * ay, t * ay * az + s * ax, t * az * az + c};
    memcpy(r, m, sizeof m);
}

static void set_camera(scene *s, int i, double fx, double fy, double cx, double cy, const double r[9],
                       const double t[3]) {
    float *k = s->pred.intrinsics + 9 * i, *e = s->pred.extrinsics + 12 * i;
    float kk[9] = {(float)fx, 0, (float)cx, 0, (float)fy, (float)cy, 0, 0, 1};
    memcpy(k, kk, sizeof kk);
    for (int a = 0; a < 3; a++) {
        for (int b = 0; b < 3; b++) e[4 * a + b] = (float)r[3 * a + b];
        e[4 * a + 3] = (float)t[a];
    }
}

static const double IDENTITY[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
static const double ZERO3[3] = {0, 0, 0};

/* World point of pixel (u,v) at depth d in view i, straight from the definitions with the
 * stored float cameras: Xc = ((u-cx)/fx d, (v-cy)/fy d, d), Xw = R^T (Xc - t). */
static void expected_world(const scene *s, int i, int u, int v, double d, double xw[3]) {
    const float *k = s->pred.intrinsics + 9 * i, *e = s->pred.extrinsics + 12 * i;
    double xc[3] = {(u - k[2]) / (double)k[0] * d, (v - k[5]) / (double)k[4] * d, d};
    for (int a = 0; a < 3; a++) {
        xw[a] = 0;
        for (int b = 0; b < 3; b++) xw[a] += e[4 * b + a] * (xc[b] - e[4 * b + 3]);
    }
}

static void apply(const double m[16], const double p[3], double out[3]) {
    for (int r = 0; r < 3; r++) out[r] = m[4 * r] * p[0] + m[4 * r + 1] * p[1] + m[4 * r + 2] * p[2] + m[4 * r + 3];
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* numpy.percentile on a sorted float32 array, written out independently for cross-checks. */
static double sorted_percentile(const float *s, size_t n, double p) {
    double virt = (double)(n - 1) * (p / 100.0);
    int end = virt >= (double)(n - 1); /* numpy: both indexes -1, gamma = virt + 1 */
    size_t i = end ? n - 1 : (size_t)floor(virt), j = end ? n - 1 : i + 1;
    double t = end ? virt + 1 : virt - floor(virt), diff = (double)(float)(s[j] - s[i]);
    return t >= 0.5 ? s[j] - diff * (1 - t) : s[i] + diff * t;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static fusion_params params(double pct, long max_points, int cameras) {
    fusion_params p = {pct, max_points, cameras, 42};
    return p;
}

/* ---------- percentiles ---------- */

static void test_percentiles_numpy(void) {
    const float c[10] = {1.0f, 1.2f, 1.7f, 3.0f, 5.5f, 2.2f, 1.01f, 9.0f, 4.4f, 1.3f};
    float scratch[16];
    /* c = np.array([1.0,1.2,1.7,3.0,5.5,2.2,1.01,9.0,4.4,1.3], dtype=np.float32)
     * [float(np.percentile(c, p)) for p in (0, 10, 25, 33.3, 50, 90, 99.9, 100)] */
    const double ps[8] = {0, 10, 25, 33.3, 50, 90, 99.9, 100};
    const double want[8] = {1.0, 1.0089999914169312, 1.225000023841858, 1.2996999526023865,
                            1.9500000476837158, 5.849999999999999, 8.968500000000006, 9.0};
    double got[8];
    CHECK(pct_percentiles(c, 10, 1, ps, 4, PCT_LIKE_FLOAT32, scratch, got) == 0);
    CHECK(pct_percentiles(c, 10, 1, ps + 4, 4, PCT_LIKE_FLOAT32, scratch, got + 4) == 0);
    for (int i = 0; i < 8; i++) CHECK_MSG(got[i] == want[i], "P%g = %.17g, numpy %.17g", ps[i], got[i], want[i]);
    float sorted[10];
    memcpy(sorted, c, sizeof c);
    qsort(sorted, 10, sizeof(float), cmp_float);
    for (int i = 0; i < 8; i++) CHECK(sorted_percentile(sorted, 10, ps[i]) == want[i]); /* the test's own model */

    /* Any order of requests gives the same values, and the input is left alone. */
    const double rev[3] = {90, 10, 50};
    CHECK(pct_percentiles(c, 10, 1, rev, 3, PCT_LIKE_FLOAT32, scratch, got) == 0);
    CHECK(got[0] == want[5] && got[1] == want[1] && got[2] == want[4]);
    CHECK(c[0] == 1.0f && c[9] == 1.3f);

    /* float(np.median(c.astype(np.float64))), float(np.median(c[:9].astype(np.float64))) */
    double med;
    CHECK(pct_median(c, 10, 1, scratch, &med) == 0 && med == 1.9500000476837158);
    CHECK(pct_median(c, 9, 1, scratch, &med) == 0 && med == 2.200000047683716);
    /* Strided: the middle column of a (3,3) array: np.median([2, 5, 8]) */
    const float m3[9] = {1, 8, 0, 4, 2, 0, 7, 5, 0};
    CHECK(pct_median(m3 + 1, 3, 3, scratch, &med) == 0 && med == 5.0);

    /* A case where numpy's float32 subtraction of the neighbours changes the result:
     * a = np.array([...], dtype=np.float32); np.percentile(a, 43.1087776597372) -> 2.8524513895805206,
     * np.percentile(a.astype(np.float64), 43.1087776597372) -> 2.852451438870384 */
    const float b[7] = {1.1921610832214355f, 3.8284926414489746f, 1.28194260597229f, 1.5204204320907593f,
                        3.971142530441284f,  3.89062237739563f,   3.7914698123931885f};
    const double p43 = 43.1087776597372;
    double v;
    CHECK(pct_percentiles(b, 7, 1, &p43, 1, PCT_LIKE_FLOAT32, scratch, &v) == 0);
    CHECK_MSG(v == 2.8524513895805206, "%.17g", v);
    CHECK(pct_percentiles(b, 7, 1, &p43, 1, PCT_LIKE_FLOAT64, scratch, &v) == 0);
    CHECK_MSG(v == 2.852451438870384, "%.17g", v);

    /* Infinities and NaN as numpy: np.percentile(np.float32([1, 2, np.inf]), 50) -> nan (inf * 0),
     * np.percentile(np.float32([1, 2, np.inf]), 0) -> 1.0, any NaN -> nan */
    const float inf3[3] = {INFINITY, 1, 2}, nan3[3] = {1, NAN, 2};
    const double p50 = 50, p0 = 0;
    CHECK(pct_percentiles(inf3, 3, 1, &p50, 1, PCT_LIKE_FLOAT32, scratch, &v) == 0 && isnan(v));
    CHECK(pct_percentiles(inf3, 3, 1, &p0, 1, PCT_LIKE_FLOAT32, scratch, &v) == 0 && v == 1.0);
    CHECK(pct_percentiles(nan3, 3, 1, &p0, 1, PCT_LIKE_FLOAT32, scratch, &v) == 0 && isnan(v));
    CHECK(pct_median(nan3, 3, 1, scratch, &med) == 0 && isnan(med));

    const float one = 7.5f;
    CHECK(pct_percentiles(&one, 1, 1, &p50, 1, PCT_LIKE_FLOAT32, scratch, &v) == 0 && v == 7.5);
}

/* Selection (both the copy and the radix path) against a full sort on large arrays with many
 * duplicates, negative values, infinities and adversarial orders, strided as fusion reads them. */
static void test_selection_large(void) {
    const size_t n = 200001;
    float *a = malloc(3 * n * sizeof *a), *s = malloc(n * sizeof *s), *w = malloc(n * sizeof *w);
    sample_rng rng;
    sample_rng_seed(&rng, 7);
    for (int pattern = 0; pattern < 6; pattern++) {
        for (size_t i = 0; i < n; i++) {
            float v;
            switch (pattern) {
            case 0: v = ((float)sample_rng_below(&rng, 1000000) - 500000.0f) / 1000.0f; break; /* random */
            case 1: v = (float)sample_rng_below(&rng, 4); break;                               /* 4 values */
            case 2: v = (float)i; break;                                                       /* sorted */
            case 3: v = (float)(i % 2 ? n - i : i); break;                                     /* organ pipe */
            case 4: v = 1.0f + (float)sample_rng_below(&rng, 1000) * 1e-7f; break;             /* one bucket */
            default: v = i % 1000 == 0 ? -INFINITY : i % 1000 == 1 ? INFINITY : (i % 3 ? -0.0f : 0.0f); break;
            }
            a[3 * i + 1] = v;
            a[3 * i] = a[3 * i + 2] = NAN; /* the other columns must not be read */
            s[i] = v;
        }
        qsort(s, n, sizeof *s, cmp_float);
        for (size_t len = 0; len < 2; len++) {
            size_t m = len ? n : 5000; /* radix path, copy path */
            if (!len) {
                for (size_t i = 0; i < m; i++) w[i] = a[3 * i + 1];
                qsort(w, m, sizeof *w, cmp_float);
            }
            const float *ref = len ? s : w;
            const double ps[4] = {0, 5, 50, 95}, ps2[4] = {10, 90, 99.5, 100};
            double got[8];
            float *scratch = malloc(m * sizeof *scratch);
            CHECK(pct_percentiles(a + 1, m, 3, ps, 4, PCT_LIKE_FLOAT32, scratch, got) == 0);
            CHECK(pct_percentiles(a + 1, m, 3, ps2, 4, PCT_LIKE_FLOAT32, scratch, got + 4) == 0);
            for (int i = 0; i < 8; i++) {
                double want = sorted_percentile(ref, m, i < 4 ? ps[i] : ps2[i - 4]);
                CHECK_MSG(got[i] == want || (isnan(got[i]) && isnan(want)), "pattern %d n %zu P%g: %g vs %g", pattern,
                          m, i < 4 ? ps[i] : ps2[i - 4], got[i], want);
            }
            double med;
            CHECK(pct_median(a + 1, m, 3, scratch, &med) == 0);
            double want_med = ((double)ref[(m - 1) / 2] + ref[m / 2]) / 2.0;
            CHECK_MSG(med == want_med || (isnan(med) && isnan(want_med)), "pattern %d median", pattern);
            size_t ranks[3] = {0, m / 3, m - 1};
            float out[3];
            CHECK(pct_order_statistics(a + 1, m, 3, ranks, 3, scratch, out) == 0);
            CHECK(out[0] == ref[0] && out[1] == ref[m / 3] && out[2] == ref[m - 1]);
            free(scratch);
        }
    }
    /* A NaN anywhere is reported, on both paths. */
    for (size_t i = 0; i < n; i++) w[i] = (float)i;
    w[n / 2] = NAN;
    size_t r0 = 0;
    float o;
    float *scratch = malloc(n * sizeof *scratch);
    CHECK(pct_order_statistics(w, n, 1, &r0, 1, scratch, &o) == 1);
    CHECK(pct_order_statistics(w + n / 2 - 10, 100, 1, &r0, 1, scratch, &o) == 1);
    free(scratch);
    /* pct_select_kth on its own, including the small-range insertion sort. */
    for (size_t k = 0; k < n; k += 49999) {
        for (size_t i = 0; i < n; i++) w[i] = (float)((i * 7919) % n);
        pct_select_kth(w, n, k);
        CHECK(w[k] == (float)k);
    }
    free(a), free(s), free(w);
}

/* ---------- threshold ---------- */

static size_t kept_with_conf(const float *conf, int n, double pct) {
    scene s = scene_new(1, 1, n);
    set_camera(&s, 0, 1, 1, 0, 0, IDENTITY, ZERO3);
    for (int i = 0; i < n; i++) s.pred.depth[i] = 1.0f, s.pred.conf[i] = conf[i];
    point_cloud pc;
    char err[128];
    fusion_params p = params(pct, 1000, 0);
    size_t kept = SIZE_MAX;
    if (fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == 0) kept = pc.n_points;
    point_cloud_free(&pc);
    scene_free(&s);
    return kept;
}

static void test_threshold(void) {
    const float c[10] = {1.0f, 1.2f, 1.7f, 3.0f, 5.5f, 2.2f, 1.01f, 9.0f, 4.4f, 1.3f};
    /* thr = min(max(1.05, np.percentile(c, 10)), np.percentile(c, 90)) -> 1.05: (c >= thr).sum() == 8 */
    CHECK(kept_with_conf(c, 10, 10.0) == 8);
    /* p=25 -> thr = np.percentile(c, 25) = 1.225000023841858: (c >= thr).sum() == 7 */
    CHECK(kept_with_conf(c, 10, 25.0) == 7);
    /* p=95 -> thr = np.percentile(c, 90) = 5.85 (P90 caps it): (c >= thr).sum() == 1 */
    CHECK(kept_with_conf(c, 10, 95.0) == 1);
    /* Out-of-range percentiles are clamped to [0,100]: 250 behaves as 100, -5 as 0. */
    CHECK(kept_with_conf(c, 10, 250.0) == 1);
    CHECK(kept_with_conf(c, 10, -5.0) == 8);
    /* numpy<2 compares the float32 conf with the threshold in float32, so conf == 1.05f passes:
     * c2 = np.float32([1.05, 1.05, 1.0, 2.0]); (c2 >= min(max(1.05, P10), P90)).sum() == 3 */
    const float c2[4] = {1.05f, 1.05f, 1.0f, 2.0f};
    CHECK(kept_with_conf(c2, 4, 10.0) == 3);
    /* A NaN makes both percentiles NaN and Python's max/min keep 1.05:
     * c3 = np.float32([1.05, 1.05, 1.0, 2.0, np.nan]) -> thr 1.05, 3 kept */
    const float c3[5] = {1.05f, 1.05f, 1.0f, 2.0f, NAN};
    CHECK(kept_with_conf(c3, 5, 10.0) == 3);
    /* P90 below 1.05 wins: c4 = np.float32([1, 1, 1.01, 1.02]) -> thr 1.0169999837875365, 1 kept */
    const float c4[4] = {1.0f, 1.0f, 1.01f, 1.02f};
    CHECK(kept_with_conf(c4, 4, 10.0) == 1);
}

/* ---------- geometry ---------- */

static void test_identity_camera(void) {
    /* fx=fy=2, cx=1, cy=0.5, depth 4: Xc = (2(u-1), 2(v-0.5), 4), glTF (x, -y, -4); medians
     * x: 0, y: mean(-1, 1) = 0, z: -4 -> A = [[1,0,0,0],[0,-1,0,0],[0,0,-1,4],[0,0,0,1]]. */
    scene s = scene_new(1, 2, 3);
    set_camera(&s, 0, 2, 2, 1, 0.5, IDENTITY, ZERO3);
    for (int i = 0; i < 6; i++) {
        s.pred.depth[i] = 4.0f;
        s.rgb[3 * i] = (uint8_t)(10 * i), s.rgb[3 * i + 1] = 7, s.rgb[3 * i + 2] = (uint8_t)(200 + i);
    }
    point_cloud pc;
    char err[128] = "";
    fusion_params p = params(10, 100, 0);
    CHECK_MSG(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == 0, "%s", err);
    const double want_a[16] = {1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 4, 0, 0, 0, 1};
    for (int i = 0; i < 16; i++) CHECK_MSG(pc.alignment[i] == want_a[i], "A[%d] = %g", i, pc.alignment[i]);
    CHECK(pc.n_points == 6 && pc.n_cameras == 0 && !pc.camera_lines);
    for (int v = 0, k = 0; v < 2; v++)
        for (int u = 0; u < 3; u++, k++) {
            CHECK(pc.xyz[3 * k] == 2.0f * (u - 1));
            CHECK(pc.xyz[3 * k + 1] == -2.0f * (v - 0.5f));
            CHECK(pc.xyz[3 * k + 2] == 0.0f);
            CHECK(pc.rgba[4 * k] == 10 * k && pc.rgba[4 * k + 1] == 7 && pc.rgba[4 * k + 2] == 200 + k &&
                  pc.rgba[4 * k + 3] == 255);
        }
    point_cloud_free(&pc);
    CHECK(pc.xyz == NULL && pc.n_points == 0);
    point_cloud_free(&pc); /* twice is fine */
    scene_free(&s);
}

/* Two posed views: view 0 is a fronto-parallel plane at depth 2.5, view 1 a slanted surface.
 * Every output point must be A * (R^T (Xc - t)); A = T_center * M * w2c0, and the per-axis
 * median of the output is 0. */
static void test_posed_views(void) {
    const int h = 4, w = 5, n = 2;
    scene s = scene_new(n, h, w);
    double r0[9], r1[9];
    rotation(0.6, 0.0, 0.8, 0.5, r0);
    rotation(0.0, 1.0, 0.0, -0.7, r1);
    const double t0[3] = {0.1, -0.2, 0.3}, t1[3] = {-1.0, 0.25, 2.0};
    set_camera(&s, 0, 100, 110, 2, 1.5, r0, t0);
    set_camera(&s, 1, 80, 80, 2.5, 2, r1, t1);
    for (int v = 0; v < h; v++)
        for (int u = 0; u < w; u++) {
            s.pred.depth[v * w + u] = 2.5f;
            s.pred.depth[h * w + v * w + u] = 1.0f + 0.1f * u + 0.05f * v;
        }
    point_cloud pc;
    char err[128] = "";
    fusion_params p = params(0, 1000, 0);
    CHECK_MSG(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == 0, "%s", err);
    CHECK(pc.n_points == (size_t)(n * h * w));

    /* A's rotation part is M * R0 exactly; its translation M * t0 - centre. */
    const float *e0 = s.pred.extrinsics;
    const double flip[3] = {1, -1, -1};
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) CHECK(pc.alignment[4 * r + c] == flip[r] * e0[4 * r + c]);
    CHECK(pc.alignment[12] == 0 && pc.alignment[13] == 0 && pc.alignment[14] == 0 && pc.alignment[15] == 1);

    /* Expected centre: per-axis numpy median of M * w2c0 * Xw over all points. */
    double ys[3][40], centre[3];
    size_t k = 0;
    double xw_all[40][3];
    for (int i = 0; i < n; i++)
        for (int v = 0; v < h; v++)
            for (int u = 0; u < w; u++, k++) {
                expected_world(&s, i, u, v, s.pred.depth[(i * h + v) * w + u], xw_all[k]);
                for (int r = 0; r < 3; r++) {
                    double cam = e0[4 * r + 3];
                    for (int c = 0; c < 3; c++) cam += e0[4 * r + c] * xw_all[k][c];
                    ys[r][k] = flip[r] * cam;
                }
            }
    for (int r = 0; r < 3; r++) {
        qsort(ys[r], 40, sizeof(double), cmp_double);
        centre[r] = (ys[r][19] + ys[r][20]) / 2;
        CHECK_NEAR(pc.alignment[4 * r + 3], flip[r] * e0[4 * r + 3] - centre[r], 1e-5);
    }
    for (k = 0; k < 40; k++) {
        double want[3];
        apply(pc.alignment, xw_all[k], want);
        for (int r = 0; r < 3; r++) CHECK_NEAR(pc.xyz[3 * k + r], want[r], 1e-5);
    }
    /* The plane of view 0 sits at z = 2.5 in camera 0: Xc0 = M (p + centre), centre = M t0 - A_t. */
    for (k = 0; k < (size_t)(h * w); k++) {
        double c2 = flip[2] * e0[11] - pc.alignment[11];
        CHECK_NEAR(-(pc.xyz[3 * k + 2] + c2), 2.5, 1e-5);
    }
    /* Centred: the per-axis median of the output is ~0. */
    for (int r = 0; r < 3; r++) {
        float scratch[40];
        double med;
        CHECK(pct_median(pc.xyz + r, 40, 3, scratch, &med) == 0);
        CHECK_NEAR(med, 0.0, 1e-6);
    }
    point_cloud_free(&pc);
    scene_free(&s);
}

static void test_invalid_depth_dropped(void) {
    const float depth[8] = {1.0f, NAN, INFINITY, -INFINITY, 0.0f, -1.0f, 2.0f, 3.0f};
    scene s = scene_new(1, 2, 4);
    set_camera(&s, 0, 1, 1, 0, 0, IDENTITY, ZERO3);
    for (int i = 0; i < 8; i++) s.pred.depth[i] = depth[i], s.rgb[3 * i] = (uint8_t)i;
    point_cloud pc;
    char err[128] = "";
    fusion_params p = params(10, 100, 0);
    CHECK_MSG(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == 0, "%s", err);
    CHECK(pc.n_points == 3);
    if (pc.n_points == 3) CHECK(pc.rgba[0] == 0 && pc.rgba[4] == 6 && pc.rgba[8] == 7);
    for (size_t i = 0; i < 3 * pc.n_points; i++) CHECK(isfinite(pc.xyz[i]));
    point_cloud_free(&pc);

    /* Depth so large that the point overflows float32 is dropped too. */
    s.pred.depth[0] = FLT_MAX;
    s.pred.intrinsics[0] = 1e-3f; /* fx: x = u/fx * d overflows for u > 0 */
    s.pred.depth[1] = FLT_MAX;
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == 0);
    for (size_t i = 0; i < 3 * pc.n_points; i++) CHECK(isfinite(pc.xyz[i]));
    point_cloud_free(&pc);

    /* Nothing valid: an empty cloud, A = M * w2c0 uncentred, cameras still drawn. */
    for (int i = 0; i < 8; i++) s.pred.depth[i] = 0.0f;
    fusion_params pc_cam = params(10, 100, 1);
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &pc_cam, &pc, err, sizeof err) == 0);
    CHECK(pc.n_points == 0 && pc.xyz == NULL && pc.rgba == NULL && pc.n_cameras == 1);
    CHECK(pc.alignment[0] == 1 && pc.alignment[5] == -1 && pc.alignment[10] == -1 && pc.alignment[3] == 0 &&
          pc.alignment[7] == 0 && pc.alignment[11] == 0);
    point_cloud_free(&pc);
    scene_free(&s);
}

static void test_errors(void) {
    scene s = scene_new(1, 2, 2);
    set_camera(&s, 0, 1, 1, 0, 0, IDENTITY, ZERO3);
    point_cloud pc;
    char err[128] = "";
    fusion_params p = params(10, 100, 1);
    CHECK(fuse_point_cloud(NULL, s.rgb, &p, &pc, err, sizeof err) == -1 && err[0]);
    s.pred.intrinsics[0] = 0; /* fx = 0: K singular */
    err[0] = 0;
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == -1 && strstr(err, "intrinsics"));
    CHECK(pc.xyz == NULL && pc.n_points == 0);
    s.pred.intrinsics[0] = 1;
    s.pred.extrinsics[5] = NAN;
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == -1 && strstr(err, "non-finite"));
    s.pred.extrinsics[5] = 1;
    p.num_max_points = -1;
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == -1);
    s.pred.n = 0;
    p.num_max_points = 5;
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == -1);
    scene_free(&s);
}

/* ---------- downsampling ---------- */

static void test_downsampling(void) {
    const int h = 60, w = 80;
    scene s = scene_new(1, h, w);
    set_camera(&s, 0, 50, 50, 40, 30, IDENTITY, ZERO3);
    for (int i = 0; i < h * w; i++) {
        s.pred.depth[i] = 1.0f + (float)(i % 17) * 0.1f;
        s.rgb[3 * i] = (uint8_t)i, s.rgb[3 * i + 1] = (uint8_t)(i >> 8);
    }
    point_cloud full, a, b, c;
    char err[128];
    fusion_params p = params(0, 1000000, 0);
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &full, err, sizeof err) == 0 && full.n_points == (size_t)(h * w));
    p.num_max_points = 1000;
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &a, err, sizeof err) == 0);
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &b, err, sizeof err) == 0);
    p.seed = 43;
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &c, err, sizeof err) == 0);
    CHECK(a.n_points == 1000 && b.n_points == 1000 && c.n_points == 1000);
    CHECK(!memcmp(a.xyz, b.xyz, 12000) && !memcmp(a.rgba, b.rgba, 4000)); /* same seed, same cloud */
    CHECK(memcmp(a.rgba, c.rgba, 4000) != 0);                              /* another seed differs */
    CHECK(!memcmp(a.alignment, full.alignment, sizeof a.alignment));      /* centred before sampling */
    /* The kept points are a subsequence of the full cloud, in the original order (colours encode
     * the pixel index), with the same positions. */
    size_t j = 0, prev = 0;
    int in_order = 1, same = 1;
    for (size_t i = 0; i < a.n_points; i++) {
        size_t idx = a.rgba[4 * i] | (size_t)a.rgba[4 * i + 1] << 8;
        if (i && idx <= prev) in_order = 0;
        prev = idx;
        while (j < full.n_points && (full.rgba[4 * j] | (size_t)full.rgba[4 * j + 1] << 8) != idx) j++;
        if (j == full.n_points || memcmp(full.xyz + 3 * j, a.xyz + 3 * i, 12)) same = 0;
    }
    CHECK(in_order && same);
    point_cloud_free(&full), point_cloud_free(&a), point_cloud_free(&b), point_cloud_free(&c);
    scene_free(&s);

    /* Uniform without replacement: each of 10 items kept ~3/10 of the time over 30000 seeds,
     * and always exactly 3 distinct ones. */
    int hits[10] = {0}, exact = 1;
    for (uint64_t seed = 0; seed < 30000; seed++) {
        float xyz[30];
        uint8_t rgba[40];
        for (int i = 0; i < 10; i++) rgba[4 * i] = (uint8_t)i, xyz[3 * i] = (float)i;
        size_t kept = subsample_points(xyz, rgba, 10, 3, seed);
        exact &= kept == 3 && rgba[0] < rgba[4] && rgba[4] < rgba[8];
        for (size_t i = 0; i < kept; i++) hits[rgba[4 * i]]++;
    }
    CHECK(exact);
    for (int i = 0; i < 10; i++) CHECK_MSG(abs(hits[i] - 9000) < 400, "item %d kept %d times", i, hits[i]);
    float xyz1[3] = {1, 2, 3};
    uint8_t rgba1[4] = {1, 2, 3, 4};
    CHECK(subsample_points(xyz1, rgba1, 1, 5, 1) == 1 && subsample_points(xyz1, rgba1, 1, 0, 1) == 0);
}

/* ---------- cameras ---------- */

static void test_camera_colors(void) {
    /* (np.array(colorsys.hsv_to_rgb((i + 0.5) / n, 0.85, 0.95)) * 255).astype(np.uint8) */
    const uint8_t want3[3][3] = {{242, 242, 36}, {36, 242, 242}, {242, 36, 242}};
    const uint8_t want10[10][3] = {{242, 98, 36},  {242, 221, 36}, {139, 242, 36}, {36, 242, 56},
                                   {36, 242, 180}, {36, 180, 242}, {36, 56, 242},  {139, 36, 242},
                                   {242, 36, 221}, {242, 36, 98}};
    uint8_t c[4];
    frustum_color(0, 1, c);
    CHECK(c[0] == 36 && c[1] == 242 && c[2] == 242 && c[3] == 255);
    for (int i = 0; i < 3; i++) {
        frustum_color(i, 3, c);
        CHECK_MSG(!memcmp(c, want3[i], 3) && c[3] == 255, "camera %d of 3", i);
    }
    for (int i = 0; i < 10; i++) {
        frustum_color(i, 10, c);
        CHECK_MSG(!memcmp(c, want10[i], 3), "camera %d of 10: %d %d %d", i, c[0], c[1], c[2]);
    }
}

/* The frustum vertices of camera i, expected from the definitions: apex = c2w origin, corner k =
 * c2w (K^-1 px_k / z * depth), all through A; segments centre->corner x4, then edges. */
static void expected_frustum(const scene *s, const point_cloud *pc, int i, double depth, double out[16][3]) {
    const int w = s->pred.width, h = s->pred.height;
    const double px[4][2] = {{0, 0}, {w - 1, 0}, {w - 1, h - 1}, {0, h - 1}};
    double apex[3], corner[4][3], tmp[3];
    expected_world(s, i, 0, 0, 0.0, tmp); /* d = 0 gives the camera centre */
    apply(pc->alignment, tmp, apex);
    for (int c = 0; c < 4; c++) {
        /* K^-1 [u v 1] has z = 1 for this K, so /z is a no-op; scale by depth. */
        expected_world(s, i, (int)px[c][0], (int)px[c][1], depth, tmp);
        apply(pc->alignment, tmp, corner[c]);
    }
    const double *seg[8][2] = {{apex, corner[0]},      {apex, corner[1]},      {apex, corner[2]},
                               {apex, corner[3]},      {corner[0], corner[1]}, {corner[1], corner[2]},
                               {corner[2], corner[3]}, {corner[3], corner[0]}};
    for (int sg = 0; sg < 8; sg++)
        for (int e = 0; e < 2; e++) memcpy(out[2 * sg + e], seg[sg][e], sizeof out[0]);
}

static void test_frustums(void) {
    const int h = 30, w = 40, n = 3;
    scene s = scene_new(n, h, w);
    for (int i = 0; i < n; i++) {
        double r[9], t[3] = {0.3 * i, -0.1 * i, 0.05 * i * i};
        rotation(0, 1, 0, 0.2 * i, r);
        set_camera(&s, i, 35 + i, 36, 20, 15, r, t);
    }
    sample_rng rng;
    sample_rng_seed(&rng, 3);
    for (int i = 0; i < n * h * w; i++) s.pred.depth[i] = 1.0f + (float)sample_rng_below(&rng, 1000) / 250.0f;
    point_cloud pc;
    char err[128] = "";
    fusion_params p = params(10, 1000000, 1);
    CHECK_MSG(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == 0, "%s", err);
    CHECK(pc.n_cameras == n && pc.camera_lines && pc.camera_rgba);

    /* scene_scale = ||P95 - P5|| over the output points (numpy percentiles per axis). */
    double sum = 0;
    float *col = malloc(pc.n_points * sizeof *col);
    for (int a = 0; a < 3; a++) {
        for (size_t i = 0; i < pc.n_points; i++) col[i] = pc.xyz[3 * i + a];
        qsort(col, pc.n_points, sizeof *col, cmp_float);
        double d = sorted_percentile(col, pc.n_points, 95) - sorted_percentile(col, pc.n_points, 5);
        sum += d * d;
    }
    free(col);
    double depth = sqrt(sum) * 0.03;
    for (int i = 0; i < n; i++) {
        double want[16][3];
        expected_frustum(&s, &pc, i, depth, want);
        for (int v = 0; v < 16; v++)
            for (int c = 0; c < 3; c++)
                CHECK_MSG(fabs(pc.camera_lines[48 * i + 3 * v + c] - want[v][c]) < 1e-5, "camera %d vertex %d", i, v);
        uint8_t rgba[4];
        frustum_color(i, n, rgba);
        CHECK(!memcmp(pc.camera_rgba + 4 * i, rgba, 4));
    }
    /* Camera 0's apex is the origin of camera 0, i.e. A's translation. */
    for (int c = 0; c < 3; c++) CHECK_NEAR(pc.camera_lines[c], pc.alignment[4 * c + 3], 1e-6);
    point_cloud_free(&pc);

    /* Fewer than 2 points: scene_scale falls back to 1.0, so the frustum depth is 0.03. */
    for (int i = 0; i < n * h * w; i++) s.pred.depth[i] = i == 5 ? 2.0f : 0.0f;
    CHECK(fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err) == 0 && pc.n_points == 1);
    double want[16][3];
    expected_frustum(&s, &pc, 1, 0.03, want);
    for (int v = 0; v < 16; v++)
        for (int c = 0; c < 3; c++) CHECK_NEAR(pc.camera_lines[48 + 3 * v + c], want[v][c], 1e-6);
    point_cloud_free(&pc);
    scene_free(&s);
}

/* ---------- speed ---------- */

static void test_speed(void) {
    const int n = 10, h = 378, w = 504;
    scene s = scene_new(n, h, w);
    sample_rng rng;
    sample_rng_seed(&rng, 11);
    for (int i = 0; i < n; i++) {
        double r[9], t[3] = {0.2 * i, 0.0, 0.1 * i};
        rotation(0, 1, 0, 0.05 * i, r);
        set_camera(&s, i, 400, 400, w / 2.0, h / 2.0, r, t);
    }
    size_t px = (size_t)n * h * w;
    for (size_t i = 0; i < px; i++) {
        s.pred.depth[i] = 0.5f + (float)sample_rng_below(&rng, 1 << 20) / (1 << 17);
        s.pred.conf[i] = 1.0f + (float)sample_rng_below(&rng, 1 << 20) / (1 << 16);
        s.rgb[3 * i] = (uint8_t)i;
    }
    const long caps[2] = {10000000, 1000000};
    for (int c = 0; c < 2; c++) {
        fusion_params p = params(10, caps[c], 1);
        double best = 1e30;
        size_t kept = 0;
        for (int rep = 0; rep < 3; rep++) {
            point_cloud pc;
            char err[128];
            double t0 = now_ms();
            int rc = fuse_point_cloud(&s.pred, s.rgb, &p, &pc, err, sizeof err);
            double dt = now_ms() - t0;
            CHECK(rc == 0);
            best = dt < best ? dt : best;
            kept = pc.n_points;
            point_cloud_free(&pc);
        }
        printf("fusion: %d views %dx%d (%zu px), cap %ld -> %zu points: %.1f ms (best of 3)\n", n, w, h, px,
               caps[c], kept, best);
        CHECK(c == 0 ? kept > px / 2 && kept < px : kept == 1000000);
    }
    scene_free(&s);
}

int main(void) {
    test_percentiles_numpy();
    test_selection_large();
    test_threshold();
    test_identity_camera();
    test_posed_views();
    test_invalid_depth_dropped();
    test_errors();
    test_downsampling();
    test_camera_colors();
    test_frustums();
    test_speed();
    CHECK_DONE("test_fusion");
}
