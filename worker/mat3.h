/* Row-major double 3x3 algebra shared by the two point-set fits: known-camera alignment
 * (pose_align.c, Umeyama) and streaming chunk alignment (stream_align.c, weighted Kabsch).
 * Every out may alias an input unless said otherwise. */
#ifndef DA3_MAT3_H
#define DA3_MAT3_H

/* out = a * b. */
void mat3_mul(const double a[9], const double b[9], double out[9]);

/* out = a^T. */
void mat3_transpose(const double a[9], double out[9]);

/* out = m p. */
void mat3_apply(const double m[9], const double p[3], double out[3]);

/* det(m). */
double mat3_det(const double m[9]);

/* a . b */
double vec3_dot(const double a[3], const double b[3]);

/* out = a x b. */
void vec3_cross(const double a[3], const double b[3], double out[3]);

/* Symmetric a = v diag(lambda) v^T, lambda descending, v's columns orthonormal (cyclic Jacobi). */
void mat3_sym_eigen(const double a[9], double lambda[3], double v[9]);

/* SVD of a 3x3 matrix: a = u diag(sigma) v^T, sigma[0] >= sigma[1] >= sigma[2] >= 0, u and v
 * orthonormal (either may have det -1). Via a Jacobi eigen-decomposition of a^T a; exact to
 * rounding when sigma[1] >= ~1e-7 sigma[0] (what a non-degenerate alignment needs), and exact
 * for rank-2 (planar) inputs. */
void mat3_svd(const double a[9], double u[9], double sigma[3], double v[9]);

/* The rotation R (det +1) maximising trace(R^T h) for a cross-covariance h = sum w a b^T: the
 * best rotation taking the b's onto the a's (Kabsch; a reflection is never returned). */
void mat3_rotation_from_covariance(const double h[9], double r[9]);

#endif
