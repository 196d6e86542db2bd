/* 3x3 algebra in double, row-major (worker/mat3.h). */
#include "worker/mat3.h"

#include <math.h>
#include <string.h>

static const double IDENTITY3[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};

void mat3_mul(const double a[9], const double b[9], double out[9]) {
    double r[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) r[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
    memcpy(out, r, sizeof r);
}

void mat3_transpose(const double a[9], double out[9]) {
    double r[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) r[3 * i + j] = a[3 * j + i];
    memcpy(out, r, sizeof r);
}

void mat3_apply(const double m[9], const double p[3], double out[3]) {
    double r[3];
    for (int i = 0; i < 3; i++) r[i] = m[3 * i] * p[0] + m[3 * i + 1] * p[1] + m[3 * i + 2] * p[2];
    memcpy(out, r, sizeof r);
}

double mat3_det(const double m[9]) {
    return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
           m[2] * (m[3] * m[7] - m[4] * m[6]);
}

double vec3_dot(const double a[3], const double b[3]) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

void vec3_cross(const double a[3], const double b[3], double out[3]) {
    double r[3] = {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
    memcpy(out, r, sizeof r);
}

/* Eigen-decomposition of a symmetric 3x3 matrix by cyclic Jacobi rotations: a = v diag(lambda) v^T
 * with lambda descending and v's columns orthonormal. Jacobi rather than a closed-form cubic:
 * its eigenvectors stay accurate for (nearly) repeated eigenvalues, which planar and symmetric
 * point sets produce. */
void mat3_sym_eigen(const double a[9], double lambda[3], double v[9]) {
    double m[9];
    memcpy(m, a, sizeof m);
    memcpy(v, IDENTITY3, sizeof IDENTITY3);
    static const int PAIRS[3][2] = {{0, 1}, {0, 2}, {1, 2}};
    for (int sweep = 0; sweep < 32; sweep++) { /* converges quadratically: ~4-6 sweeps */
        int rotated = 0;
        for (int k = 0; k < 3; k++) {
            const int p = PAIRS[k][0], q = PAIRS[k][1];
            const double apq = m[3 * p + q], app = m[3 * p + p], aqq = m[3 * q + q];
            /* An off-diagonal this far below the diagonal moves nothing at double precision. */
            if (apq == 0.0 || fabs(apq) <= 1e-20 * (fabs(app) + fabs(aqq))) {
                m[3 * p + q] = m[3 * q + p] = 0.0;
                continue;
            }
            rotated = 1;
            /* The rotation angle that zeroes m[p][q]: tan from the smaller root, which keeps the
             * rotation below 45 degrees and the update stable. */
            const double theta = (aqq - app) / (2.0 * apq);
            const double t = fabs(theta) > 1e150 ? 0.5 / theta
                                                 : (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
            const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
            for (int i = 0; i < 3; i++) { /* m <- m J (columns p, q) */
                const double mip = m[3 * i + p], miq = m[3 * i + q];
                m[3 * i + p] = c * mip - s * miq;
                m[3 * i + q] = s * mip + c * miq;
            }
            for (int j = 0; j < 3; j++) { /* m <- J^T m (rows p, q) */
                const double mpj = m[3 * p + j], mqj = m[3 * q + j];
                m[3 * p + j] = c * mpj - s * mqj;
                m[3 * q + j] = s * mpj + c * mqj;
            }
            m[3 * p + q] = m[3 * q + p] = 0.0;
            for (int i = 0; i < 3; i++) { /* v <- v J */
                const double vip = v[3 * i + p], viq = v[3 * i + q];
                v[3 * i + p] = c * vip - s * viq;
                v[3 * i + q] = s * vip + c * viq;
            }
        }
        if (!rotated) break;
    }
    for (int i = 0; i < 3; i++) lambda[i] = m[4 * i];
    for (int i = 0; i < 2; i++) /* selection sort, descending, columns of v along */
        for (int j = i + 1; j < 3; j++)
            if (lambda[j] > lambda[i]) {
                double tl = lambda[i];
                lambda[i] = lambda[j];
                lambda[j] = tl;
                for (int r = 0; r < 3; r++) {
                    double tv = v[3 * r + i];
                    v[3 * r + i] = v[3 * r + j];
                    v[3 * r + j] = tv;
                }
            }
}

/* A unit vector orthogonal to the unit vector n (for completing a basis). */
static void any_orthogonal(const double n[3], double out[3]) {
    /* Cross with the axis least aligned with n: never near-parallel, so never ill-conditioned. */
    double axis[3] = {0, 0, 0};
    int k = fabs(n[0]) <= fabs(n[1]) ? (fabs(n[0]) <= fabs(n[2]) ? 0 : 2) : (fabs(n[1]) <= fabs(n[2]) ? 1 : 2);
    axis[k] = 1.0;
    vec3_cross(n, axis, out);
    double len = sqrt(vec3_dot(out, out));
    for (int i = 0; i < 3; i++) out[i] /= len;
}

void mat3_svd(const double a[9], double u[9], double sigma[3], double v[9]) {
    /* a^T a = v diag(sigma^2) v^T; then u_k = a v_k / sigma_k. Squaring loses the small singular
     * values' relative accuracy, not the large ones': u_0, u_1 come from a v_0, a v_1 directly
     * (Gram-Schmidt against rounding), and u_2 = u_0 x u_1 needs no third singular value at all,
     * which is what makes planar (rank-2) inputs exact. */
    double at[9], ata[9], lambda[3];
    mat3_transpose(a, at);
    mat3_mul(at, a, ata);
    mat3_sym_eigen(ata, lambda, v);
    double w[3][3]; /* w[k] = a v_k */
    for (int k = 0; k < 3; k++) {
        const double vk[3] = {v[k], v[3 + k], v[6 + k]};
        mat3_apply(a, vk, w[k]);
    }
    double u0[3], u1[3], u2[3];
    const double n0 = sqrt(vec3_dot(w[0], w[0]));
    if (n0 > 0 && isfinite(n0)) {
        for (int i = 0; i < 3; i++) u0[i] = w[0][i] / n0;
    } else {
        u0[0] = 1, u0[1] = 0, u0[2] = 0;
    }
    const double proj = vec3_dot(u0, w[1]);
    for (int i = 0; i < 3; i++) u1[i] = w[1][i] - proj * u0[i];
    const double n1 = sqrt(vec3_dot(u1, u1));
    if (n1 > 1e-300 && n1 > 1e-15 * n0) {
        for (int i = 0; i < 3; i++) u1[i] /= n1;
    } else {
        any_orthogonal(u0, u1); /* rank <= 1: any completion is an SVD */
    }
    double s1 = vec3_dot(u1, w[1]);
    if (s1 < 0) { /* only when u1 was a free completion (rank <= 1): sigma[1] ~ 0, made >= 0 */
        s1 = -s1;
        for (int i = 0; i < 3; i++) u1[i] = -u1[i];
    }
    vec3_cross(u0, u1, u2);
    double s2 = vec3_dot(u2, w[2]);
    if (s2 < 0) { /* keep sigma >= 0: the sign goes into u's last column */
        s2 = -s2;
        for (int i = 0; i < 3; i++) u2[i] = -u2[i];
    }
    sigma[0] = n0;
    sigma[1] = s1;
    sigma[2] = s2;
    for (int i = 0; i < 3; i++) {
        u[3 * i] = u0[i];
        u[3 * i + 1] = u1[i];
        u[3 * i + 2] = u2[i];
    }
    if (s2 > s1) { /* both at rounding level (rank <= 1): restore the order, u and v alike */
        sigma[1] = s2;
        sigma[2] = s1;
        for (int i = 0; i < 3; i++) {
            double tu = u[3 * i + 1], tv = v[3 * i + 1];
            u[3 * i + 1] = u[3 * i + 2], v[3 * i + 1] = v[3 * i + 2];
            u[3 * i + 2] = tu, v[3 * i + 2] = tv;
        }
    }
}

void mat3_rotation_from_covariance(const double h[9], double r[9]) {
    double u[9], sigma[3], v[9];
    mat3_svd(h, u, sigma, v);
    /* u v^T is the best orthogonal matrix; when det(u) det(v) < 0 it is a reflection, and the best
     * rotation flips the direction of the smallest singular value instead (Umeyama 1991). */
    const double d = mat3_det(u) * mat3_det(v) < 0 ? -1.0 : 1.0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            r[3 * i + j] = u[3 * i] * v[3 * j] + u[3 * i + 1] * v[3 * j + 1] + d * u[3 * i + 2] * v[3 * j + 2];
}

