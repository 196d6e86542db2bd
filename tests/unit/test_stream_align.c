/* The streaming chunk aligner (worker/stream_align.c) on synthetic chunks of a known scene:
 * ray-cast depth of a room (or a tilted wall) seen by a known camera path, each chunk's
 * prediction put into its own random Sim(3) gauge with depth noise, gross outliers (some with
 * high confidence) and unconfident garbage; the recovered links and the chain composed from
 * them are compared with the ground truth. Fixed seeds; the figures reached are printed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"
#include "worker/mat3.h"
#include "worker/stream_align.h"

#define W 64
#define H 48
#define PLANE ((size_t)W * H)
#define FOCAL 50.0
#define MAX_FRAMES 16
#define PI 3.14159265358979323846

/* ---------- deterministic randomness ---------- */

static uint64_t rng_state;

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double uniform(double lo, double hi) { return lo + (hi - lo) * ((double)(rng_next() >> 11) / 9007199254740992.0); }

static double gaussian(void) { /* Box-Muller */
    double u1 = uniform(1e-300, 1.0), u2 = uniform(0.0, 1.0);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2);
}

/* ---------- small geometry helpers (test-side, written independently of the module) ---------- */

static void mat_mul(const double a[9], const double b[9], double out[9]) {
    double r[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) r[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
    memcpy(out, r, sizeof r);
}

static void mat_t(const double a[9], double out[9]) {
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) out[3 * i + j] = a[3 * j + i];
}

static void mat_vec(const double m[9], const double p[3], double out[3]) {
    for (int i = 0; i < 3; i++) out[i] = m[3 * i] * p[0] + m[3 * i + 1] * p[1] + m[3 * i + 2] * p[2];
}

static double det3(const double m[9]) {
    return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
}

static double dist(const double a[3], const double b[3]) {
    return sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]));
}

/* Rotation by `angle` about the unit axis (Rodrigues). */
static void axis_angle(const double axis[3], double angle, double r[9]) {
    double n = sqrt(axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]);
    double x = axis[0] / n, y = axis[1] / n, z = axis[2] / n, c = cos(angle), s = sin(angle), k = 1 - c;
    double m[9] = {c + x * x * k,     x * y * k - z * s, x * z * k + y * s, y * x * k + z * s, c + y * y * k,
                   y * z * k - x * s, z * x * k - y * s, z * y * k + x * s, c + z * z * k};
    memcpy(r, m, sizeof m);
}

static void random_rotation(double r[9]) {
    double axis[3] = {gaussian(), gaussian(), gaussian()};
    axis_angle(axis, uniform(-PI, PI), r);
}

/* Angle (degrees) of the rotation a b^T. */
static double rotation_error_deg(const double a[9], const double b[9]) {
    /* ||a - b||_F = 2 sqrt(2) sin(angle / 2): unlike acos of the trace, exact near 0 */
    double f = 0;
    for (int i = 0; i < 9; i++) f += (a[i] - b[i]) * (a[i] - b[i]);
    double x = sqrt(f) / (2 * sqrt(2.0));
    return 2 * asin(x > 1 ? 1 : x) * 180.0 / PI;
}

static stream_sim3 random_gauge(void) {
    stream_sim3 g;
    random_rotation(g.r);
    g.s = exp(uniform(log(0.3), log(3.0)));
    for (int i = 0; i < 3; i++) g.t[i] = uniform(-10, 10);
    return g;
}

/* ---------- the synthetic world ---------- */

typedef enum { SCENE_ROOM, SCENE_WALL } scene_kind;

static const double ROOM_LO[3] = {-4, -1.5, -3}, ROOM_HI[3] = {4, 1.5, 3};
static const double WALL_N[3] = {0.2, -0.1, 1.0}; /* tilted: depth varies across the image */
#define WALL_D 4.0

static const double K[9] = {FOCAL, 0, (W - 1) / 2.0, 0, FOCAL, (H - 1) / 2.0, 0, 0, 1};

/* Ground-truth camera j of the path: world-to-camera rotation and centre. */
static void path_camera(int j, double r[9], double c[3]) {
    double yaw[9], pitch[9], c2w[9];
    axis_angle((double[3]){0, 1, 0}, -0.4 + 0.12 * j, yaw);
    axis_angle((double[3]){1, 0, 0}, 0.08 * sin(0.9 * j), pitch);
    mat_mul(yaw, pitch, c2w);
    mat_t(c2w, r);
    c[0] = -1.5 + 0.3 * j;
    c[1] = 0.2 * sin(0.7 * j);
    c[2] = -0.5 + 0.1 * j;
}

static void w2c_of(const double r[9], const double c[3], double e[12]) {
    double rc[3];
    mat_vec(r, c, rc);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) e[4 * i + j] = r[3 * i + j];
        e[4 * i + 3] = -rc[i];
    }
}

/* True z-depth of pixel (u,v) of camera (r, c) and the world point hit; 0 when nothing is hit. */
static double ray_cast(scene_kind scene, const double r[9], const double c[3], int u, int v, double x[3]) {
    const double ray_cam[3] = {(u - K[2]) / FOCAL, (v - K[5]) / FOCAL, 1.0}; /* z = 1: lambda is depth */
    double rt[9], d[3];
    mat_t(r, rt);
    mat_vec(rt, ray_cam, d);
    double lambda = INFINITY;
    if (scene == SCENE_ROOM) {
        for (int i = 0; i < 3; i++) {
            if (d[i] == 0) continue;
            double l = ((d[i] > 0 ? ROOM_HI[i] : ROOM_LO[i]) - c[i]) / d[i];
            if (l > 0 && l < lambda) lambda = l;
        }
    } else {
        double nd = WALL_N[0] * d[0] + WALL_N[1] * d[1] + WALL_N[2] * d[2];
        double nc = WALL_N[0] * c[0] + WALL_N[1] * c[1] + WALL_N[2] * c[2];
        if (nd > 1e-9) lambda = (WALL_D - nc) / nd;
        if (!(lambda > 0)) lambda = INFINITY;
    }
    if (!isfinite(lambda)) return 0;
    for (int i = 0; i < 3; i++) x[i] = c[i] + lambda * d[i];
    return lambda;
}

