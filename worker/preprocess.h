/* DA3 input preprocessing, identical to DA3's InputProcessor: boundary resize (cv2 INTER_AREA
 * when shrinking, INTER_CUBIC when enlarging), multiple-of-14 rounding by resize or centre crop,
 * centre-crop of mismatched sizes to the smallest H and W, ImageNet normalisation. */
#ifndef DA3_PREPROCESS_H
#define DA3_PREPROCESS_H

#include "common/image_decode.h"
#include "common/protocol.h"

/* DA3_PATCH_SIZE, resize_method and its names are protocol parameters: common/protocol.h. */

/* The size preprocess_resize produces for a width x height image, without touching pixels.
 * Returns 0, or -1 with a reason in err (result under one patch, or over IMAGE_MAX_PIXELS). */
int preprocess_output_size(int width, int height, int process_res, resize_method m, int *out_w, int *out_h,
                           char *err, size_t errlen);

/* Carries a camera matrix through preprocess_resize as DA3's InputProcessor does: the first row
 * (fx, s, cx) scales with the width ratio and the second (fy, cy) with the height ratio at each
 * resize; a crop shifts cx, cy by its top-left corner. k_in/k_out are 3x3 row-major (may alias).
 * Returns 0, or -1 with a reason in err (the same refusals as preprocess_output_size). */
int preprocess_intrinsics(const double k_in[9], int width, int height, int process_res, resize_method m,
                          double k_out[9], char *err, size_t errlen);

/* Resizes one decoded image the way DA3 does for process_res/method into *out (allocated).
 * Returns 0, or -1 with a reason in err (e.g. result smaller than one patch). */
int preprocess_resize(const rgb_image *in, int process_res, resize_method m, rgb_image *out,
                      char *err, size_t errlen);

/* A batch ready for the network: N views cropped to a common H x W (multiples of 14). */
typedef struct {
    int n, height, width;
    float *input;   /* (N,3,H,W) ImageNet-normalised float32 */
    uint8_t *rgb;   /* (N,H,W,3) the same pixels as uint8 (for point colours) */
} da3_batch;

/* Builds a batch from already-resized images: centre-crops every view to the smallest H and W,
 * normalises. Returns 0, or -1 with a reason in err. */
int preprocess_batch(const rgb_image *views, int n, da3_batch *out, char *err, size_t errlen);

/* Frees a batch's buffers and zeroes it; safe on a zeroed struct. */
void da3_batch_free(da3_batch *b);

#endif
