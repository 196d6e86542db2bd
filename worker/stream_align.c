/* Chunk-to-chunk Sim(3) alignment through shared overlap frames; see stream_align.h.
 *
 * The method (DA3-Streaming's, re-implemented from its description):
 *   1. correspondences: every overlap pixel valid in both chunks whose confidence exceeds
 *      conf_ratio x the smaller of the two chunks' median overlap confidences, in both; weight
 *      sqrt(c_prev * c_new);
 *   2. closed-form start: weighted centroids, scale = ratio of the weighted RMS spreads about
 *      them, rotation from the SVD of the weighted cross-covariance with the reflection fixed;
 *   3. at most max_iterations IRLS steps: the same weighted closed form, each pixel's weight now
 *      its confidence weight times the Huber weight of its 3D residual under the previous
 *      estimate, stopping once the parameters stop moving.
 * The scale stays the ratio of weighted RMS spreads in the IRLS steps too, rather than Umeyama's
 * least-squares scale tr(R^T H) / var_new: the spread ratio treats both chunks alike (aligning
 * B to A gives the inverse of aligning A to B, exactly for the closed form), while the least-squares scale shrinks with every
 * bit of spread the new chunk's outliers add to var_new. Measured on the unit test's scenes
 * (10 % outliers in each chunk): scale error 4.9e-4 with the spread ratio, 2.6e-2 with the
 * least-squares scale; with 20 % outliers in one chunk only, 3 % either way for the spread ratio,
 * 0.2 % or 6 % (outliers in the previous or the new chunk) for the least-squares scale. */
#include "worker/stream_align.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/fusion_mat.h"
#include "worker/mat3.h"
#include "worker/percentile.h"

/* Floats stored per correspondence: prev point, new point (each relative to its weighted
 * centroid, which keeps float rounding relative to the overlap's size, not to the gauge's
 * origin), confidence weight. */
#define CORR_FLOATS 7
/* Kept points whose RMS spread is below this fraction of the median depth coincide. */
#define COINCIDENT_SPREAD 1e-6
/* Second principal spread below this fraction of the first: the points lie on a line. */
#define COLLINEAR_SPREAD 1e-4
/* After the fit: a second principal spread below this multiple of the inliers' residual RMS is noise,
 * i.e. the points are a line up to noise and the roll about it was fitted to the noise. */
#define COLLINEAR_NOISE_FACTOR 2.0

void stream_align_default_options(stream_align_options *o) {
    o->conf_ratio = 0.1;
    o->min_confidence = 0.0;
    o->huber_delta = 0.1;
    o->max_iterations = 5;
    o->tolerance = 1e-6;
    /* 7 unknowns; 100 correspondences are ~14 per unknown, enough for Huber's down-weighting to
     * work against a few tens of percent of outliers, and at 1 % depth noise put the centroid and
     * scale within ~0.1 %. An overlap frame has ~10^5 pixels, so keeping fewer than 100 means the
     * chunks agree on almost nothing there: that is a failed link, not a noisy one. */
    o->min_correspondences = 100;
}

const char *stream_align_status_text(int status) {
    switch (status) {
    case STREAM_ALIGN_OK: return "aligned";
    case STREAM_ALIGN_BAD_INPUT: return "bad input (null pointer, empty size, or a singular or non-finite camera)";
    case STREAM_ALIGN_TOO_FEW: return "too few confident correspondences in the overlap";
    case STREAM_ALIGN_DEGENERATE: return "degenerate overlap: the confident points coincide or lie on a line";
    case STREAM_ALIGN_NO_MEMORY: return "out of memory";
    default: return "unknown status";
    }
}

/* ---------- Sim(3) ---------- */