typedef struct {
    double depth_noise;  /* relative Gaussian sigma */
    double outlier_rate; /* random depth; half of them with high confidence */
    double garbage_rate; /* random depth with confidence below the threshold */
    double pose_rot_deg; /* per-camera rotation noise (sigma, degrees) */
    double pose_trans;   /* per-camera centre noise (sigma, world units) */
} noise_model;

/* One chunk's prediction of path frames [first, first + n) in gauge g. */
typedef struct {
    int first, n;
    scene_kind scene;
    stream_sim3 gauge;
    float depth[MAX_FRAMES * PLANE], conf[MAX_FRAMES * PLANE];
    float intr[MAX_FRAMES * 9], extr[MAX_FRAMES * 12];
    float clean_depth[MAX_FRAMES * PLANE]; /* noise-free depth in gauge units (0 = nothing hit) */
    unsigned char corrupt[MAX_FRAMES * PLANE]; /* 1 = outlier or garbage pixel */
} chunk;

static void make_chunk(chunk *ch, scene_kind scene, int first, int n, const stream_sim3 *gauge, const noise_model *nm) {
    ch->first = first;
    ch->n = n;
    ch->scene = scene;
    ch->gauge = *gauge;
    for (int f = 0; f < n; f++) {
        double r[9], c[3], x[3], e[12], eg[12];
        path_camera(first + f, r, c);
        size_t base = PLANE * (size_t)f;
        for (int v = 0; v < H; v++)
            for (int u = 0; u < W; u++) {
                size_t i = base + (size_t)v * W + (size_t)u;
                double d = ray_cast(scene, r, c, u, v, x);
                double dn = d * (1.0 + nm->depth_noise * gaussian()), conf = uniform(2, 10);
                ch->corrupt[i] = 0;
                double pick = uniform(0, 1);
                if (pick < nm->outlier_rate) {
                    dn = uniform(0.3, 8.0);
                    conf = pick < nm->outlier_rate / 2 ? 1.5 : uniform(2, 10);
                    ch->corrupt[i] = 1;
                } else if (pick < nm->outlier_rate + nm->garbage_rate) {
                    dn = uniform(0.3, 8.0);
                    conf = 0.3;
                    ch->corrupt[i] = 1;
                }
                if (d <= 0) dn = 0, conf = 1; /* nothing hit: invalid depth */
                ch->depth[i] = (float)(gauge->s * dn);
                ch->clean_depth[i] = (float)(gauge->s * d);
                ch->conf[i] = (float)conf;
            }
        /* The chunk's camera: the true one, perturbed (network pose error), in the chunk's gauge. */
        if (nm->pose_rot_deg > 0 || nm->pose_trans > 0) {
            double dr[9], rn[9];
            double axis[3] = {gaussian(), gaussian(), gaussian()};
            axis_angle(axis, nm->pose_rot_deg * PI / 180.0 * gaussian(), dr);
            mat_mul(dr, r, rn);
            memcpy(r, rn, sizeof rn);
            for (int i = 0; i < 3; i++) c[i] += nm->pose_trans * gaussian();
        }
        w2c_of(r, c, e);
        stream_sim3_apply_extrinsics(gauge, e, eg);
        for (int i = 0; i < 12; i++) ch->extr[12 * f + i] = (float)eg[i];
        for (int i = 0; i < 9; i++) ch->intr[9 * f + i] = (float)K[i];
    }
}

/* The last n_overlap frames of a (as the previous chunk) or the first n_overlap of b. */
static stream_overlap tail_of(const chunk *a, int n_overlap) {
    int f = a->n - n_overlap;
    stream_overlap o = {a->depth + PLANE * (size_t)f, a->conf + PLANE * (size_t)f, a->intr + 9 * f, a->extr + 12 * f};
    return o;
}

static stream_overlap head_of(const chunk *b) {
    stream_overlap o = {b->depth, b->conf, b->intr, b->extr};
    return o;
}

/* Errors of an estimated link against the true one (gauge_a o gauge_b^-1): rotation (deg),
 * relative scale, and the displacement of the overlap's centre relative to its median depth. */
typedef struct {
    double rot_deg, scale_rel, trans_rel;
} link_error;

static link_error compare_link(const stream_sim3 *est, const chunk *a, const chunk *b, int n_overlap) {
    stream_sim3 binv = stream_sim3_inverse(&b->gauge), truth = stream_sim3_compose(&a->gauge, &binv);
    link_error e;
    e.rot_deg = rotation_error_deg(est->r, truth.r);
    e.scale_rel = fabs(est->s / truth.s - 1.0);
    /* The scene centre as the new chunk sees it: mean of the clean overlap points in b's gauge. */
    double centre[3] = {0, 0, 0}, depths = 0;
    long m = 0;
    for (int f = 0; f < n_overlap; f++) {
        double r[9], c[3], x[3];
        path_camera(b->first + f, r, c);
        for (int v = 0; v < H; v += 4)
            for (int u = 0; u < W; u += 4) {
                double d = ray_cast(b->scene, r, c, u, v, x);
                if (d <= 0) continue;
                stream_sim3_apply_point(&b->gauge, x, x);
                for (int i = 0; i < 3; i++) centre[i] += x[i];
                depths += d;
                m++;
            }
    }
    for (int i = 0; i < 3; i++) centre[i] /= (double)m;
    double pe[3], pt[3];
    stream_sim3_apply_point(est, centre, pe);
    stream_sim3_apply_point(&truth, centre, pt);
    e.trans_rel = dist(pe, pt) / (a->gauge.s * depths / (double)m);
    return e;
}

static const noise_model NOISY = {0.01, 0.10, 0.03, 0, 0};
static const noise_model CLEAN = {0, 0, 0, 0, 0};

