/* Known cameras around the network, as DA3's API does it (api.py): the client's world-to-camera
 * extrinsics are normalised before the forward pass (view 0 becomes the identity, camera
 * distances scaled to a median of 1), and afterwards the prediction is brought back to the
 * client's frame: a Umeyama Sim(3) fit between the client's and the predicted camera centres
 * gives the scale, depth is divided by it, and the client's own cameras are returned.
 * All matrices are row-major doubles; extrinsics are 4x4 world-to-camera (OpenCV axes). */
#ifndef DA3_POSE_ALIGN_H
#define DA3_POSE_ALIGN_H

/* Inverse of a rigid 4x4 [R t; 0 1] as DA3's affine_inverse computes it: [R^T, -R^T t]. */
void pose_affine_inverse(const double m[16], double out[16]);

/* The camera centre (camera-to-world translation) of a 4x4 world-to-camera matrix. */
void pose_camera_centre(const double ext[16], double centre[3]);

/* DA3's _normalize_extrinsics: out_i = ext_i * inverse(ext_0), then every translation divided
 * by the median (torch.median: the lower middle value) of the camera distances from view 0's
 * centre, clamped to at least 0.1. Writes n 4x4 matrices to out and that divisor to *median
 * (may be NULL). Returns 0, or -1 when out of memory. */
int pose_normalize_extrinsics(int n, const double *ext, double *out, double *median);

/* Umeyama's least-squares similarity (with scale) taking points src to dst: dst ~ s R src + t.
 * Returns 0; 1 when the cross-covariance has rank < 2 (a line: the scale is right, the roll
 * about the line arbitrary; evo refuses such sets); -1 when src has no spread (all points equal:
 * no scale), with R, t and s the identity. */
int pose_umeyama(int n, const double *src, const double *dst, double r[9], double t[3], double *s);

/* The scale DA3's _align_to_input_extrinsics_intrinsics divides depth by: the Sim(3) fit from
 * the client's camera centres (ext_in, n 4x4) to the predicted ones (ext_pred, n 3x4). With 10
 * views or more, a RANSAC of 10 rounds over half-size samples, fixed seed, refits on the inliers
 * (DA3's ransac_view_thresh; samples on a line are skipped, as evo refuses them). When no scale
 * can be fitted (the client's or the predicted cameras do not move) it returns `fallback`;
 * *fitted (may be NULL) says which happened. */
double pose_alignment_scale(int n, const double *ext_in, const double *ext_pred, double fallback, int *fitted);

#endif
