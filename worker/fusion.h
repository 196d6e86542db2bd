/* Depth maps + cameras -> one coloured point cloud, as DA3's export_to_glb does it:
 * a global confidence threshold, back-projection, alignment to the first camera in glTF axes
 * centred on the per-axis median, deterministic downsampling, camera frustums.
 * fuse_point_cloud_fixed is the same computation with the placement (and frustum size) taken
 * from an earlier cloud instead of from these views, so that clouds made from separate
 * predictions in one world frame (streaming chunks) land in one glTF frame. */
#ifndef DA3_FUSION_H
#define DA3_FUSION_H

#include <stddef.h>
#include <stdint.h>
#include "worker/model.h"

typedef struct {
    double conf_thresh_percentile; /* e.g. 10.0: drop roughly the lowest 10% by confidence */
    long num_max_points;           /* cap; a fixed-seed uniform subset is kept above it */
    int show_cameras;              /* add 8-segment frustums per view */
    uint64_t seed;                 /* downsampling seed: same input + seed -> same cloud */
} fusion_params;

/* The glTF placement A = T(-centre) * a0 as its two factors: points are rounded to float32 after
 * a0 and again after the centring, so a cloud that must reproduce another's points bit for bit
 * has to apply the same two steps, not their product. */
typedef struct {
    double a0[16];    /* row-major M * w2c[0], M = diag(1,-1,-1,1): first camera in glTF axes */
    double centre[3]; /* subtracted after a0: the per-axis median of the a0-mapped points */
} fusion_placement;

typedef struct {
    size_t n_points;
    float *xyz;          /* (n_points,3) aligned positions */
    uint8_t *rgba;       /* (n_points,4) colours, alpha 255 */
    double alignment[16];/* row-major 4x4 A = T_center * diag(1,-1,-1,1) * w2c[0] */
    fusion_placement placement; /* A's factors (alignment is exactly a0 with centre subtracted) */
    double camera_depth; /* frustum depth used (0.03 x the scene scale); 0 when show_cameras is off */
    int n_cameras;       /* 0 when show_cameras is off */
    float *camera_lines; /* (n_cameras,16,3) LINES vertex pairs, aligned */
    uint8_t *camera_rgba;/* (n_cameras,4) colour per camera */
} point_cloud;

/* What fuse_point_cloud_fixed takes from elsewhere instead of computing it from its views. */
typedef struct {
    fusion_placement placement; /* e.g. an earlier cloud's placement */
    double camera_depth;        /* frustum depth (e.g. an earlier cloud's camera_depth), > 0 */
    /* frustum colours: view i of the prediction gets colour camera_first + i of camera_total, so
     * views fused in separate calls are coloured as one sequence */
    int camera_first, camera_total;
} fusion_fixed;

/* Fuses a prediction with the processed colours rgb (N,H,W,3). Returns 0, or -1 with err set. */
int fuse_point_cloud(const da3_prediction *pred, const uint8_t *rgb, const fusion_params *p,
                     point_cloud *out, char *err, size_t errlen);

/* As fuse_point_cloud (same threshold rule over these views, same back-projection, cleaning and
 * downsampling) with the placement, frustum depth and frustum colours of *fixed: no median, no
 * scene scale. With fixed = an earlier cloud's placement/camera_depth and the same inputs it gives
 * that cloud's points bit for bit. Returns 0, or -1 with err set. */
int fuse_point_cloud_fixed(const da3_prediction *pred, const uint8_t *rgb, const fusion_params *p,
                           const fusion_fixed *fixed, point_cloud *out, char *err, size_t errlen);

/* The frustum depth fuse_point_cloud uses for a cloud holding these points: 0.03 x the length of
 * the P5..P95 box diagonal (1 when that is undefined). Returns 0, or -1 when out of memory. */
int fusion_camera_depth(const point_cloud *pc, double *depth);

/* Frees the cloud's arrays and zeroes it; safe on a zeroed struct. */
void point_cloud_free(point_cloud *pc);

#endif