stream_sim3 stream_sim3_identity(void) {
    stream_sim3 a;
    a.s = 1.0;
    static const double identity[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    memcpy(a.r, identity, sizeof identity);
    a.t[0] = a.t[1] = a.t[2] = 0.0;
    return a;
}

stream_sim3 stream_sim3_compose(const stream_sim3 *outer, const stream_sim3 *inner) {
    /* outer(inner(x)) = so Ro (si Ri x + ti) + to */
    stream_sim3 c;
    c.s = outer->s * inner->s;
    mat3_mul(outer->r, inner->r, c.r);
    stream_sim3_apply_point(outer, inner->t, c.t);
    return c;
}

stream_sim3 stream_sim3_inverse(const stream_sim3 *a) {
    stream_sim3 inv;
    inv.s = 1.0 / a->s;
    mat3_transpose(a->r, inv.r);
    mat3_apply(inv.r, a->t, inv.t);
    for (int i = 0; i < 3; i++) inv.t[i] *= -inv.s;
    return inv;
}

void stream_sim3_apply_point(const stream_sim3 *a, const double p[3], double out[3]) {
    double q[3];
    mat3_apply(a->r, p, q);
    for (int i = 0; i < 3; i++) out[i] = a->s * q[i] + a->t[i];
}

void stream_sim3_apply_extrinsics(const stream_sim3 *a, const double w2c[12], double out[12]) {
    /* x_cam' = s x_cam = s (Rc x + tc) with x = R^T (x' - t) / s  =>  Rc R^T x' + s tc - Rc R^T t */
    double rc[9] = {w2c[0], w2c[1], w2c[2], w2c[4], w2c[5], w2c[6], w2c[8], w2c[9], w2c[10]};
    const double tc[3] = {w2c[3], w2c[7], w2c[11]};
    double rt[9], rn[9], shift[3];
    mat3_transpose(a->r, rt);
    mat3_mul(rc, rt, rn);
    mat3_apply(rn, a->t, shift);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) out[4 * i + j] = rn[3 * i + j];
        out[4 * i + 3] = a->s * tc[i] - shift[i];
    }
}

/* ---------- cameras ---------- */

int stream_camera_prepare(const float k[9], const float w2c[12], stream_camera *cam) {
    double kd[9], e[16], inv[16];
    for (int i = 0; i < 9; i++) kd[i] = k[i];
    for (int i = 0; i < 12; i++)
        if (!isfinite(w2c[i])) return -1;
    fmat4_from_3x4f(w2c, e);
    if (fmat3_invert(kd, cam->kinv) != 0) return -1; /* also refuses non-finite intrinsics */
    if (fmat4_invert_affine(e, inv) != 0) return -1;
    for (int i = 0; i < 12; i++) {
        if (!isfinite(inv[i])) return -1;
        cam->c2w[i] = inv[i];
    }
    return 0;
}

void stream_camera_backproject(const stream_camera *cam, double u, double v, double depth, double out[3]) {
    const double pix[3] = {u, v, 1.0};
    double ray[3];
    mat3_apply(cam->kinv, pix, ray);
    const double pc[3] = {depth * ray[0], depth * ray[1], depth * ray[2]};
    for (int i = 0; i < 3; i++)
        out[i] = cam->c2w[4 * i] * pc[0] + cam->c2w[4 * i + 1] * pc[1] + cam->c2w[4 * i + 2] * pc[2] + cam->c2w[4 * i + 3];
}

int stream_overlap_from_prediction(const da3_prediction *p, int first, int n_frames, stream_overlap *out) {
    if (!p || !out || first < 0 || n_frames <= 0 || first > p->n - n_frames) return -1;
    const size_t plane = (size_t)p->height * (size_t)p->width, f = (size_t)first;
    out->depth = p->depth + plane * f;
    out->conf = p->conf + plane * f;
    out->intrinsics = p->intrinsics + 9 * f;
    out->extrinsics = p->extrinsics + 12 * f;
    return 0;
}

/* ---------- the aligner ---------- */

static int depth_valid(float d) { return d > 0.0f && d <= FLT_MAX; }

/* Median of the n floats in a (reordered in place); NaN for n == 0. */
static double median_in_place(float *a, size_t n) {
    if (n == 0) return NAN;
    const size_t k = n / 2;
    pct_select_kth(a, n, k);
    if (n % 2) return a[k];
    float lower = a[0]; /* the largest of a[0..k): the other middle value */
    for (size_t i = 1; i < k; i++)
        if (a[i] > lower) lower = a[i];
    return 0.5 * ((double)lower + (double)a[k]);
}

