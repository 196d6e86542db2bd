/* fuse_point_cloud: DA3's export_to_glb point cloud (utils/export/glb.py) step by step:
 * confidence threshold, back-projection, alignment + median centring, cleaning, downsampling,
 * camera frustums. fuse_point_cloud_fixed runs the same code with the placement and frustum depth
 * given instead of measured. Helpers: percentile.c (selection), fusion_mat.c, fusion_sample.c,
 * fusion_frustum.c.
 *
 * Where this differs from the reference, on purpose:
 *  - downsampling is seeded (params->seed) and keeps the chosen points in their original
 *    (view, row, column) order; the reference's np.random.choice is unseeded and shuffles;
 *  - points that are not finite are dropped before the median instead of after it (a single
 *    NaN would make numpy's median NaN and empty the whole cloud);
 *  - world points are not rounded to float32 before the alignment, and the median is taken on
 *    the float32 aligned points: results agree with a numpy transcription of glb.py to about
 *    2 float32 ulps, with the same pixels kept;
 *  - non-finite or singular cameras are an error (numpy: LinAlgError or a NaN cloud). */
#include "worker/fusion.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "worker/fusion_frustum.h"
#include "worker/fusion_mat.h"
#include "worker/fusion_sample.h"
#include "worker/percentile.h"

#define CONF_THRESH_FLOOR 1.05    /* export_to_glb's conf_thresh */
#define ENSURE_THRESH_PCT 90.0    /* export_to_glb's ensure_thresh_percentile */
#define CAMERA_SIZE 0.03          /* export_to_glb's camera_size */

/* Per-view camera maths, in double. */
typedef struct {
    double kinv[9]; /* K^-1 */
    double c2w[16]; /* inv(w2c) */
} view_cam;

static int all_finite(const float *v, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

static int prepare_cameras(const da3_prediction *pred, view_cam *cams, char *err, size_t errlen) {
    for (int i = 0; i < pred->n; i++) {
        const float *k = pred->intrinsics + 9 * i, *e = pred->extrinsics + 12 * i;
        if (!all_finite(k, 9) || !all_finite(e, 12))
            return fail_msg(err, errlen, "view %d: non-finite camera parameters", i);
        double kd[9], w2c[16];
        for (int j = 0; j < 9; j++) kd[j] = k[j];
        fmat4_from_3x4f(e, w2c);
        if (fmat3_invert(kd, cams[i].kinv) != 0)
            return fail_msg(err, errlen, "view %d: intrinsics are not invertible", i);
        if (fmat4_invert_affine(w2c, cams[i].c2w) != 0)
            return fail_msg(err, errlen, "view %d: extrinsics are not invertible", i);
    }
    return 0;
}

/* Python's min(max(floor, lower), upper) on the percentiles. The argument order matters for
 * NaN: numpy's percentile is NaN when conf holds a NaN, and then both max and min keep their
 * first argument, so the threshold falls back to 1.05. */
static double clamp_threshold(double lower, double upper) {
    double thr = lower > CONF_THRESH_FLOOR ? lower : CONF_THRESH_FLOOR;
    return upper < thr ? upper : thr;
}

/* The global threshold over every pixel of every view; -1 when out of memory. */
static int confidence_threshold(const float *conf, size_t npix, double percentile, float *scratch,
                                double *thr) {
    /* numpy raises on a percentile outside [0,100]; the protocol layer already rejects those,
     * so here out-of-range (or NaN) values are clamped only to keep the index maths in bounds. */
    if (!(percentile >= 0.0)) percentile = 0.0;
    if (percentile > 100.0) percentile = 100.0;
    const double ps[2] = {percentile, ENSURE_THRESH_PCT};
    double q[2];
    if (pct_percentiles(conf, npix, 1, ps, 2, PCT_LIKE_FLOAT32, scratch, q) != 0) return -1;
    *thr = clamp_threshold(q[0], q[1]);
    return 0;
}

/* Back-projects every kept pixel straight into the unaligned glTF frame: X = A0 * c2w_i *
 * [d * K_i^-1 [u v 1]; 1] with A0 = M * w2c_0, composed per view so each pixel costs one 3x3
 * product. (The reference rounds world points to float32 before applying A; composing instead
 * is at least as accurate and agrees to float32 rounding.) Non-finite results are dropped here,
 * which keeps them out of the median as well. Returns the number of points written. */
static size_t back_project(const da3_prediction *pred, const uint8_t *rgb, const view_cam *cams,
                           const double a0[16], float thr, float *xyz, uint8_t *rgba) {
    const int h = pred->height, w = pred->width;
    const size_t plane = (size_t)h * (size_t)w;
    size_t m = 0;
    for (int i = 0; i < pred->n; i++) {
        double g[16], b[9];
        fmat4_mul(a0, cams[i].c2w, g);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++)
                b[3 * r + c] = g[4 * r] * cams[i].kinv[c] + g[4 * r + 1] * cams[i].kinv[3 + c] +
                               g[4 * r + 2] * cams[i].kinv[6 + c];
        const float *depth = pred->depth + plane * (size_t)i, *conf = pred->conf + plane * (size_t)i;
        const uint8_t *col = rgb + 3 * plane * (size_t)i;
        for (int v = 0; v < h; v++) {
            /* ray = B [u v 1], stepped along the row by B's first column (the drift of ~500
             * double additions is far below float32 resolution). */
            double rx = b[1] * v + b[2], ry = b[4] * v + b[5], rz = b[7] * v + b[8];
            size_t base = (size_t)v * (size_t)w;
            for (int u = 0; u < w; u++, rx += b[0], ry += b[3], rz += b[6]) {
                double d = depth[base + u];
                float x = (float)(d * rx + g[3]);
                float y = (float)(d * ry + g[7]);
                float z = (float)(d * rz + g[11]);
                /* Written unconditionally, kept by advancing m: no unpredictable branch per
                 * pixel. numpy compares conf (float32) with the float64 threshold in float32.
                 * x-x is 0 only for finite x (NaN for inf and NaN). */
                int keep = (d > 0.0) & (d <= FLT_MAX) & (conf[base + u] >= thr) &
                           ((x - x) + (y - y) + (z - z) == 0.0f);
                float *p = xyz + 3 * m;
                p[0] = x, p[1] = y, p[2] = z;
                const uint8_t *c = col + 3 * (base + u);
                uint8_t *o = rgba + 4 * m;
                o[0] = c[0], o[1] = c[1], o[2] = c[2], o[3] = 255;
                m += (size_t)keep;
            }
        }
    }
    return m;
}