/* ---------- helpers' own tests ---------- */

static void test_sim3_algebra(void) {
    rng_state = 11;
    stream_sim3 a = random_gauge(), b = random_gauge();
    double p[3] = {0.3, -1.2, 2.5}, q1[3], q2[3];
    /* compose = apply one after the other */
    stream_sim3 ab = stream_sim3_compose(&a, &b);
    stream_sim3_apply_point(&b, p, q1);
    stream_sim3_apply_point(&a, q1, q1);
    stream_sim3_apply_point(&ab, p, q2);
    CHECK(dist(q1, q2) < 1e-12 * (1 + fabs(q1[0]) + fabs(q1[1]) + fabs(q1[2])));
    /* inverse undoes */
    stream_sim3 ainv = stream_sim3_inverse(&a), id = stream_sim3_compose(&ainv, &a);
    CHECK_NEAR(id.s, 1.0, 1e-14);
    for (int i = 0; i < 9; i++) CHECK_NEAR(id.r[i], i % 4 == 0 ? 1.0 : 0.0, 1e-14);
    for (int i = 0; i < 3; i++) CHECK_NEAR(id.t[i], 0.0, 1e-12);
    /* Extrinsics: a point seen at (u,v) with depth d is, after mapping world and camera by a,
     * seen at the same (u,v) with depth s*d, by a camera centred at a(centre). */
    double r[9], c[3], e[12], ea[12], x[3] = {1.0, 0.5, 4.0};
    path_camera(3, r, c);
    w2c_of(r, c, e);
    stream_sim3_apply_extrinsics(&a, e, ea);
    double xc[3], xa[3], xca[3];
    for (int i = 0; i < 3; i++) xc[i] = e[4 * i] * x[0] + e[4 * i + 1] * x[1] + e[4 * i + 2] * x[2] + e[4 * i + 3];
    stream_sim3_apply_point(&a, x, xa);
    for (int i = 0; i < 3; i++) xca[i] = ea[4 * i] * xa[0] + ea[4 * i + 1] * xa[1] + ea[4 * i + 2] * xa[2] + ea[4 * i + 3];
    CHECK_NEAR(xca[2], a.s * xc[2], 1e-10);
    CHECK_NEAR(xca[0] / xca[2], xc[0] / xc[2], 1e-12);
    CHECK_NEAR(xca[1] / xca[2], xc[1] / xc[2], 1e-12);
    double ra[9] = {ea[0], ea[1], ea[2], ea[4], ea[5], ea[6], ea[8], ea[9], ea[10]};
    CHECK_NEAR(det3(ra), 1.0, 1e-12);
    /* in place */
    double e2[12];
    memcpy(e2, e, sizeof e);
    stream_sim3_apply_extrinsics(&a, e2, e2);
    for (int i = 0; i < 12; i++) CHECK_NEAR(e2[i], ea[i], 1e-12);
}

static void test_backproject(void) {
    /* Identity camera: the principal point at depth 2 is (0, 0, 2). */
    const float kf[9] = {FOCAL, 0, 10, 0, FOCAL, 20, 0, 0, 1};
    const float id[12] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
    stream_camera cam;
    CHECK(stream_camera_prepare(kf, id, &cam) == 0);
    double x[3];
    stream_camera_backproject(&cam, 10, 20, 2.0, x);
    CHECK_NEAR(x[0], 0, 1e-12);
    CHECK_NEAR(x[1], 0, 1e-12);
    CHECK_NEAR(x[2], 2, 1e-12);
    stream_camera_backproject(&cam, 10 + FOCAL, 20, 3.0, x); /* one focal length right: x = z */
    CHECK_NEAR(x[0], 3, 1e-12);
    /* Round trip: project a world point with a real camera, back-project it. */
    double r[9], c[3], e[12], p[3] = {0.7, -0.4, 2.9};
    path_camera(5, r, c);
    w2c_of(r, c, e);
    float ef[12], kk[9];
    for (int i = 0; i < 12; i++) ef[i] = (float)e[i];
    for (int i = 0; i < 9; i++) kk[i] = (float)K[i];
    CHECK(stream_camera_prepare(kk, ef, &cam) == 0);
    double pc[3];
    for (int i = 0; i < 3; i++) pc[i] = (double)ef[4 * i] * p[0] + (double)ef[4 * i + 1] * p[1] + (double)ef[4 * i + 2] * p[2] + (double)ef[4 * i + 3];
    double u = K[0] * pc[0] / pc[2] + K[2], v = K[4] * pc[1] / pc[2] + K[5];
    stream_camera_backproject(&cam, u, v, pc[2], x);
    CHECK(dist(x, p) < 1e-9);
    /* singular intrinsics and non-finite extrinsics are refused */
    const float ksing[9] = {0, 0, 0, 0, 1, 0, 0, 0, 1};
    CHECK(stream_camera_prepare(ksing, id, &cam) == -1);
    float enan[12];
    memcpy(enan, id, sizeof id);
    enan[3] = NAN;
    CHECK(stream_camera_prepare(kf, enan, &cam) == -1);
}

static void check_svd(const double a[9], const char *what) {
    double u[9], s[3], v[9], ut[9], vt[9], uu[9], vv[9];
    mat3_svd(a, u, s, v);
    mat_t(u, ut);
    mat_t(v, vt);
    mat_mul(ut, u, uu);
    mat_mul(vt, v, vv);
    double scale = fabs(s[0]) > 0 ? s[0] : 1, err_orth = 0, err_rec = 0;
    for (int i = 0; i < 9; i++) {
        double idv = i % 4 == 0 ? 1.0 : 0.0;
        err_orth = fmax(err_orth, fmax(fabs(uu[i] - idv), fabs(vv[i] - idv)));
    }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double rec = 0;
            for (int k = 0; k < 3; k++) rec += u[3 * i + k] * s[k] * v[3 * j + k];
            err_rec = fmax(err_rec, fabs(rec - a[3 * i + j]) / scale);
        }
    CHECK_MSG(err_orth < 1e-12, "%s: orthonormality error %g", what, err_orth);
    CHECK_MSG(err_rec < 1e-12, "%s: reconstruction error %g", what, err_rec);
    CHECK_MSG(s[0] >= s[1] && s[1] >= s[2] && s[2] >= 0, "%s: sigma %g %g %g", what, s[0], s[1], s[2]);
}

