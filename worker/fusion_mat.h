/* Row-major double 3x3 and 4x4 matrices for fusion's camera maths (double so that composing
 * K^-1, inv(w2c) and the alignment loses nothing before the float32 output). */
#ifndef DA3_FUSION_MAT_H
#define DA3_FUSION_MAT_H

/* out = m^-1 by cofactors. Returns 0, or -1 if m is singular or not finite. */
int fmat3_invert(const double m[9], double out[9]);

/* out = the (3,4) float matrix e made homogeneous: its rows, then [0 0 0 1]. */
void fmat4_from_3x4f(const float *e, double out[16]);

/* out = m^-1 for an affine m = [R t; 0 0 0 1]: [R^-1, -R^-1 t; 0 0 0 1]. 0, or -1 if R is singular. */
int fmat4_invert_affine(const double m[16], double out[16]);

/* out = a * b; out may not alias a or b. */
void fmat4_mul(const double a[16], const double b[16], double out[16]);

/* out = (m * [p;1])[0..2] for an affine m. */
void fmat4_apply(const double m[16], const double p[3], double out[3]);

#endif
