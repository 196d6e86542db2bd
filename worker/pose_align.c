/* Known-camera normalisation and Sim(3) alignment. See pose_align.h.
 * The Umeyama fit follows Umeyama (1991), as evo's umeyama_alignment computes it (DA3 calls evo):
 * means, source variance, cross-covariance, SVD, reflection fix, scale = tr(DS) / var. */
#include "worker/pose_align.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/mat3.h"

/* DA3 switches to RANSAC from this many views (ransac_view_thresh) and runs this many rounds. */
#define RANSAC_MIN_VIEWS 10
#define RANSAC_ROUNDS 10
#define RANSAC_SEED 42
/* DA3 clamps the median camera distance to this before dividing by it. */
#define MIN_MEDIAN_DISTANCE 0.1

void pose_affine_inverse(const double m[16], double out[16]) {
    double ri[9]; /* R^T: what DA3 uses, and exact for the rotations camera_json accepts */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) ri[i * 3 + j] = m[j * 4 + i];
    double res[16] = {0};
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) res[i * 4 + j] = ri[i * 3 + j];
        res[i * 4 + 3] = -(ri[i * 3] * m[3] + ri[i * 3 + 1] * m[7] + ri[i * 3 + 2] * m[11]);
    }
    res[15] = 1.0;
    memcpy(out, res, sizeof res);
}

void pose_camera_centre(const double ext[16], double centre[3]) {
    double inv[16];
    pose_affine_inverse(ext, inv);
    for (int i = 0; i < 3; i++) centre[i] = inv[i * 4 + 3];
}

static void mat4_mul(const double a[16], const double b[16], double out[16]) {
    double r[16];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double acc = 0;
            for (int k = 0; k < 4; k++) acc += a[i * 4 + k] * b[k * 4 + j];
            r[i * 4 + j] = acc;
        }
    memcpy(out, r, sizeof r);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int pose_normalize_extrinsics(int n, const double *ext, double *out, double *median_out) {
    if (n <= 0) return 0;
    double *dist = malloc((size_t)n * sizeof *dist);
    if (!dist) return -1;
    double to_view0[16];
    pose_affine_inverse(ext, to_view0);
    for (int i = 0; i < n; i++) {
        mat4_mul(ext + 16 * i, to_view0, out + 16 * i);
        double c[3];
        pose_camera_centre(out + 16 * i, c);
        dist[i] = sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
    }
    qsort(dist, (size_t)n, sizeof *dist, cmp_double);
    double median = dist[(n - 1) / 2]; /* torch.median: the lower of the two middle values */
    free(dist);
    if (median < MIN_MEDIAN_DISTANCE) median = MIN_MEDIAN_DISTANCE;
    for (int i = 0; i < n; i++)
        for (int r = 0; r < 3; r++) out[16 * i + r * 4 + 3] /= median;
    if (median_out) *median_out = median;
    return 0;
}

int pose_umeyama(int n, const double *src, const double *dst, double r[9], double t[3], double *s) {
    static const double id[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    memcpy(r, id, sizeof id);
    t[0] = t[1] = t[2] = 0;
    *s = 1.0;
    if (n <= 0) return -1;
    double mx[3] = {0}, my[3] = {0};
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            mx[k] += src[i * 3 + k] / n;
            my[k] += dst[i * 3 + k] / n;
        }
    double var_x = 0, cov[9] = {0};
    for (int i = 0; i < n; i++) {
        double dx[3], dy[3];
        for (int k = 0; k < 3; k++) {
            dx[k] = src[i * 3 + k] - mx[k];
            dy[k] = dst[i * 3 + k] - my[k];
        }
        var_x += (dx[0] * dx[0] + dx[1] * dx[1] + dx[2] * dx[2]) / n;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) cov[a * 3 + b] += dy[a] * dx[b] / n;
    }
    if (!(var_x > 1e-24)) return -1;
    double u[9], d[3], v[9];
    mat3_svd(cov, u, d, v);
    double flip = mat3_det(u) * mat3_det(v) < 0 ? -1.0 : 1.0; /* keep R a rotation */
    double us[9];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) us[i * 3 + k] = u[i * 3 + k] * (k == 2 ? flip : 1.0);
    double vt[9];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) vt[i * 3 + k] = v[k * 3 + i];
    mat3_mul(us, vt, r);
    *s = (d[0] + d[1] + flip * d[2]) / var_x;
    for (int k = 0; k < 3; k++)
        t[k] = my[k] - *s * (r[k * 3] * mx[0] + r[k * 3 + 1] * mx[1] + r[k * 3 + 2] * mx[2]);
    return d[1] <= 1e-12 * d[0] ? 1 : 0; /* evo's rank test: fewer than 2 non-zero singular values */
}

static void apply_sim3(const double r[9], const double t[3], double s, const double p[3], double out[3]) {
    for (int k = 0; k < 3; k++) out[k] = s * (r[k * 3] * p[0] + r[k * 3 + 1] * p[1] + r[k * 3 + 2] * p[2]) + t[k];
}