static void test_svd(void) {
    rng_state = 5;
    for (int trial = 0; trial < 200; trial++) {
        double a[9];
        for (int i = 0; i < 9; i++) a[i] = gaussian();
        check_svd(a, "random");
    }
    /* rank 2 (a planar covariance), rank 1, zero, repeated singular values, a reflection */
    double r1[9], r2[9], t[9];
    random_rotation(r1);
    random_rotation(r2);
    double d2[9] = {3, 0, 0, 0, 1, 0, 0, 0, 0}, d1[9] = {2, 0, 0, 0, 0, 0, 0, 0, 0}, deq[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1e-3};
    double a2[9], a1[9], aeq[9];
    mat_mul(r1, d2, t);
    mat_mul(t, r2, a2);
    mat_mul(r1, d1, t);
    mat_mul(t, r2, a1);
    mat_mul(r1, deq, t);
    mat_mul(t, r2, aeq);
    check_svd(a2, "rank 2");
    check_svd(a1, "rank 1");
    check_svd((double[9]){0}, "zero");
    check_svd(aeq, "repeated");
    check_svd((double[9]){1, 0, 0, 0, 1, 0, 0, 0, -1}, "reflection");
    check_svd((double[9]){0, -2, 0, 5, 0, 0, 0, 0, 1e-9}, "permutation");
    double u[9], s[3], v[9];
    mat3_svd(a2, u, s, v);
    CHECK_NEAR(s[0], 3, 1e-12);
    CHECK_NEAR(s[1], 1, 1e-12);
    CHECK_NEAR(s[2], 0, 1e-12);
}

/* Reflection handling in the rotation: points on a plane (rank-2 covariance, where u v^T is a
 * reflection half the time) must give the true rotation; a mirrored set must still give a
 * rotation (det +1), never the mirror. */
static void test_rotation_reflection(void) {
    rng_state = 21;
    int naive_reflections = 0;
    for (int trial = 0; trial < 50; trial++) {
        double rt[9], h[9] = {0}, r[9];
        random_rotation(rt);
        for (int k = 0; k < 30; k++) {
            double b[3] = {uniform(-1, 1), uniform(-1, 1), 0}, a[3];
            mat_vec(rt, b, a);
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) h[3 * i + j] += a[i] * b[j];
        }
        mat3_rotation_from_covariance(h, r);
        CHECK_NEAR(det3(r), 1.0, 1e-12);
        CHECK_MSG(rotation_error_deg(r, rt) < 1e-6, "planar trial %d: %g deg", trial, rotation_error_deg(r, rt));
        double u[9], s[3], v[9], uvt[9], vt[9];
        mat3_svd(h, u, s, v);
        mat_t(v, vt);
        mat_mul(u, vt, uvt);
        naive_reflections += det3(uvt) < 0;
    }
    /* The test means something only if the naive u v^T was indeed a reflection some of the time. */
    printf("  planar covariances whose naive u v^T was a reflection: %d / 50 (all fixed)\n", naive_reflections);
    CHECK(naive_reflections > 0);
    /* A true mirror: the output is a rotation. */
    double mirror[9] = {1, 0, 0, 0, 1, 0, 0, 0, -1}, r[9];
    mat3_rotation_from_covariance(mirror, r);
    CHECK_NEAR(det3(r), 1.0, 1e-12);
}

/* ---------- the aligner ---------- */

static int cmpf(const void *x, const void *y) {
    float a = *(const float *)x, b = *(const float *)y;
    return (a > b) - (a < b);
}

static chunk chunks[5]; /* static: ~1 MB each, too large for the stack */

/* One link: chunk A (frames 0..3) and chunk B (frames 2..5), overlap 2, random gauges, noise and
 * outliers. Also shows IRLS does the work: the closed form alone is clearly worse. */