/* Median confidence over one chunk's valid overlap pixels (finite conf, valid depth). */
static double median_confidence(const stream_overlap *o, size_t npix, float *scratch) {
    size_t m = 0;
    for (size_t i = 0; i < npix; i++)
        if (depth_valid(o->depth[i]) && isfinite(o->conf[i])) scratch[m++] = o->conf[i];
    return median_in_place(scratch, m);
}

/* Weighted sums over the correspondences, enough for both the closed forms and the scatter. */
typedef struct {
    double w;        /* sum of weights */
    double a[3], b[3];
    double aa[9], bb[9], ab[9]; /* sums of w a a^T, w b b^T, w a b^T */
} moments;

static void moments_add(moments *m, double w, const double a[3], const double b[3]) {
    m->w += w;
    for (int i = 0; i < 3; i++) {
        m->a[i] += w * a[i];
        m->b[i] += w * b[i];
        for (int j = 0; j < 3; j++) {
            m->aa[3 * i + j] += w * a[i] * a[j];
            m->bb[3 * i + j] += w * b[i] * b[j];
            m->ab[3 * i + j] += w * a[i] * b[j];
        }
    }
}

/* Centred second moments (per unit weight) from the raw sums: scatter of a and b, covariance. */
static void moments_centred(const moments *m, double ca[3], double cb[3], double saa[9], double sbb[9], double sab[9]) {
    for (int i = 0; i < 3; i++) {
        ca[i] = m->a[i] / m->w;
        cb[i] = m->b[i] / m->w;
    }
    /* The raw sums are of points already centred on the start's centroids, so subtracting the
     * products of the means cancels nothing large. */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            saa[3 * i + j] = m->aa[3 * i + j] / m->w - ca[i] * ca[j];
            sbb[3 * i + j] = m->bb[3 * i + j] / m->w - cb[i] * cb[j];
            sab[3 * i + j] = m->ab[3 * i + j] / m->w - ca[i] * cb[j];
        }
}

/* Residual |a - (s R b + t)| of one stored correspondence under sim (in centred coordinates). */
static double residual(const stream_sim3 *sim, const float *c, double a[3], double b[3]) {
    for (int i = 0; i < 3; i++) {
        a[i] = c[i];
        b[i] = c[3 + i];
    }
    double mapped[3];
    stream_sim3_apply_point(sim, b, mapped);
    const double d[3] = {a[0] - mapped[0], a[1] - mapped[1], a[2] - mapped[2]};
    return sqrt(vec3_dot(d, d));
}

static double huber_weight(double r, double delta) { return r <= delta ? 1.0 : delta / r; }

/* One weighted Sim(3) fit over the n stored correspondences (centred coordinates): weighted
 * centroids, scale = ratio of the weighted RMS spreads, rotation from the cross-covariance. The
 * weights are the confidence weights, times the Huber weight of each residual under *weighted_by
 * when that is not NULL (an IRLS step). Fills the scatters when asked (the degeneracy test). */
static int fit_sim3(const float *corr, size_t n, const stream_sim3 *weighted_by, double delta, stream_sim3 *out,
                    double scatter_a[9], double scatter_b[9]) {
    moments m;
    memset(&m, 0, sizeof m);
    for (size_t k = 0; k < n; k++) {
        const float *c = corr + CORR_FLOATS * k;
        double a[3], b[3], w = c[6];
        if (weighted_by) {
            w *= huber_weight(residual(weighted_by, c, a, b), delta);
        } else {
            for (int i = 0; i < 3; i++) {
                a[i] = c[i];
                b[i] = c[3 + i];
            }
        }
        moments_add(&m, w, a, b);
    }
    if (!(m.w > 0)) return -1;
    double ca[3], cb[3], saa[9], sbb[9], sab[9];
    moments_centred(&m, ca, cb, saa, sbb, sab);
    if (scatter_a) memcpy(scatter_a, saa, sizeof saa);
    if (scatter_b) memcpy(scatter_b, sbb, sizeof sbb);
    const double var_a = saa[0] + saa[4] + saa[8], var_b = sbb[0] + sbb[4] + sbb[8];
    if (!(var_a > 0) || !(var_b > 0)) return -1;
    mat3_rotation_from_covariance(sab, out->r);
    out->s = sqrt(var_a / var_b);
    if (!(out->s > 0) || !isfinite(out->s)) return -1;
    double rcb[3];
    mat3_apply(out->r, cb, rcb);
    for (int i = 0; i < 3; i++) out->t[i] = ca[i] - out->s * rcb[i];
    return 0;
}