/* Per-axis median of the m points (np.median(pts, axis=0)); zeros for an empty cloud. */
static int axis_medians(const float *xyz, size_t m, float *scratch, double centre[3]) {
    for (int a = 0; a < 3; a++) {
        centre[a] = 0.0;
        if (m && pct_median(xyz + a, m, 3, scratch, &centre[a]) != 0) return -1;
    }
    return 0;
}

/* Moves the median to the origin and drops points that stop being finite. Returns the count. */
static size_t centre_points(float *xyz, uint8_t *rgba, size_t m, const double centre[3]) {
    size_t out = 0;
    for (size_t i = 0; i < m; i++) {
        float x = (float)(xyz[3 * i] - centre[0]);
        float y = (float)(xyz[3 * i + 1] - centre[1]);
        float z = (float)(xyz[3 * i + 2] - centre[2]);
        uint32_t c;
        memcpy(&c, rgba + 4 * i, 4);
        xyz[3 * out] = x, xyz[3 * out + 1] = y, xyz[3 * out + 2] = z;
        memcpy(rgba + 4 * out, &c, 4);
        out += (x - x) + (y - y) + (z - z) == 0.0f; /* all finite; written anyway, no branch */
    }
    return out;
}

/* ||P95 - P5|| of the per-axis percentiles; 1.0 when that is undefined, zero or not finite. */
static int scene_scale(const float *xyz, size_t m, float *scratch, double *scale) {
    *scale = 1.0;
    if (m < 2) return 0;
    double sum = 0.0;
    for (int a = 0; a < 3; a++) {
        const double ps[2] = {5.0, 95.0};
        double q[2]; /* the reference's points are float64 by then */
        if (pct_percentiles(xyz + a, m, 3, ps, 2, PCT_LIKE_FLOAT64, scratch, q) != 0) return -1;
        sum += (q[1] - q[0]) * (q[1] - q[0]);
    }
    double diag = sqrt(sum);
    if (isfinite(diag) && diag > 0.0) *scale = diag;
    return 0;
}