static void test_pair(void) {
    rng_state = 1001;
    stream_sim3 ga = random_gauge(), gb = random_gauge();
    make_chunk(&chunks[0], SCENE_ROOM, 0, 4, &ga, &NOISY);
    make_chunk(&chunks[1], SCENE_ROOM, 2, 4, &gb, &NOISY);
    stream_overlap pa = tail_of(&chunks[0], 2), pb = head_of(&chunks[1]);
    stream_sim3 s;
    stream_align_report rep;
    int st = stream_align_overlap(&pa, &pb, 2, H, W, NULL, &s, &rep);
    CHECK_MSG(st == STREAM_ALIGN_OK, "%s", stream_align_status_text(st));
    link_error e = compare_link(&s, &chunks[0], &chunks[1], 2);
    printf("  pair (room, 10%% outliers, 3%% garbage, 1%% noise): rot %.4f deg, scale %.2e, trans %.2e of depth; "
           "kept %ld/%ld, %d iterations%s, rms %.3f of depth, inliers %.3f\n",
           e.rot_deg, e.scale_rel, e.trans_rel, rep.n_kept, rep.n_pixels, rep.iterations,
           rep.converged ? " (converged)" : "", rep.rms_residual_rel, rep.inlier_fraction);
    CHECK(e.rot_deg < 0.25);
    CHECK(e.scale_rel < 2e-3);
    CHECK(e.trans_rel < 1e-3);
    CHECK(rep.iterations >= 1 && rep.iterations <= 5);
    CHECK(rep.inlier_fraction > 0.75 && rep.inlier_fraction < 0.9); /* ~19 % of pairs have an outlier */

    /* The selection rule, recounted independently: valid in both, conf > 0.1 * min(medians). */
    float ca[2 * PLANE], cb[2 * PLANE];
    size_t na = 0, nb = 0;
    for (size_t i = 0; i < 2 * PLANE; i++) {
        if (pa.depth[i] > 0) ca[na++] = pa.conf[i];
        if (pb.depth[i] > 0) cb[nb++] = pb.conf[i];
    }
    qsort(ca, na, sizeof *ca, cmpf);
    qsort(cb, nb, sizeof *cb, cmpf);
    double ma = na % 2 ? ca[na / 2] : 0.5 * ((double)ca[na / 2 - 1] + ca[na / 2]);
    double mb = nb % 2 ? cb[nb / 2] : 0.5 * ((double)cb[nb / 2 - 1] + cb[nb / 2]);
    double thr = 0.1 * fmin(ma, mb);
    long expect = 0;
    for (size_t i = 0; i < 2 * PLANE; i++)
        expect += pa.depth[i] > 0 && pb.depth[i] > 0 && pa.conf[i] > thr && pb.conf[i] > thr;
    CHECK_NEAR(rep.median_conf_prev, ma, 1e-6);
    CHECK_NEAR(rep.median_conf_new, mb, 1e-6);
    CHECK_NEAR(rep.conf_threshold, thr, 1e-9);
    CHECK_MSG(rep.n_kept == expect, "kept %ld, expected %ld", rep.n_kept, expect);
    CHECK(rep.n_kept < (long)(0.96 * 2 * PLANE)); /* the garbage (conf 0.3 < threshold) is gone */

    /* Symmetry: aligning A to B gives (nearly: the Huber unit is each target's own median
     * depth) the inverse of aligning B to A. */
    stream_sim3 back, loop;
    CHECK(stream_align_overlap(&pb, &pa, 2, H, W, NULL, &back, NULL) == STREAM_ALIGN_OK);
    loop = stream_sim3_compose(&s, &back);
    double asym = fabs(loop.s - 1);
    for (int i = 0; i < 9; i++) asym = fmax(asym, fabs(loop.r[i] - (i % 4 == 0 ? 1.0 : 0.0)));
    for (int i = 0; i < 3; i++) asym = fmax(asym, fabs(loop.t[i]) / rep.median_depth);
    printf("  pair aligned both ways: composition differs from the identity by %.1e\n", asym);
    CHECK(asym < 1e-3);

    /* IRLS at work: with 20 %% outliers in the new chunk only, the closed form's scale is pulled by
     * the outliers' spread, Huber IRLS removes most of that (not all: Huber never gives an
     * outlier zero weight, and 5 iterations do not reach its fixed point). */
    rng_state = 1002;
    stream_sim3 gc = random_gauge(), gd = random_gauge();
    const noise_model clean_1pc = {0.01, 0, 0, 0, 0}, dirty = {0.01, 0.2, 0, 0, 0};
    make_chunk(&chunks[0], SCENE_ROOM, 0, 4, &gc, &clean_1pc);
    make_chunk(&chunks[1], SCENE_ROOM, 2, 4, &gd, &dirty);
    stream_align_options o;
    stream_align_default_options(&o);
    o.max_iterations = 0;
    stream_sim3 s0, s5;
    CHECK(stream_align_overlap(&pa, &pb, 2, H, W, &o, &s0, &rep) == STREAM_ALIGN_OK);
    CHECK(rep.iterations == 0 && !rep.converged);
    CHECK(stream_align_overlap(&pa, &pb, 2, H, W, NULL, &s5, &rep) == STREAM_ALIGN_OK);
    link_error e0 = compare_link(&s0, &chunks[0], &chunks[1], 2), e5 = compare_link(&s5, &chunks[0], &chunks[1], 2);
    printf("  20%% outliers in the new chunk only: closed form rot %.3f deg, scale %.2e, trans %.2e; "
           "after %d IRLS iterations rot %.3f deg, scale %.2e, trans %.2e\n",
           e0.rot_deg, e0.scale_rel, e0.trans_rel, rep.iterations, e5.rot_deg, e5.scale_rel, e5.trans_rel);
    CHECK(e0.scale_rel > 3 * e5.scale_rel && e0.trans_rel > 3 * e5.trans_rel);
    CHECK(e5.rot_deg < 0.5 && e5.scale_rel < 0.05 && e5.trans_rel < 0.01);

    /* Noise-free: exact up to the float storage of predictions. */
    rng_state = 1001;
    ga = random_gauge(), gb = random_gauge();
    make_chunk(&chunks[0], SCENE_ROOM, 0, 4, &ga, &CLEAN);
    make_chunk(&chunks[1], SCENE_ROOM, 2, 4, &gb, &CLEAN);
    CHECK(stream_align_overlap(&pa, &pb, 2, H, W, NULL, &s, &rep) == STREAM_ALIGN_OK);
    e = compare_link(&s, &chunks[0], &chunks[1], 2);
    printf("  pair, noise-free: rot %.2e deg, scale %.2e, trans %.2e, rms %.1e of depth, %d iterations\n", e.rot_deg,
           e.scale_rel, e.trans_rel, rep.rms_residual_rel, rep.iterations);
    CHECK(e.rot_deg < 1e-4 && e.scale_rel < 1e-6 && e.trans_rel < 1e-6);
    CHECK(rep.converged && rep.rms_residual_rel < 1e-5);
}

/* The confidence weights matter: the new chunk's left half is biased (depth +5 %%, within the
 * Huber band, so IRLS cannot tell) at confidence 1, its right half accurate at confidence 1000;
 * weighted by sqrt(c_prev c_new) the fit follows the confident half. */
