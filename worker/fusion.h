/* Depth maps + cameras -> one coloured point cloud, as DA3's export_to_glb does it:
 * a global confidence threshold, back-projection, alignment to the first camera in glTF axes
 * centred on the per-axis median, deterministic downsampling, camera frustums. */
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

typedef struct {
    size_t n_points;
    float *xyz;          /* (n_points,3) aligned positions */
    uint8_t *rgba;       /* (n_points,4) colours, alpha 255 */
    double alignment[16];/* row-major 4x4 A = T_center * diag(1,-1,-1,1) * w2c[0] */
    int n_cameras;       /* 0 when show_cameras is off */
    float *camera_lines; /* (n_cameras,16,3) LINES vertex pairs, aligned */
    uint8_t *camera_rgba;/* (n_cameras,4) colour per camera */
} point_cloud;

/* Fuses a prediction with the processed colours rgb (N,H,W,3). Returns 0, or -1 with err set. */
int fuse_point_cloud(const da3_prediction *pred, const uint8_t *rgb, const fusion_params *p,
                     point_cloud *out, char *err, size_t errlen);

/* Frees the cloud's arrays and zeroes it; safe on a zeroed struct. */
void point_cloud_free(point_cloud *pc);

#endif
