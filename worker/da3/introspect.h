/* Test and bisecting hook into the DA3 network, not part of the worker API (worker/model.h):
 * the forward pass plus the backbone's four outputs, to compare against the golden fixtures'
 * backbone.{0..3}.tokens / .cam when an output mismatch has to be narrowed down. */
#ifndef DA3_INTROSPECT_H
#define DA3_INTROSPECT_H

#include <stddef.h>

#include "worker/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int n, patches, dim;  /* views, patch tokens per view, feature width (2*embed with cat_token) */
    float *tokens[4];     /* (N, patches, dim) per out layer, input view order */
    float *cam[4];        /* (N, dim) camera/cls slot per out layer (not normed) */
    int reference_view;   /* view picked as reference (0 when no selection ran) */
} da3_backbone_features;

/* da3_model_forward that also fills *feats (free with da3_backbone_features_free). */
int da3_model_forward_debug(da3_model *m, const float *input, int n, int height, int width,
                            const da3_known_cameras *cams, ref_view_strategy strategy,
                            da3_prediction *out, da3_backbone_features *feats, char *err,
                            size_t errlen);

/* Frees the arrays and zeroes the struct; safe on a zeroed struct. */
void da3_backbone_features_free(da3_backbone_features *f);

/* Runs the attention softmax (worker/da3/softmax.cpp) and ATen's on the same random rows x len
 * scores (float32, or bfloat16 when bf16), puts the largest absolute difference in *max_diff.
 * Returns 1 when the fused AVX-512 kernel ran, 0 when this CPU fell back to ATen, -1 on error. */
int da3_softmax_check(int rows, int len, int bf16, unsigned seed, double *max_diff);

#ifdef __cplusplus
}
#endif

#endif
