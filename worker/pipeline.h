/* The worker's whole job, shared by da3-worker and da3-infer: image files -> decode ->
 * preprocess -> network (pipeline_predict_files) -> fusion (pipeline_fuse). Writing the GLB is
 * left to the caller (arena or file). The streaming path (worker/stream_session.h) runs the
 * prediction alone and fuses chunks its own way. */
#ifndef DA3_PIPELINE_H
#define DA3_PIPELINE_H

#include "common/camera_json.h"
#include "worker/fusion.h"
#include "worker/model.h"
#include "worker/preprocess.h"

typedef struct {
    int process_res;
    resize_method method;
    ref_view_strategy ref_view;
    fusion_params fusion;
} pipeline_params;

/* Called at each stage with a fraction in [0,1] of the whole job. */
typedef void (*pipeline_progress_fn)(void *ctx, const char *stage, double progress,
                                     const char *message);

typedef struct {
    da3_prediction pred;
    uint8_t *rgb;       /* (N,H,W,3) the processed colours the network saw (owned) */
    point_cloud cloud;
    int known_cameras;  /* 1 when the client's cameras conditioned the network and were returned */
    double pose_scale;  /* known cameras: network units per client unit (depth was divided by it) */
    int pose_scale_fitted; /* 1: fitted to the predicted cameras; 0: the normalisation's factor */
    double decode_ms, model_ms, fusion_ms; /* wall time per stage */
} pipeline_result;

/* Sets the defaults of the protocol: 504, upper_bound_resize, saddle_balanced, 10%, 10M points,
 * cameras on, seed 42. */
void pipeline_params_default(pipeline_params *p);

/* Decode, preprocess and network on n image files in order: fills pred, rgb, the known-camera
 * fields, decode_ms and model_ms (cloud stays empty). Arguments and errors as pipeline_run_files.
 * Progress runs from 0.30 to 0.40. On failure *out is freed. */
int pipeline_predict_files(da3_model *m, const char *const *paths, const char *const *names, int n,
                           const known_camera *cams, const pipeline_params *p, pipeline_progress_fn progress,
                           void *ctx, pipeline_result *out, char *err, size_t errlen);

/* Fuses a predicted result (pred, rgb) into r->cloud and sets r->fusion_ms; reports 0.70.
 * Returns 0, or -1 with err set (r->cloud then empty). */
int pipeline_fuse(pipeline_result *r, const pipeline_params *p, pipeline_progress_fn progress, void *ctx,
                  char *err, size_t errlen);

/* Runs the pipeline (predict, then fuse) on n image files in order. names (may be NULL) are display names used in
 * error messages. cams (NULL, or one per image, intrinsics in the pixels of the file as sent)
 * runs the pose-conditioned network the way DA3's API does: cameras normalised to view 0, the
 * result returned in the client's frame (its own cameras, intrinsics carried through the
 * resize, depth in its units). Returns 0, or -1 with err naming the failing image or stage. */
int pipeline_run_files(da3_model *m, const char *const *paths, const char *const *names, int n,
                       const known_camera *cams, const pipeline_params *p, pipeline_progress_fn progress, void *ctx,
                       pipeline_result *out, char *err, size_t errlen);

/* The facts the result metadata reports, gathered so that every producer of a cloud (one
 * pipeline run, a streaming chunk, a streaming merge) describes its result the same way. */
typedef struct {
    int n_views, height, width;
    const float *intrinsics;  /* (n_views,3,3) */
    const float *extrinsics;  /* (n_views,3,4) world-to-camera */
    size_t n_points;
    const double *alignment;  /* 4x4 row-major, the cloud's glTF alignment */
    int known_cameras;
    double pose_scale;        /* reported when known_cameras */
    int pose_scale_fitted;
    double decode_ms, model_ms, fusion_ms;
} pipeline_meta;

/* The metadata object (fields as pipeline_metadata_json); NULL when out of memory. Callers may
 * add fields before pipeline_metadata_dump. */
json_t *pipeline_metadata_object(const pipeline_meta *facts, const char *model_name, int model_trained,
                                 size_t glb_bytes);

/* The object as the protocol's compact JSON text (malloc'd, NULL when out of memory); takes
 * ownership of meta. */
char *pipeline_metadata_dump(json_t *meta);

/* JSON text (malloc'd) of the result metadata the protocol sends besides the GLB:
 * intrinsics (N,3,3), extrinsics (N,3,4), point/size/model facts. */
char *pipeline_metadata_json(const pipeline_result *r, const char *model_name, int model_trained,
                             size_t glb_bytes);

/* Frees everything in the result; safe on a zeroed struct. */
void pipeline_result_free(pipeline_result *r);

#endif