/* 0.03 x the scene scale of the m points (export_to_glb's frustum depth); scratch holds m floats. */
static int camera_depth_of(const float *xyz, size_t m, float *scratch, double *depth) {
    double scale;
    if (scene_scale(xyz, m, scratch, &scale) != 0) return -1;
    *depth = scale * CAMERA_SIZE;
    return 0;
}

int fusion_camera_depth(const point_cloud *pc, double *depth) {
    float *scratch = malloc((pc->n_points ? pc->n_points : 1) * sizeof(float));
    int rc = scratch ? camera_depth_of(pc->xyz, pc->n_points, scratch, depth) : -1;
    free(scratch);
    return rc;
}

/* One frustum per view at `depth`, view i coloured first + i of total. */
static int add_cameras(const da3_prediction *pred, const view_cam *cams, double depth, int first, int total,
                       point_cloud *out) {
    int n = pred->n;
    out->camera_lines = malloc((size_t)n * 48 * sizeof(float));
    out->camera_rgba = malloc((size_t)n * 4);
    if (!out->camera_lines || !out->camera_rgba) return -1;
    for (int i = 0; i < n; i++) {
        frustum_lines(cams[i].kinv, cams[i].c2w, out->alignment, pred->width, pred->height, depth,
                      out->camera_lines + 48 * (size_t)i);
        frustum_color(first + i, total, out->camera_rgba + 4 * (size_t)i);
    }
    out->n_cameras = n;
    out->camera_depth = depth;
    return 0;
}

/* Gives the unused tail of the point arrays back; a failed shrink keeps the larger block. */
static void shrink_points(point_cloud *pc) {
    if (pc->n_points == 0) {
        free(pc->xyz), free(pc->rgba);
        pc->xyz = NULL, pc->rgba = NULL;
        return;
    }
    float *x = realloc(pc->xyz, pc->n_points * 3 * sizeof(float));
    if (x) pc->xyz = x;
    uint8_t *c = realloc(pc->rgba, pc->n_points * 4);
    if (c) pc->rgba = c;
}

static int check_input(const da3_prediction *pred, const uint8_t *rgb, const fusion_params *p,
                       char *err, size_t errlen) {
    if (!pred || !rgb || !p) return fail_msg(err, errlen, "fusion: missing prediction, colours or parameters");
    if (pred->n < 1 || pred->height < 1 || pred->width < 1)
        return fail_msg(err, errlen, "fusion: empty prediction (%d views of %dx%d)", pred->n, pred->width, pred->height);
    if (!pred->depth || !pred->conf || !pred->extrinsics || !pred->intrinsics)
        return fail_msg(err, errlen, "fusion: the prediction lacks depth, confidence or cameras");
    if (p->num_max_points < 0) return fail_msg(err, errlen, "fusion: num_max_points is negative");
    /* 16 bytes of output per pixel must fit in size_t. */
    if ((size_t)pred->n > SIZE_MAX / 16 / (size_t)pred->height / (size_t)pred->width)
        return fail_msg(err, errlen, "fusion: prediction too large");
    return 0;
}