static double dist3(const double a[3], const double b[3]) {
    double dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
    return sqrt(dx * dx + dy * dy + dz * dz);
}

/* xorshift64*: a small fixed-seed generator, so a RANSAC result is reproducible. */
static uint64_t next_random(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545F4914F6CDD1DULL;
}

/* DA3's _ransac_align_sim3 (positions only): sample, fit, count inliers within the median
 * nearest-neighbour distance after a first fit on all views, refit on the best inlier set. */
static double ransac_scale(int n, const double *src, const double *dst) {
    double r[9], t[3], s;
    if (pose_umeyama(n, src, dst, r, t, &s) < 0) return NAN;
    double *nn = malloc((size_t)n * sizeof *nn);
    double *sub_src = malloc((size_t)n * 3 * sizeof *sub_src);
    double *sub_dst = malloc((size_t)n * 3 * sizeof *sub_dst);
    int *idx = malloc((size_t)n * sizeof *idx);
    unsigned char *inl = malloc((size_t)n), *best_inl = malloc((size_t)n);
    if (!nn || !sub_src || !sub_dst || !idx || !inl || !best_inl) goto done;
    for (int i = 0; i < n; i++) { /* distance of each aligned source point to its nearest target */
        double p[3];
        apply_sim3(r, t, s, src + 3 * i, p);
        nn[i] = INFINITY;
        for (int j = 0; j < n; j++) {
            double dd = dist3(p, dst + 3 * j);
            if (dd < nn[i]) nn[i] = dd;
        }
    }
    qsort(nn, (size_t)n, sizeof *nn, cmp_double);
    const double thresh = n % 2 ? nn[n / 2] : 0.5 * (nn[n / 2 - 1] + nn[n / 2]); /* np.median */
    const int sub_n = (n + 1) / 2 > 3 ? (n + 1) / 2 : 3;
    uint64_t rng = RANSAC_SEED;
    int best_k = -1, have_best = 0;
    double best_err = INFINITY, best_s = s;
    for (int round = 0; round < RANSAC_ROUNDS; round++) {
        for (int i = 0; i < n; i++) idx[i] = i;
        for (int i = 0; i < sub_n; i++) { /* partial Fisher-Yates: sub_n distinct views */
            int j = i + (int)(next_random(&rng) % (uint64_t)(n - i));
            int tmp = idx[i];
            idx[i] = idx[j];
            idx[j] = tmp;
            memcpy(sub_src + 3 * i, src + 3 * idx[i], 3 * sizeof *src);
            memcpy(sub_dst + 3 * i, dst + 3 * idx[i], 3 * sizeof *dst);
        }
        double rr[9], tt[3], ss;
        if (pose_umeyama(sub_n, sub_src, sub_dst, rr, tt, &ss) != 0) continue; /* DA3 skips what evo refuses */
        int k = 0;
        double sum = 0;
        for (int i = 0; i < n; i++) {
            double p[3];
            apply_sim3(rr, tt, ss, src + 3 * i, p);
            double e = dist3(p, dst + 3 * i);
            inl[i] = e <= thresh;
            if (inl[i]) {
                k++;
                sum += e;
            }
        }
        double mean = k ? sum / k : INFINITY;
        if (k > best_k || (k == best_k && mean < best_err)) {
            best_k = k;
            best_err = mean;
            best_s = ss;
            memcpy(best_inl, inl, (size_t)n);
            have_best = 1;
        }
    }
    s = best_s;
    if (have_best && best_k >= 3) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (best_inl[i]) {
                memcpy(sub_src + 3 * m, src + 3 * i, 3 * sizeof *src);
                memcpy(sub_dst + 3 * m, dst + 3 * i, 3 * sizeof *dst);
                m++;
            }
        double rr[9], tt[3], ss;
        if (pose_umeyama(m, sub_src, sub_dst, rr, tt, &ss) >= 0) s = ss;
    }
done:
    free(nn);
    free(sub_src);
    free(sub_dst);
    free(idx);
    free(inl);
    free(best_inl);
    return s;
}

double pose_alignment_scale(int n, const double *ext_in, const double *ext_pred, double fallback, int *fitted) {
    double *src = malloc((size_t)n * 3 * sizeof *src), *dst = malloc((size_t)n * 3 * sizeof *dst);
    double s = NAN;
    if (n > 0 && src && dst) {
        for (int i = 0; i < n; i++) {
            double pred[16] = {0};
            memcpy(pred, ext_pred + 12 * i, 12 * sizeof *pred);
            pred[15] = 1.0;
            pose_camera_centre(ext_in + 16 * i, src + 3 * i);
            pose_camera_centre(pred, dst + 3 * i);
        }
        if (n >= RANSAC_MIN_VIEWS) {
            s = ransac_scale(n, src, dst);
        } else {
            double r[9], t[3];
            if (pose_umeyama(n, src, dst, r, t, &s) < 0) s = NAN;
        }
    }
    free(src);
    free(dst);
    /* A prediction whose cameras do not move at all gives s = 0. */
    const int ok = isfinite(s) && s > 1e-12;
    if (fitted) *fitted = ok;
    return ok ? s : fallback;
}
