/* The worker's model API: a C border over the C++/libtorch DA3 implementation. Every C++
 * exception is caught inside; errors come back as -1 plus a message. */
#ifndef DA3_MODEL_H
#define DA3_MODEL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct da3_model da3_model;

typedef enum { REF_VIEW_SADDLE_BALANCED = 0, REF_VIEW_FIRST, REF_VIEW_MIDDLE } ref_view_strategy;

/* Network outputs for one scene of N views at the processing resolution, float32, row-major. */
typedef struct {
    int n, height, width;
    float *depth;      /* (N,H,W) z-depth */
    float *conf;       /* (N,H,W) confidence, >= 1 */
    float *extrinsics; /* (N,3,4) world-to-camera, OpenCV axes */
    float *intrinsics; /* (N,3,3) pixels of the processed image */
} da3_prediction;

/* Optional known cameras for the pose-conditioned path (both or neither). */
typedef struct {
    const float *extrinsics; /* (N,4,4) world-to-camera */
    const float *intrinsics; /* (N,3,3) */
} da3_known_cameras;

/* Loads `path` (a folder with config.json + model.safetensors) or "demo" (DA3-Small topology,
 * fixed-seed random weights) onto `device` ("cpu", "cuda", "cuda:1"). Returns NULL with a
 * message in err on failure. */
da3_model *da3_model_open(const char *path, const char *device, char *err, size_t errlen);

/* Human-readable model name, e.g. "demo (DA3-Small topology, random weights)" or the folder. */
const char *da3_model_name(const da3_model *m);

/* 1 when the weights come from a checkpoint, 0 for random (untrained) weights. */
int da3_model_is_trained(const da3_model *m);

/* Runs the network on `input` (N,3,H,W ImageNet-normalised, H and W multiples of 14). `cams` may
 * be NULL. Fills *out (free with da3_prediction_free). Returns 0, or -1 with err set
 * (bad shape, out of memory...); the model stays usable after an error. */
int da3_model_forward(da3_model *m, const float *input, int n, int height, int width,
                      const da3_known_cameras *cams, ref_view_strategy strategy,
                      da3_prediction *out, char *err, size_t errlen);

/* Floating-point operations of the backbone's matrix products for n views of height x width (the
 * figure to compare with a device's matmul peak; element-wise work and the head not counted). */
double da3_model_backbone_flops(const da3_model *m, int n, int height, int width);

/* Frees the prediction's arrays and zeroes it; safe on a zeroed struct. */
void da3_prediction_free(da3_prediction *p);

/* Releases the model and everything it holds; NULL is allowed. */
void da3_model_close(da3_model *m);

/* Backbone precision for models opened afterwards on the CPU: 0 = float32 (default; DA3's CPU
 * numbers), 1 = bfloat16 matmuls with float32 heads (DA3's GPU autocast numerics, ~1.5x faster on
 * CPUs with AVX512-BF16). CUDA always uses bfloat16 for the backbone, as DA3 does. */
void da3_set_cpu_bf16(int on);

/* Sets the number of intra-op threads for CPU inference (0 keeps libtorch's default). */
void da3_set_num_threads(int n);

#ifdef __cplusplus
}
#endif

#endif