static void test_confidence_weighting(void) {
    rng_state = 6001;
    stream_sim3 ga = random_gauge(), gb = random_gauge();
    const noise_model low = {0.002, 0, 0, 0, 0};
    make_chunk(&chunks[0], SCENE_ROOM, 0, 4, &ga, &low);
    make_chunk(&chunks[1], SCENE_ROOM, 2, 4, &gb, &low);
    for (size_t i = 0; i < 2 * PLANE; i++) {
        int left = (int)(i % W) < W / 2;
        chunks[1].conf[i] = left ? 1.0f : 1000.0f;
        if (left) chunks[1].depth[i] *= 1.05f;
    }
    stream_overlap pa = tail_of(&chunks[0], 2), pb = head_of(&chunks[1]);
    stream_sim3 s;
    stream_align_report rep;
    CHECK(stream_align_overlap(&pa, &pb, 2, H, W, NULL, &s, &rep) == STREAM_ALIGN_OK);
    link_error e = compare_link(&s, &chunks[0], &chunks[1], 2);
    printf("  half the overlap 5%% off at low confidence: scale %.2e, trans %.2e (kept %ld of %ld)\n", e.scale_rel,
           e.trans_rel, rep.n_kept, rep.n_pixels);
    CHECK(rep.n_kept == rep.n_pixels); /* confidence 1 is above 0.1 x the median: the weights do it */
    CHECK(e.scale_rel < 1e-2);
}

/* Identity: both chunks in the same gauge with the same prediction. */
static void test_identity(void) {
    rng_state = 77;
    stream_sim3 g = random_gauge();
    make_chunk(&chunks[0], SCENE_ROOM, 0, 3, &g, &NOISY);
    stream_overlap o = head_of(&chunks[0]);
    stream_sim3 s;
    stream_align_report rep;
    CHECK(stream_align_overlap(&o, &o, 3, H, W, NULL, &s, &rep) == STREAM_ALIGN_OK);
    double err = fabs(s.s - 1);
    for (int i = 0; i < 9; i++) err = fmax(err, fabs(s.r[i] - (i % 4 == 0 ? 1.0 : 0.0)));
    for (int i = 0; i < 3; i++) err = fmax(err, fabs(s.t[i]) / rep.median_depth);
    printf("  identity (same prediction twice): max deviation %.1e, %d iteration(s)\n", err, rep.iterations);
    CHECK(err < 1e-6);
    CHECK(rep.converged && rep.iterations == 1 && rep.rms_residual_rel < 1e-6 && rep.inlier_fraction == 1.0);
}

/* A chain: chunks of `size` frames overlapping by `overlap`, links composed into chunk 0's gauge;
 * merged cameras and points against the truth mapped into that gauge. */
static void run_chain(scene_kind scene, int n_chunks, int size, int overlap, int last_size, const noise_model *nm,
                      const char *what, double tol_rot_deg, double tol_centre, double tol_points) {
    stream_sim3 to_session[5];
    double max_rot = 0, max_centre = 0, sum_p2 = 0, median_depth = 0;
    long n_points = 0;
    int ok = 1;
    for (int k = 0; k < n_chunks; k++) {
        stream_sim3 g = random_gauge();
        int n = k == n_chunks - 1 ? last_size : size;
        make_chunk(&chunks[k], scene, k * (size - overlap), n, &g, nm);
        if (k == 0) {
            to_session[0] = stream_sim3_identity();
            continue;
        }
        stream_overlap prev = tail_of(&chunks[k - 1], overlap), next = head_of(&chunks[k]);
        stream_sim3 link;
        stream_align_report rep;
        int st = stream_align_overlap(&prev, &next, overlap, H, W, NULL, &link, &rep);
        CHECK_MSG(st == STREAM_ALIGN_OK, "%s link %d: %s", what, k, stream_align_status_text(st));
        ok &= st == STREAM_ALIGN_OK;
        to_session[k] = stream_sim3_compose(&to_session[k - 1], &link);
        if (k == 1) median_depth = rep.median_depth / chunks[0].gauge.s; /* world units */
    }
    if (!ok) return;
    const stream_sim3 *g0 = &chunks[0].gauge;
    const double unit = g0->s * median_depth; /* the session's units of "one viewing distance" */
    for (int k = 0; k < n_chunks; k++) {
        const chunk *ch = &chunks[k];
        for (int f = 0; f < ch->n; f++) {
            /* camera */
            double e[12], em[12], r[9], c[3], et[12];
            for (int i = 0; i < 12; i++) e[i] = ch->extr[12 * f + i];
            stream_sim3_apply_extrinsics(&to_session[k], e, em);
            path_camera(ch->first + f, r, c);
            w2c_of(r, c, et);
            stream_sim3_apply_extrinsics(g0, et, et);
            double rm[9] = {em[0], em[1], em[2], em[4], em[5], em[6], em[8], em[9], em[10]};
            double rtr[9] = {et[0], et[1], et[2], et[4], et[5], et[6], et[8], et[9], et[10]};
            double cm[3], ct[3], rmt[9], rtt[9], tm[3] = {em[3], em[7], em[11]}, tt[3] = {et[3], et[7], et[11]};
            mat_t(rm, rmt);
            mat_t(rtr, rtt);
            mat_vec(rmt, tm, cm);
            mat_vec(rtt, tt, ct);
            for (int i = 0; i < 3; i++) cm[i] = -cm[i], ct[i] = -ct[i];
            max_rot = fmax(max_rot, rotation_error_deg(rm, rtr));
            max_centre = fmax(max_centre, dist(cm, ct) / unit);
            /* points: the chunk's noise-free depth through its own camera, mapped to the session */
            stream_camera cam;
            CHECK(stream_camera_prepare(ch->intr + 9 * f, ch->extr + 12 * f, &cam) == 0);
            for (int v = 0; v < H; v += 2)
                for (int u = 0; u < W; u += 2) {
                    size_t i = PLANE * (size_t)f + (size_t)v * W + (size_t)u;
                    double x[3], xt[3];
                    if (!(ch->clean_depth[i] > 0)) continue;
                    stream_camera_backproject(&cam, u, v, ch->clean_depth[i], x);
                    stream_sim3_apply_point(&to_session[k], x, x);
                    ray_cast(scene, r, c, u, v, xt);
                    stream_sim3_apply_point(g0, xt, xt);
                    double d = dist(x, xt) / unit;
                    sum_p2 += d * d;
                    n_points++;
                }
        }
    }
    double rms_points = sqrt(sum_p2 / (double)n_points);
    printf("  %s: cameras max rot %.4f deg, max centre %.2e, points rms %.2e (of the median depth)\n", what, max_rot,
           max_centre, rms_points);
    CHECK_MSG(max_rot < tol_rot_deg, "%s: %g deg", what, max_rot);
    CHECK_MSG(max_centre < tol_centre, "%s: centre %g", what, max_centre);
    CHECK_MSG(rms_points < tol_points, "%s: points %g", what, rms_points);
}

