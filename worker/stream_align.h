/* Streaming reconstruction (issue 10): a session is reconstructed in chunks of consecutive
 * images, each chunk a separate forward pass whose prediction lives in its own gauge (its own
 * origin, orientation and scale). Consecutive chunks share `n_frames` overlap images; because
 * those are the same images in both chunks, pixel (u,v) of an overlap frame back-projected with
 * each chunk's depth and camera gives one 3D correspondence between the two gauges. This module
 * fits the Sim(3) that maps the new chunk's gauge onto the previous chunk's from those
 * correspondences (weighted centroids, RMS-spread scale, SVD rotation, then Huber IRLS), and
 * provides the Sim(3) algebra to compose such links along the chain (chunk k -> chunk 0 =
 * session frame). Loop closure is not done: errors of successive links accumulate (drift).
 *
 * Pure C, no libtorch, no global state; one temporary allocation per alignment (see
 * stream_align_overlap). Conventions as in the rest of worker/: row-major matrices, extrinsics
 * are world-to-camera 3x4 [R | t] in OpenCV axes, depth is z-depth along the camera's +z,
 * pixel (u,v) = (column, row) with integer coordinates at pixel centres (as fusion.c and DA3). */
#ifndef DA3_STREAM_ALIGN_H
#define DA3_STREAM_ALIGN_H

#include "worker/model.h"

/* A similarity x -> s * R * x + t (s > 0, R a rotation). */
typedef struct {
    double s;
    double r[9]; /* row-major rotation */
    double t[3];
} stream_sim3;

/* One chunk's prediction of the overlap frames, in that chunk's own gauge. Frame i of the
 * previous chunk's overlap and frame i of the new chunk's must be the same image. Arrays are
 * contiguous over frames, as in da3_prediction, so a slice of a prediction can be used as is. */
typedef struct {
    const float *depth;      /* (n_frames,H,W) z-depth, this chunk's units; <= 0 or non-finite = invalid */
    const float *conf;       /* (n_frames,H,W) confidence (DA3: >= 1, larger = surer) */
    const float *intrinsics; /* (n_frames,3,3) in pixels of the H x W maps */
    const float *extrinsics; /* (n_frames,3,4) world-to-camera, this chunk's gauge */
} stream_overlap;

/* A camera prepared for back-projection: X_world = c2w * (depth * kinv * [u v 1]^T). */
typedef struct {
    double kinv[9]; /* K^-1 */
    double c2w[12]; /* camera-to-world 3x4, the inverse of the extrinsics */
} stream_camera;

typedef struct {
    /* Pixels are kept when their confidence exceeds conf_ratio * min(median conf of the previous
     * chunk's overlap, median conf of the new chunk's) in BOTH chunks, and min_confidence too. */
    double conf_ratio;     /* 0.1 (DA3-Streaming) */
    double min_confidence; /* 0: no absolute floor (DA3's conf is >= 1 anyway) */
    /* Huber threshold on the 3D residual, as a fraction of the median depth of the previous
     * chunk's kept overlap pixels (so the result does not depend on either gauge's scale). */
    double huber_delta;     /* 0.1 */
    int max_iterations;     /* IRLS iterations after the closed-form start; 5; 0 = closed form only */
    double tolerance;       /* stop when |ds|/s, the rotation change (rad) and |dt|/median depth are all below: 1e-6 */
    long min_correspondences; /* fewer kept pixels fail with STREAM_ALIGN_TOO_FEW: 100 */
} stream_align_options;

typedef enum {
    STREAM_ALIGN_OK = 0,
    STREAM_ALIGN_BAD_INPUT = -1,  /* NULL pointers, sizes <= 0, singular or non-finite cameras */
    STREAM_ALIGN_TOO_FEW = -2,    /* fewer than min_correspondences confident pixels */
    STREAM_ALIGN_DEGENERATE = -3, /* kept points (nearly) coincident or on a line: rotation or scale undetermined */
    STREAM_ALIGN_NO_MEMORY = -4,
} stream_align_status;

