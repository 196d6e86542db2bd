/* Known-camera maths: inverse, DA3's extrinsics normalisation, Umeyama Sim(3), the RANSAC scale. */
#include <math.h>
#include <string.h>

#include "tests/unit/check.h"
#include "worker/pose_align.h"

/* Rotation from Euler angles (z, y, x), row-major. */
static void rotation(double az, double ay, double ax, double r[9]) {
    double cz = cos(az), sz = sin(az), cy = cos(ay), sy = sin(ay), cx = cos(ax), sx = sin(ax);
    double m[9] = {cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
                   sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
                   -sy,     cy * sx,                cy * cx};
    memcpy(r, m, sizeof m);
}

/* World-to-camera 4x4 for a camera with rotation r (world-to-camera) placed at centre c. */
static void extrinsic(const double r[9], const double c[3], double e[16]) {
    memset(e, 0, 16 * sizeof *e);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) e[i * 4 + j] = r[i * 3 + j];
        e[i * 4 + 3] = -(r[i * 3] * c[0] + r[i * 3 + 1] * c[1] + r[i * 3 + 2] * c[2]);
    }
    e[15] = 1;
}

static void test_inverse(void) {
    double r[9], e[16], inv[16];
    rotation(0.3, -0.7, 1.1, r);
    extrinsic(r, (double[3]){1, -2, 3}, e);
    pose_affine_inverse(e, inv);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double acc = 0;
            for (int k = 0; k < 4; k++) acc += e[i * 4 + k] * inv[k * 4 + j];
            CHECK_NEAR(acc, i == j ? 1.0 : 0.0, 1e-12);
        }
    double c[3];
    pose_camera_centre(e, c);
    CHECK_NEAR(c[0], 1, 1e-12);
    CHECK_NEAR(c[1], -2, 1e-12);
    CHECK_NEAR(c[2], 3, 1e-12);
}

static void test_normalize(void) {
    /* Three cameras; after normalisation view 0 is the identity and camera centres sit at their
     * offsets from view 0 (in view 0's axes) divided by the lower median distance. */
    double r0[9], r1[9], r2[9], ext[48], out[48];
    rotation(0.2, 0.1, -0.3, r0);
    rotation(-0.4, 0.5, 0.2, r1);
    rotation(1.0, -0.2, 0.1, r2);
    const double c0[3] = {1, 1, 1}, c1[3] = {1, 1, 5}, c2[3] = {1, 3, 1}; /* distances 4 and 2 */
    extrinsic(r0, c0, ext);
    extrinsic(r1, c1, ext + 16);
    extrinsic(r2, c2, ext + 32);
    double median = 0;
    CHECK(pose_normalize_extrinsics(3, ext, out, &median) == 0);
    CHECK_NEAR(median, 2.0, 1e-12);
    for (int i = 0; i < 16; i++) CHECK_NEAR(out[i], (i % 5 == 0) ? 1.0 : 0.0, 1e-12);
    /* Distances from view 0: 0, 4, 2 -> sorted 0, 2, 4 -> median 2. */
    double c[3];
    pose_camera_centre(out + 16, c);
    double expect[3];
    for (int k = 0; k < 3; k++) /* view 0's rotation applied to (c1 - c0), halved */
        expect[k] = (r0[k * 3] * (c1[0] - c0[0]) + r0[k * 3 + 1] * (c1[1] - c0[1]) + r0[k * 3 + 2] * (c1[2] - c0[2])) / 2;
    for (int k = 0; k < 3; k++) CHECK_NEAR(c[k], expect[k], 1e-12);
    /* Rotations are relative to view 0: R1 R0^T. */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double acc = 0;
            for (int k = 0; k < 3; k++) acc += r1[i * 3 + k] * r0[j * 3 + k];
            CHECK_NEAR(out[16 + i * 4 + j], acc, 1e-12);
        }
    /* Four views: torch.median takes the lower middle value (distances 0, 1, 3, 9 -> 1). */
    double ext4[64], out4[64], id[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    const double cs[4][3] = {{0, 0, 0}, {1, 0, 0}, {0, 3, 0}, {0, 0, 9}};
    for (int v = 0; v < 4; v++) extrinsic(id, cs[v], ext4 + 16 * v);
    CHECK(pose_normalize_extrinsics(4, ext4, out4, &median) == 0);
    CHECK_NEAR(median, 1.0, 1e-12);
    CHECK_NEAR(out4[48 + 11], -9.0, 1e-12);
    /* Cameras that barely move: the median is clamped to 0.1. */
    const double tiny[2][3] = {{0, 0, 0}, {0.01, 0, 0}};
    for (int v = 0; v < 2; v++) extrinsic(id, tiny[v], ext4 + 16 * v);
    CHECK(pose_normalize_extrinsics(2, ext4, out4, &median) == 0);
    CHECK_NEAR(median, 0.1, 1e-12);
    CHECK_NEAR(out4[16 + 3], -0.1, 1e-12);
}