static void test_chains(void) {
    /* 4 chunks of 4 frames, overlap 2 (frames 0-3, 2-5, 4-7, 6-9), 1 % depth noise only */
    rng_state = 2023;
    const noise_model noise_only = {0.01, 0, 0, 0, 0};
    run_chain(SCENE_ROOM, 4, 4, 2, 4, &noise_only, "chain 4x4/2, room, 1% depth noise", 0.3, 5e-3, 5e-3);
    /* the same with outliers (10 % per chunk, half of them confident) and garbage */
    rng_state = 2024;
    run_chain(SCENE_ROOM, 4, 4, 2, 4, &NOISY, "chain 4x4/2, room, noise+outliers", 1.0, 2e-2, 1e-2);
    /* ... and per-camera pose noise (0.2 deg, 1 cm): drift along the chain, no loop closure */
    rng_state = 2025;
    noise_model posed = NOISY;
    posed.pose_rot_deg = 0.2;
    posed.pose_trans = 0.01;
    run_chain(SCENE_ROOM, 4, 4, 2, 4, &posed, "chain 4x4/2, room, noise+outliers+pose noise", 2.5, 3e-2, 3e-2);
    /* chunks that bring one new image each: overlap = size - 1 (frames 0-3, 1-4, 2-5, 3-6, 4-7) */
    rng_state = 2026;
    run_chain(SCENE_ROOM, 5, 4, 3, 4, &NOISY, "chain of one new image per chunk (4/3), noise+outliers", 1.0, 2e-2, 1e-2);
    /* a last chunk holding only the overlap plus one new image (frames 0-3, 2-5, 4-7, then 6-8) */
    rng_state = 2027;
    run_chain(SCENE_ROOM, 4, 4, 2, 3, &NOISY, "chain with a last chunk of one new image, noise+outliers", 1.0, 2e-2, 1e-2);
    /* planar scene: a tilted wall; point correspondences pin all 7 parameters */
    rng_state = 2028;
    run_chain(SCENE_WALL, 3, 4, 2, 4, &NOISY, "chain on a planar scene (tilted wall), noise+outliers", 1.0, 2e-2, 1e-2);
}

/* Overlap with almost no confident pixels: must fail cleanly (identity out, status TOO_FEW). */
static void test_too_few(void) {
    rng_state = 3001;
    stream_sim3 ga = random_gauge(), gb = random_gauge();
    make_chunk(&chunks[0], SCENE_ROOM, 0, 3, &ga, &NOISY);
    make_chunk(&chunks[1], SCENE_ROOM, 1, 3, &gb, &NOISY);
    /* The new chunk is unsure of everything but 40 pixels (confidence 0 elsewhere, so its median
     * is 0 and only strictly positive confidences pass). */
    for (size_t i = 0; i < 2 * PLANE; i++) chunks[1].conf[i] = (i % 97 == 0 && i < 40 * 97) ? 5.0f : 0.0f;
    stream_overlap pa = tail_of(&chunks[0], 2), pb = head_of(&chunks[1]);
    stream_sim3 s;
    s.s = 42;
    stream_align_report rep;
    int st = stream_align_overlap(&pa, &pb, 2, H, W, NULL, &s, &rep);
    printf("  almost no confident pixels: %s (kept %ld)\n", stream_align_status_text(st), rep.n_kept);
    CHECK(st == STREAM_ALIGN_TOO_FEW);
    CHECK(rep.n_kept <= 40 && rep.n_kept > 0);
    CHECK(s.s == 1.0 && s.r[0] == 1.0 && s.t[0] == 0.0);
    /* The same 40 pixels are enough when the caller lowers the minimum (the rule, not the data). */
    stream_align_options o;
    stream_align_default_options(&o);
    o.min_correspondences = 20;
    CHECK(stream_align_overlap(&pa, &pb, 2, H, W, &o, &s, &rep) == STREAM_ALIGN_OK);
    /* Nothing valid at all: every depth invalid in the new chunk. */
    for (size_t i = 0; i < 2 * PLANE; i++) chunks[1].depth[i] = i % 2 ? NAN : -1.0f;
    CHECK(stream_align_overlap(&pa, &pb, 2, H, W, NULL, &s, &rep) == STREAM_ALIGN_TOO_FEW);
    CHECK(rep.n_kept == 0 && s.s == 1.0);
}

/* Collinear kept points (one image row of one frame on a wall is a line): DEGENERATE, exact or
 * noisy, however many pixels; bad inputs are refused. */