typedef struct {
    long n_pixels;           /* overlap pixels examined: n_frames * H * W */
    long n_kept;             /* correspondences kept by the confidence rule (and finite) */
    double median_conf_prev; /* median confidence over each chunk's valid overlap pixels */
    double median_conf_new;
    double conf_threshold;   /* the threshold applied in both chunks */
    double median_depth;     /* residual unit: median depth of the previous chunk's kept pixels */
    double rms_residual;     /* final Huber- and confidence-weighted residual RMS, previous chunk's units */
    double rms_residual_rel; /* the same divided by median_depth */
    double inlier_fraction;  /* kept pixels whose final residual is within the Huber threshold */
    int iterations;          /* IRLS iterations run (0..max_iterations) */
    int converged;           /* 1 when the last iteration changed the parameters by < tolerance */
} stream_align_report;

/* Fills *o with the defaults listed above. */
void stream_align_default_options(stream_align_options *o);

/* A constant English description of a stream_align_status value. */
const char *stream_align_status_text(int status);

/* The identity similarity. */
stream_sim3 stream_sim3_identity(void);

/* outer o inner: the similarity applying `inner` first, then `outer`. */
stream_sim3 stream_sim3_compose(const stream_sim3 *outer, const stream_sim3 *inner);

/* The inverse similarity: x -> R^T (x - t) / s. */
stream_sim3 stream_sim3_inverse(const stream_sim3 *a);

/* out = s R p + t; out may alias p. */
void stream_sim3_apply_point(const stream_sim3 *a, const double p[3], double out[3]);

/* The extrinsics (world-to-camera 3x4) of the same camera after the world is mapped by `a`:
 * [R_c R^T | s t_c - R_c R^T t]. The rotation stays a rotation and the camera's centre moves
 * to a(centre); camera-frame coordinates, hence depth, are multiplied by a->s, so a depth map
 * predicted with w2c must be multiplied by a->s to go with out. out may alias w2c. */
void stream_sim3_apply_extrinsics(const stream_sim3 *a, const double w2c[12], double out[12]);

/* Prepares intrinsics k (3x3) and extrinsics w2c (3x4) for back-projection. Returns 0, or -1
 * when either is non-finite or singular. */
int stream_camera_prepare(const float k[9], const float w2c[12], stream_camera *cam);

/* out = the world point seen at pixel (u,v) at z-depth `depth` by cam. */
void stream_camera_backproject(const stream_camera *cam, double u, double v, double depth, double out[3]);

/* Points `out` at frames [first, first + n_frames) of a prediction (no copy). Returns 0, or -1
 * when the range is outside the prediction. */
int stream_overlap_from_prediction(const da3_prediction *p, int first, int n_frames, stream_overlap *out);


/* Fits the Sim(3) mapping the new chunk's gauge onto the previous chunk's from their overlap
 * frames (n_frames frames of height x width in each): *out satisfies
 * X_prev ~ out(X_new) for the points both chunks predict for the same pixel. opts may be NULL
 * (defaults); report may be NULL. Returns STREAM_ALIGN_OK, or a negative stream_align_status
 * with *out = identity; the report is filled as far as the computation got either way.
 * Contract for the caller: on TOO_FEW or DEGENERATE the overlap cannot place the new chunk (it
 * saw nothing reliable in common with the previous one); do not chain through this link (e.g.
 * re-run the chunk with more overlap or start a new segment). An OK result with a large
 * rms_residual_rel / small inlier_fraction means the chunks disagree; the threshold is the
 * caller's policy. Memory: one temporary block of 28 bytes per overlap pixel (7 floats), freed
 * before return. Deterministic: same inputs, same result. */
int stream_align_overlap(const stream_overlap *prev, const stream_overlap *next, int n_frames, int height,
                         int width, const stream_align_options *opts, stream_sim3 *out,
                         stream_align_report *report);

#endif