/* Largest relative change between two estimates: scale ratio, rotation angle (||dR||_F / sqrt 2
 * is the angle to first order, and unlike acos of the trace it keeps its precision near 0),
 * translation over the residual unit. */
static double parameter_change(const stream_sim3 *a, const stream_sim3 *b, double unit) {
    double dr = 0;
    for (int i = 0; i < 9; i++) dr += (a->r[i] - b->r[i]) * (a->r[i] - b->r[i]);
    const double dt[3] = {a->t[0] - b->t[0], a->t[1] - b->t[1], a->t[2] - b->t[2]};
    double change = fabs(a->s / b->s - 1.0);
    const double rot = sqrt(dr / 2.0), trans = sqrt(vec3_dot(dt, dt)) / unit;
    if (rot > change) change = rot;
    if (trans > change) change = trans;
    return change;
}

/* Spread test on a scatter matrix: 1 when the points coincide (RMS spread below COINCIDENT_SPREAD
 * of unit) or lie on a line; *second gets the RMS spread along the second principal axis. */
static int scatter_degenerate(const double scatter[9], double unit, double *second) {
    double lambda[3], vec[9];
    mat3_sym_eigen(scatter, lambda, vec);
    const double first = sqrt(lambda[0] > 0 ? lambda[0] : 0);
    *second = sqrt(lambda[1] > 0 ? lambda[1] : 0);
    return !(first > COINCIDENT_SPREAD * unit) || !(*second > COLLINEAR_SPREAD * first);
}

/* The pixels both chunks are confident about: calls back-projection for each and hands the pair
 * to `visit`; shared by the passes so that they cannot disagree on the selection rule. */
typedef struct {
    const stream_overlap *prev, *next;
    const stream_camera *cam_prev, *cam_next;
    int n_frames, height, width;
    double threshold;
} selection;

typedef void (*visit_fn)(void *ctx, size_t index, const double a[3], const double b[3], double weight, float depth_prev,
                         float depth_next);

static size_t for_each_kept(const selection *s, visit_fn visit, void *ctx) {
    const size_t plane = (size_t)s->height * (size_t)s->width;
    size_t kept = 0;
    for (int f = 0; f < s->n_frames; f++)
        for (int v = 0; v < s->height; v++)
            for (int u = 0; u < s->width; u++) {
                const size_t i = plane * (size_t)f + (size_t)v * (size_t)s->width + (size_t)u;
                const float dp = s->prev->depth[i], dn = s->next->depth[i];
                const float cp = s->prev->conf[i], cn = s->next->conf[i];
                /* "exceeds": strictly greater (compared in double, as the threshold was computed);
                 * NaN fails the comparison, an infinite confidence would be an infinite weight */
                if (!depth_valid(dp) || !depth_valid(dn) || !((double)cp > s->threshold) ||
                    !((double)cn > s->threshold) || !isfinite(cp) || !isfinite(cn))
                    continue;
                double a[3], b[3];
                stream_camera_backproject(&s->cam_prev[f], u, v, dp, a);
                stream_camera_backproject(&s->cam_next[f], u, v, dn, b);
                if (!isfinite(a[0] + a[1] + a[2] + b[0] + b[1] + b[2])) continue;
                if (visit) visit(ctx, kept, a, b, sqrt((double)cp * (double)cn), dp, dn);
                kept++;
            }
    return kept;
}