static void test_umeyama(void) {
    double r[9], t[3] = {0.5, -1.5, 2.0}, s = 2.3;
    rotation(0.9, -0.4, 2.1, r);
    double src[8 * 3], dst[8 * 3];
    for (int i = 0; i < 8; i++) {
        for (int k = 0; k < 3; k++) src[i * 3 + k] = sin(1.7 * i + 0.9 * k) * (k + 1);
        for (int k = 0; k < 3; k++)
            dst[i * 3 + k] = s * (r[k * 3] * src[i * 3] + r[k * 3 + 1] * src[i * 3 + 1] + r[k * 3 + 2] * src[i * 3 + 2]) + t[k];
    }
    double re[9], te[3], se;
    CHECK(pose_umeyama(8, src, dst, re, te, &se) == 0);
    CHECK_NEAR(se, s, 1e-10);
    for (int i = 0; i < 9; i++) CHECK_NEAR(re[i], r[i], 1e-10);
    for (int k = 0; k < 3; k++) CHECK_NEAR(te[k], t[k], 1e-10);

    /* A mirror image cannot be fitted by a rotation: R stays a proper rotation (det +1). */
    double mirrored[8 * 3];
    for (int i = 0; i < 8 * 3; i++) mirrored[i] = (i % 3 == 0) ? -src[i] : src[i];
    CHECK(pose_umeyama(8, src, mirrored, re, te, &se) == 0);
    double det = re[0] * (re[4] * re[8] - re[5] * re[7]) - re[1] * (re[3] * re[8] - re[5] * re[6]) +
                 re[2] * (re[3] * re[7] - re[4] * re[6]);
    CHECK_NEAR(det, 1.0, 1e-9);

    /* Two points: a line (reported as such), still a well-defined scale. One point: none. */
    double a[6] = {0, 0, 0, 1, 2, 2}, b[6] = {5, 5, 5, 5, 11, 5};
    CHECK(pose_umeyama(2, a, b, re, te, &se) == 1);
    CHECK_NEAR(se, 2.0, 1e-10);
    CHECK(pose_umeyama(1, a, b, re, te, &se) == -1);
    CHECK_NEAR(se, 1.0, 0);
}

/* Client cameras vs a prediction in another frame: the scale between the two trajectories. */
static void test_alignment_scale(void) {
    enum { N = 12 };
    double ext_in[N * 16], ext_pred[N * 12], ra[9], frame[9];
    rotation(0.3, 0.2, -0.5, frame);
    const double s_true = 0.25; /* prediction units per client unit */
    for (int i = 0; i < N; i++) {
        double c[3] = {3 * cos(0.5 * i), 0.2 * i, 3 * sin(0.5 * i)}, pc[3], rp[9];
        rotation(0.1 * i, 0.05 * i, 0, ra);
        extrinsic(ra, c, ext_in + 16 * i);
        /* The predicted camera: same trajectory seen in a rotated, shifted, scaled frame. */
        for (int k = 0; k < 3; k++)
            pc[k] = s_true * (frame[k * 3] * c[0] + frame[k * 3 + 1] * c[1] + frame[k * 3 + 2] * c[2]) + 1.0;
        for (int a = 0; a < 3; a++) /* R_pred = R_client frame^T (world axes rotated by frame) */
            for (int b = 0; b < 3; b++) {
                double acc = 0;
                for (int k = 0; k < 3; k++) acc += ra[a * 3 + k] * frame[b * 3 + k];
                rp[a * 3 + b] = acc;
            }
        double e[16];
        extrinsic(rp, pc, e);
        memcpy(ext_pred + 12 * i, e, 12 * sizeof *e);
    }
    int fitted = -1;
    /* 12 views: the RANSAC path. */
    CHECK_NEAR(pose_alignment_scale(N, ext_in, ext_pred, 7.0, &fitted), s_true, 1e-9);
    CHECK(fitted == 1);
    /* 5 views: a plain fit; 2 views: a line, still the right scale. */
    CHECK_NEAR(pose_alignment_scale(5, ext_in, ext_pred, 7.0, NULL), s_true, 1e-9);
    CHECK_NEAR(pose_alignment_scale(2, ext_in, ext_pred, 7.0, NULL), s_true, 1e-9);
    /* Two predictions thrown far off: RANSAC keeps the scale of the ten good views. */
    double off[N * 12];
    memcpy(off, ext_pred, sizeof off);
    off[12 * 3 + 3] += 40;
    off[12 * 7 + 11] -= 25;
    CHECK_NEAR(pose_alignment_scale(N, ext_in, off, 7.0, NULL), s_true, 1e-6);
    /* One view: nothing to fit, the fallback is returned and said to be one. */
    CHECK_NEAR(pose_alignment_scale(1, ext_in, ext_pred, 7.0, &fitted), 7.0, 0);
    CHECK(fitted == 0);
    /* Predicted cameras that all sit at one point: no scale can be fitted either. */
    double still[N * 12];
    for (int i = 0; i < N; i++) {
        double id3[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, e[16];
        extrinsic(id3, (double[3]){1, 2, 3}, e);
        memcpy(still + 12 * i, e, 12 * sizeof *e);
    }
    CHECK_NEAR(pose_alignment_scale(5, ext_in, still, 7.0, &fitted), 7.0, 0);
    CHECK(fitted == 0);
    CHECK_NEAR(pose_alignment_scale(N, ext_in, still, 7.0, &fitted), 7.0, 0);
    CHECK(fitted == 0);
    /* Client cameras all on one line (12 views, RANSAC): every sample is a line, evo would refuse
     * them all; the scale of the whole set still comes through. */
    double line_in[N * 16], line_pred[N * 12];
    for (int i = 0; i < N; i++) {
        double id3[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, e[16], c[3] = {0.5 * i, 0, 0}, pc[3] = {0, 0.25 * 0.5 * i, 1};
        extrinsic(id3, c, line_in + 16 * i);
        extrinsic(id3, pc, e);
        memcpy(line_pred + 12 * i, e, 12 * sizeof *e);
    }
    CHECK_NEAR(pose_alignment_scale(N, line_in, line_pred, 7.0, &fitted), 0.25, 1e-9);
    CHECK(fitted == 1);
}

int main(void) {
    test_inverse();
    test_normalize();
    test_umeyama();
    test_alignment_scale();
    CHECK_DONE("test_pose_align");
}