static int all_finite_d(const double *v, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

static int check_fixed(const fusion_fixed *f, const da3_prediction *pred, const fusion_params *p, char *err,
                       size_t errlen) {
    if (!all_finite_d(f->placement.a0, 16) || !all_finite_d(f->placement.centre, 3))
        return fail_msg(err, errlen, "fusion: the fixed placement is not finite");
    if (p->show_cameras && !(f->camera_depth > 0.0 && isfinite(f->camera_depth)))
        return fail_msg(err, errlen, "fusion: the fixed frustum depth must be positive");
    if (f->camera_first < 0 || f->camera_total < 1 || f->camera_first > f->camera_total - pred->n)
        return fail_msg(err, errlen, "fusion: frustum colours %d..%d of %d", f->camera_first,
                    f->camera_first + pred->n - 1, f->camera_total);
    return 0;
}

/* Both fusions: with fixed NULL the placement comes from these views (the median) and the frustum
 * depth from the cloud's scale, as export_to_glb does; otherwise both come from *fixed. Everything
 * else is one code path, which is what makes fixed reproduce a normal cloud bit for bit. */
static int fuse(const da3_prediction *pred, const uint8_t *rgb, const fusion_params *p, const fusion_fixed *fixed,
                point_cloud *out, char *err, size_t errlen) {
    if (!out) return fail_msg(err, errlen, "fusion: no output");
    memset(out, 0, sizeof *out);
    if (check_input(pred, rgb, p, err, errlen) != 0) return -1;
    if (fixed && check_fixed(fixed, pred, p, err, errlen) != 0) return -1;

    const size_t npix = (size_t)pred->n * (size_t)pred->height * (size_t)pred->width;
    view_cam *cams = malloc((size_t)pred->n * sizeof *cams);
    float *scratch = malloc(npix * sizeof(float));
    /* Sized for every pixel: pages past the kept points are never touched, and shrink_points
     * returns them, so this costs no more than the cloud itself. */
    out->xyz = malloc(npix * 3 * sizeof(float));
    out->rgba = malloc(npix * 4);
    if (!cams || !scratch || !out->xyz || !out->rgba) {
        fail_msg(err, errlen, "fusion: out of memory for %zu pixels", npix);
        goto error;
    }
    if (prepare_cameras(pred, cams, err, errlen) != 0) goto error;

    double thr;
    if (confidence_threshold(pred->conf, npix, p->conf_thresh_percentile, scratch, &thr) != 0) {
        fail_msg(err, errlen, "fusion: out of memory");
        goto error;
    }

    /* A0 = M * w2c_0 with M = diag(1,-1,-1,1): first camera's frame in glTF axes (y up, z back). */
    fusion_placement *pl = &out->placement;
    if (fixed) {
        *pl = fixed->placement;
    } else {
        double w2c0[16];
        fmat4_from_3x4f(pred->extrinsics, w2c0);
        const double flip[16] = {1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1};
        fmat4_mul(flip, w2c0, pl->a0);
    }

    size_t m = back_project(pred, rgb, cams, pl->a0, (float)thr, out->xyz, out->rgba);

    /* A = T_center * A0: only A0's translation column changes (A0's last row is 0 0 0 1). */
    if (!fixed && axis_medians(out->xyz, m, scratch, pl->centre) != 0) {
        fail_msg(err, errlen, "fusion: out of memory");
        goto error;
    }
    memcpy(out->alignment, pl->a0, sizeof pl->a0);
    for (int r = 0; r < 3; r++) out->alignment[4 * r + 3] -= pl->centre[r];
    m = centre_points(out->xyz, out->rgba, m, pl->centre);

    m = subsample_points(out->xyz, out->rgba, m, (size_t)p->num_max_points, p->seed);
    out->n_points = m;
    shrink_points(out);

    if (p->show_cameras) {
        double depth = fixed ? fixed->camera_depth : 0.0;
        int first = fixed ? fixed->camera_first : 0, total = fixed ? fixed->camera_total : pred->n;
        if ((!fixed && camera_depth_of(out->xyz, out->n_points, scratch, &depth) != 0) ||
            add_cameras(pred, cams, depth, first, total, out) != 0) {
            fail_msg(err, errlen, "fusion: out of memory for the cameras");
            goto error;
        }
    }
    free(scratch);
    free(cams);
    return 0;

error:
    free(scratch);
    free(cams);
    point_cloud_free(out);
    return -1;
}

int fuse_point_cloud(const da3_prediction *pred, const uint8_t *rgb, const fusion_params *p,
                     point_cloud *out, char *err, size_t errlen) {
    return fuse(pred, rgb, p, NULL, out, err, errlen);
}

int fuse_point_cloud_fixed(const da3_prediction *pred, const uint8_t *rgb, const fusion_params *p,
                           const fusion_fixed *fixed, point_cloud *out, char *err, size_t errlen) {
    if (!fixed) {
        if (out) memset(out, 0, sizeof *out);
        return fail_msg(err, errlen, "fusion: no fixed placement");
    }
    return fuse(pred, rgb, p, fixed, out, err, errlen);
}

void point_cloud_free(point_cloud *pc) {
    if (!pc) return;
    free(pc->xyz);
    free(pc->rgba);
    free(pc->camera_lines);
    free(pc->camera_rgba);
    memset(pc, 0, sizeof *pc);
}
