/* Small dense matrix helpers; see fusion_mat.h. */
#include "worker/fusion_mat.h"

#include <math.h>

int fmat3_invert(const double m[9], double out[9]) {
    double c00 = m[4] * m[8] - m[5] * m[7];
    double c01 = m[5] * m[6] - m[3] * m[8];
    double c02 = m[3] * m[7] - m[4] * m[6];
    double det = m[0] * c00 + m[1] * c01 + m[2] * c02;
    if (det == 0.0 || !isfinite(det)) return -1;
    double r = 1.0 / det;
    out[0] = c00 * r;
    out[1] = (m[2] * m[7] - m[1] * m[8]) * r;
    out[2] = (m[1] * m[5] - m[2] * m[4]) * r;
    out[3] = c01 * r;
    out[4] = (m[0] * m[8] - m[2] * m[6]) * r;
    out[5] = (m[2] * m[3] - m[0] * m[5]) * r;
    out[6] = c02 * r;
    out[7] = (m[1] * m[6] - m[0] * m[7]) * r;
    out[8] = (m[0] * m[4] - m[1] * m[3]) * r;
    for (int i = 0; i < 9; i++)
        if (!isfinite(out[i])) return -1;
    return 0;
}

void fmat4_from_3x4f(const float *e, double out[16]) {
    for (int i = 0; i < 12; i++) out[i] = (double)e[i];
    out[12] = out[13] = out[14] = 0.0;
    out[15] = 1.0;
}

int fmat4_invert_affine(const double m[16], double out[16]) {
    double r[9] = {m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]}, ri[9];
    if (fmat3_invert(r, ri) != 0) return -1;
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) out[4 * i + j] = ri[3 * i + j];
        out[4 * i + 3] = -(ri[3 * i] * m[3] + ri[3 * i + 1] * m[7] + ri[3 * i + 2] * m[11]);
    }
    out[12] = out[13] = out[14] = 0.0;
    out[15] = 1.0;
    return 0;
}

void fmat4_mul(const double a[16], const double b[16], double out[16]) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = a[4 * i] * b[j] + a[4 * i + 1] * b[4 + j] + a[4 * i + 2] * b[8 + j] +
                             a[4 * i + 3] * b[12 + j];
}

void fmat4_apply(const double m[16], const double p[3], double out[3]) {
    for (int i = 0; i < 3; i++)
        out[i] = m[4 * i] * p[0] + m[4 * i + 1] * p[1] + m[4 * i + 2] * p[2] + m[4 * i + 3];
}