typedef struct {
    double w, a[3], b[3]; /* confidence-weighted sums, for the centroids */
    float *depth_prev, *depth_next;
} first_pass;

static void visit_first(void *ctx, size_t index, const double a[3], const double b[3], double weight,
                        float depth_prev, float depth_next) {
    first_pass *p = ctx;
    p->w += weight;
    for (int i = 0; i < 3; i++) {
        p->a[i] += weight * a[i];
        p->b[i] += weight * b[i];
    }
    p->depth_prev[index] = depth_prev;
    p->depth_next[index] = depth_next;
}

typedef struct {
    double ca[3], cb[3];
    float *corr;
} store_pass;

static void visit_store(void *ctx, size_t index, const double a[3], const double b[3], double weight,
                        float depth_prev, float depth_next) {
    (void)depth_prev, (void)depth_next;
    store_pass *p = ctx;
    float *c = p->corr + CORR_FLOATS * index;
    for (int i = 0; i < 3; i++) {
        c[i] = (float)(a[i] - p->ca[i]);
        c[3 + i] = (float)(b[i] - p->cb[i]);
    }
    c[6] = (float)weight;
}

int stream_align_overlap(const stream_overlap *prev, const stream_overlap *next, int n_frames, int height,
                         int width, const stream_align_options *opts, stream_sim3 *out,
                         stream_align_report *report) {
    stream_align_report local;
    stream_align_report *rep = report ? report : &local;
    memset(rep, 0, sizeof *rep);
    rep->median_conf_prev = rep->median_conf_new = rep->median_depth = NAN;
    rep->rms_residual = rep->rms_residual_rel = NAN;
    if (out) *out = stream_sim3_identity();
    if (!prev || !next || !out || n_frames <= 0 || height <= 0 || width <= 0) return STREAM_ALIGN_BAD_INPUT;
    if (!prev->depth || !prev->conf || !prev->intrinsics || !prev->extrinsics || !next->depth || !next->conf ||
        !next->intrinsics || !next->extrinsics)
        return STREAM_ALIGN_BAD_INPUT;
    stream_align_options o;
    if (opts) o = *opts;
    else stream_align_default_options(&o);
    if (!(o.huber_delta > 0) || o.max_iterations < 0 || !(o.tolerance >= 0) || !(o.conf_ratio >= 0))
        return STREAM_ALIGN_BAD_INPUT;
    const size_t plane = (size_t)height * (size_t)width;
    if (plane > (size_t)LONG_MAX / (size_t)n_frames || plane * (size_t)n_frames > SIZE_MAX / (CORR_FLOATS * sizeof(float)))
        return STREAM_ALIGN_BAD_INPUT;
    const size_t npix = plane * (size_t)n_frames;
    rep->n_pixels = (long)npix;

    int status = STREAM_ALIGN_OK;
    stream_camera *cams = malloc(2 * (size_t)n_frames * sizeof *cams);
    /* One block: first the median scratch (two floats per pixel: both chunks' depths of the kept
     * pixels), then, overwriting it, the stored correspondences. */
    float *block = malloc(npix * CORR_FLOATS * sizeof *block);
    if (!cams || !block) {
        status = STREAM_ALIGN_NO_MEMORY;
        goto done;
    }
    for (int f = 0; f < n_frames; f++)
        if (stream_camera_prepare(prev->intrinsics + 9 * f, prev->extrinsics + 12 * f, &cams[f]) != 0 ||
            stream_camera_prepare(next->intrinsics + 9 * f, next->extrinsics + 12 * f, &cams[n_frames + f]) != 0) {
            status = STREAM_ALIGN_BAD_INPUT;
            goto done;
        }

    rep->median_conf_prev = median_confidence(prev, npix, block);
    rep->median_conf_new = median_confidence(next, npix, block);
    if (isnan(rep->median_conf_prev) || isnan(rep->median_conf_new)) {
        status = STREAM_ALIGN_TOO_FEW; /* a chunk has no valid pixel at all */
        goto done;
    }
    double threshold = o.conf_ratio * fmin(rep->median_conf_prev, rep->median_conf_new);
    if (o.min_confidence > threshold) threshold = o.min_confidence;
    rep->conf_threshold = threshold;

    selection sel = {prev, next, cams, cams + n_frames, n_frames, height, width, threshold};

    first_pass fp;
    memset(&fp, 0, sizeof fp);
    fp.depth_prev = block;
    fp.depth_next = block + npix;
    const size_t kept = for_each_kept(&sel, visit_first, &fp);
    rep->n_kept = (long)kept;
    if ((long)kept < o.min_correspondences || kept < 3 || !(fp.w > 0)) {
        status = STREAM_ALIGN_TOO_FEW;
        goto done;
    }
    const double unit = median_in_place(fp.depth_prev, kept);
    const double unit_next = median_in_place(fp.depth_next, kept);
    rep->median_depth = unit;

    store_pass sp;
    for (int i = 0; i < 3; i++) {
        sp.ca[i] = fp.a[i] / fp.w;
        sp.cb[i] = fp.b[i] / fp.w;
    }
    sp.corr = block;
    for_each_kept(&sel, visit_store, &sp);

    /* Closed-form start (centred coordinates: X_prev - ca ~ sim(X_new - cb)). */
    stream_sim3 sim;
    double scatter_a[9], scatter_b[9], second_a, second_b;
    if (fit_sim3(block, kept, NULL, 0, &sim, scatter_a, scatter_b) != 0 ||
        scatter_degenerate(scatter_a, unit, &second_a) || scatter_degenerate(scatter_b, unit_next, &second_b)) {
        status = STREAM_ALIGN_DEGENERATE;
        goto done;
    }

    const double delta = o.huber_delta * unit;
    for (int it = 1; it <= o.max_iterations; it++) {
        stream_sim3 next_sim;
        if (fit_sim3(block, kept, &sim, delta, &next_sim, NULL, NULL) != 0) break; /* keep the last good one */
        const double change = parameter_change(&next_sim, &sim, unit);
        sim = next_sim;
        rep->iterations = it;
        if (change < o.tolerance) {
            rep->converged = 1;
            break;
        }
    }

    /* The report: weighted residual RMS and inliers under the final estimate. */
    double sum_w = 0, sum_wr2 = 0, sum_inlier_r2 = 0;
    size_t inliers = 0;
    for (size_t k = 0; k < kept; k++) {
        const float *c = block + CORR_FLOATS * k;
        double a[3], b[3];
        const double r = residual(&sim, c, a, b), w = c[6] * huber_weight(r, delta);
        sum_w += w;
        sum_wr2 += w * r * r;
        if (r <= delta) {
            inliers++;
            sum_inlier_r2 += r * r;
        }
    }
    rep->rms_residual = sqrt(sum_wr2 / sum_w);
    rep->rms_residual_rel = rep->rms_residual / unit;
    rep->inlier_fraction = (double)inliers / (double)kept;
    /* A line up to noise: the spread off the line is no larger than the inliers' misfit, so the
     * roll about the line was fitted to noise. (A real overlap spans tens of degrees of view: its
     * second spread is a sizeable fraction of the depth, far above any usable residual, which
     * for inliers is below delta by definition.) */
    const double inlier_rms = inliers ? sqrt(sum_inlier_r2 / (double)inliers) : delta;
    if (second_a <= COLLINEAR_NOISE_FACTOR * inlier_rms || second_b * sim.s <= COLLINEAR_NOISE_FACTOR * inlier_rms) {
        status = STREAM_ALIGN_DEGENERATE;
        goto done;
    }

    /* Back from centred coordinates: X_prev = ca + s R (X_new - cb) + t'. */
    double rcb[3];
    mat3_apply(sim.r, sp.cb, rcb);
    for (int i = 0; i < 3; i++) sim.t[i] = sp.ca[i] + sim.t[i] - sim.s * rcb[i];
    *out = sim;

done:
    free(cams);
    free(block);
    return status;
}