static void test_degenerate(void) {
    rng_state = 4001;
    stream_sim3 ga = random_gauge(), gb = random_gauge();
    for (int noisy = 0; noisy < 2; noisy++) {
        make_chunk(&chunks[0], SCENE_WALL, 0, 2, &ga, noisy ? &NOISY : &CLEAN);
        make_chunk(&chunks[1], SCENE_WALL, 1, 1, &gb, noisy ? &NOISY : &CLEAN);
        for (int c = 0; c < 2; c++)
            for (size_t i = 0; i < PLANE; i++) {
                float *conf = c ? chunks[1].conf : chunks[0].conf + PLANE;
                int row = (int)(i / W);
                conf[i] = row == H / 2 ? 5.0f : 0.0f;
                if (row == H / 2 && noisy) { /* no outliers on the line: its noise alone must be seen */
                    float *d = c ? chunks[1].depth : chunks[0].depth + PLANE;
                    const float *clean = c ? chunks[1].clean_depth : chunks[0].clean_depth + PLANE;
                    d[i] = clean[i] * (float)(1.0 + 0.01 * gaussian());
                }
            }
        stream_overlap pa = tail_of(&chunks[0], 1), pb = head_of(&chunks[1]);
        stream_align_options o;
        stream_align_default_options(&o);
        o.min_correspondences = 32; /* the row has 64: the count is not what fails */
        stream_sim3 s;
        stream_align_report rep;
        int st = stream_align_overlap(&pa, &pb, 1, H, W, &o, &s, &rep);
        printf("  collinear overlap (%s): %s (kept %ld)\n", noisy ? "1% noise" : "exact", stream_align_status_text(st),
               rep.n_kept);
        CHECK(st == STREAM_ALIGN_DEGENERATE);
        CHECK(rep.n_kept == W && s.s == 1.0);
        /* Control: the same wall with two rows is a plane, and solves. */
        for (int c = 0; c < 2; c++) {
            float *conf = c ? chunks[1].conf : chunks[0].conf + PLANE;
            float *d = c ? chunks[1].depth : chunks[0].depth + PLANE;
            const float *clean = c ? chunks[1].clean_depth : chunks[0].clean_depth + PLANE;
            for (int u = 0; u < W; u++) {
                size_t i = (size_t)(H / 4) * W + (size_t)u;
                conf[i] = 5.0f;
                d[i] = clean[i] * (float)(1.0 + (noisy ? 0.01 * gaussian() : 0.0));
            }
        }
        st = stream_align_overlap(&pa, &pb, 1, H, W, &o, &s, &rep);
        CHECK_MSG(st == STREAM_ALIGN_OK, "two rows: %s", stream_align_status_text(st));
        link_error e = compare_link(&s, &chunks[0], &chunks[1], 1);
        printf("  control, two rows of the wall (%s): rot %.2e deg, scale %.2e\n", noisy ? "1% noise" : "exact",
               e.rot_deg, e.scale_rel);
        CHECK(e.rot_deg < (noisy ? 2.0 : 1e-3) && e.scale_rel < (noisy ? 2e-2 : 1e-6));
    }
    /* Bad inputs. */
    stream_overlap pa = tail_of(&chunks[0], 1), pb = head_of(&chunks[1]);
    stream_sim3 s;
    CHECK(stream_align_overlap(NULL, &pb, 1, H, W, NULL, &s, NULL) == STREAM_ALIGN_BAD_INPUT);
    CHECK(stream_align_overlap(&pa, &pb, 0, H, W, NULL, &s, NULL) == STREAM_ALIGN_BAD_INPUT);
    CHECK(stream_align_overlap(&pa, &pb, 1, H, W, NULL, NULL, NULL) == STREAM_ALIGN_BAD_INPUT);
    chunks[1].intr[0] = 0;
    chunks[1].intr[4] = 0; /* singular K */
    CHECK(stream_align_overlap(&pa, &pb, 1, H, W, NULL, &s, NULL) == STREAM_ALIGN_BAD_INPUT);
}

/* A mirrored gauge (not a similarity: no network predicts one) still gives a rotation, and the
 * report shows the misfit instead of hiding it. */
static void test_mirrored_gauge(void) {
    rng_state = 5001;
    stream_sim3 ga = random_gauge(), gb = stream_sim3_identity();
    make_chunk(&chunks[0], SCENE_ROOM, 0, 3, &ga, &CLEAN);
    make_chunk(&chunks[1], SCENE_ROOM, 1, 3, &gb, &CLEAN);
    /* Mirror the new chunk's world through x = 0: cameras get the reflection, depth is unchanged. */
    for (int f = 0; f < 3; f++) {
        float *e = chunks[1].extr + 12 * f;
        for (int i = 0; i < 3; i++) e[4 * i] = -e[4 * i]; /* E' = E diag(-1,1,1,1): rotation part det -1 */
    }
    stream_overlap pa = tail_of(&chunks[0], 2), pb = head_of(&chunks[1]);
    stream_sim3 s;
    stream_align_report rep;
    int st = stream_align_overlap(&pa, &pb, 2, H, W, NULL, &s, &rep);
    printf("  mirrored gauge: %s, det R %.6f, rms %.3f of depth, inliers %.2f\n", stream_align_status_text(st),
           det3(s.r), rep.rms_residual_rel, rep.inlier_fraction);
    CHECK(st == STREAM_ALIGN_OK);
    CHECK_NEAR(det3(s.r), 1.0, 1e-9);
    CHECK(rep.rms_residual_rel > 0.01 && rep.inlier_fraction < 0.95); /* a true fit: ~1e-7 and 1.0 */
}

/* The prediction slice helper. */
static void test_overlap_from_prediction(void) {
    float depth[3 * 4], conf[3 * 4], intr[27], extr[36];
    da3_prediction p = {3, 2, 2, depth, conf, extr, intr};
    stream_overlap o;
    CHECK(stream_overlap_from_prediction(&p, 1, 2, &o) == 0);
    CHECK(o.depth == depth + 4 && o.conf == conf + 4 && o.intrinsics == intr + 9 && o.extrinsics == extr + 12);
    CHECK(stream_overlap_from_prediction(&p, 2, 2, &o) == -1);
    CHECK(stream_overlap_from_prediction(&p, -1, 1, &o) == -1);
    CHECK(stream_overlap_from_prediction(&p, 0, 0, &o) == -1);
}

int main(void) {
    test_sim3_algebra();
    test_backproject();
    test_svd();
    test_rotation_reflection();
    test_overlap_from_prediction();
    test_pair();
    test_identity();
    test_confidence_weighting();
    test_chains();
    test_too_few();
    test_degenerate();
    test_mirrored_gauge();
    CHECK_DONE("test_stream_align");
}
