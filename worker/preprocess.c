/* DA3 input preprocessing (DA3 utils/io/input_processor.py, InputProcessor):
 *   1. boundary resize: the longest (upper_bound_*) or shortest (lower_bound_*) side becomes
 *      process_res; sides are round()ed with Python's ties-to-even; cv2 INTER_CUBIC when the scale
 *      is > 1, else INTER_AREA; skipped when that side already equals process_res;
 *   2. multiple of 14: *_resize -> nearest multiple per side (ties up, at least 1) by a second
 *      cv2 resize (INTER_CUBIC if either side grows, else INTER_AREA); *_crop -> floor to a
 *      multiple by a centre crop with (excess // 2) on the top/left;
 *   3. batch: views of different sizes are centre-cropped (torchvision CenterCrop) to the smallest
 *      H and W; ToTensor + Normalize(ImageNet mean/std) in float32. */
#include "worker/preprocess.h"
#include "common/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/resize.h"

typedef enum { STEP_NONE = 0, STEP_AREA, STEP_CUBIC } resize_step;

/* What preprocess_resize will do to one image. */
typedef struct {
    int bw, bh;           /* after the boundary resize */
    resize_step boundary; /* how the boundary resize is done */
    int fw, fh;           /* final size (multiples of 14) */
    resize_step fixup;    /* *_resize methods: the second resize */
    int crop_x, crop_y;   /* *_crop methods: top-left of the kept window */
} resize_plan;

static int is_upper_bound(resize_method m) { return m == RESIZE_UPPER_BOUND_RESIZE || m == RESIZE_UPPER_BOUND_CROP; }
static int is_crop(resize_method m) { return m == RESIZE_UPPER_BOUND_CROP || m == RESIZE_LOWER_BOUND_CROP; }

/* Python's int(round(side * scale)), at least 1. rint() rounds ties to even like round(). */
static long long scaled_side(int side, double scale) {
    double v = rint((double)side * scale);
    if (v > 1e9) v = 1e9; /* absurd requests fail the size check instead of overflowing */
    return v < 1 ? 1 : (long long)v;
}

/* DA3's nearest_multiple: ties go up; a side that rounds to 0 becomes 1 (and is refused later). */
static long long nearest_patch_multiple(long long x) {
    long long down = x / DA3_PATCH_SIZE * DA3_PATCH_SIZE, up = down + DA3_PATCH_SIZE;
    long long r = (up - x <= x - down) ? up : down;
    return r < 1 ? 1 : r;
}

static int plan_resize(int w, int h, int res, resize_method m, resize_plan *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (w <= 0 || h <= 0) {
        set_error(err, errlen, "invalid image size %dx%d", w, h);
        return -1;
    }
    if ((unsigned)m >= 4 || res <= 0) {
        set_error(err, errlen, "invalid preprocessing request: method %d, process_res %d", (int)m, res);
        return -1;
    }
    int ref = is_upper_bound(m) ? (w > h ? w : h) : (w < h ? w : h);
    long long bw = w, bh = h;
    if (ref != res) {
        double scale = res / (double)ref;
        bw = scaled_side(w, scale);
        bh = scaled_side(h, scale);
        p->boundary = scale > 1.0 ? STEP_CUBIC : STEP_AREA;
    }
    long long fw, fh;
    if (is_crop(m)) {
        fw = bw / DA3_PATCH_SIZE * DA3_PATCH_SIZE;
        fh = bh / DA3_PATCH_SIZE * DA3_PATCH_SIZE;
    } else {
        fw = nearest_patch_multiple(bw);
        fh = nearest_patch_multiple(bh);
        if (fw != bw || fh != bh) p->fixup = (fw > bw || fh > bh) ? STEP_CUBIC : STEP_AREA;
    }
    if (fw < DA3_PATCH_SIZE || fh < DA3_PATCH_SIZE) {
        set_error(err, errlen, "image too small for %s at process_res %d: %dx%d gives %lldx%lld (need at least %dx%d)",
                resize_method_name(m), res, w, h, bw, bh, DA3_PATCH_SIZE, DA3_PATCH_SIZE);
        return -1;
    }
    if (bw * bh > IMAGE_MAX_PIXELS || fw * fh > IMAGE_MAX_PIXELS) {
        set_error(err, errlen, "resized image too large: %dx%d gives %lldx%lld at process_res %d (limit %ld pixels)", w,
                h, bw, bh, res, (long)IMAGE_MAX_PIXELS);
        return -1;
    }
    p->bw = (int)bw;
    p->bh = (int)bh;
    p->fw = (int)fw;
    p->fh = (int)fh;
    if (is_crop(m)) {
        p->crop_x = (p->bw - p->fw) / 2;
        p->crop_y = (p->bh - p->fh) / 2;
    }
    return 0;
}

/* DA3's _resize_ixt: row 0 by the width ratio, row 1 by the height ratio. */
static void scale_intrinsics(double k[9], int from_w, int from_h, int to_w, int to_h) {
    for (int c = 0; c < 3; c++) {
        k[c] *= (double)to_w / from_w;
        k[3 + c] *= (double)to_h / from_h;
    }
}

int preprocess_intrinsics(const double k_in[9], int width, int height, int process_res, resize_method m,
                          double k_out[9], char *err, size_t errlen) {
    resize_plan p;
    if (plan_resize(width, height, process_res, m, &p, err, errlen)) return -1;
    double k[9];
    memcpy(k, k_in, sizeof k);
    scale_intrinsics(k, width, height, p.bw, p.bh);
    if (is_crop(m)) {
        k[2] -= p.crop_x;
        k[5] -= p.crop_y;
    } else {
        scale_intrinsics(k, p.bw, p.bh, p.fw, p.fh);
    }
    memcpy(k_out, k, sizeof k);
    return 0;
}

int preprocess_output_size(int width, int height, int process_res, resize_method m, int *out_w, int *out_h, char *err,
                           size_t errlen) {
    resize_plan p;
    if (plan_resize(width, height, process_res, m, &p, err, errlen)) return -1;
    if (out_w) *out_w = p.fw;
    if (out_h) *out_h = p.fh;
    return 0;
}

static int run_step(resize_step step, const uint8_t *src, int sw, int sh, rgb_image *dst) {
    return step == STEP_CUBIC ? resize_cubic_rgb8(src, sw, sh, dst->rgb, dst->width, dst->height)
                              : resize_area_rgb8(src, sw, sh, dst->rgb, dst->width, dst->height);
}

/* Copies the dst-sized window at (x, y) of src into dst. */
static void crop_copy(const uint8_t *src, int sw, int x, int y, rgb_image *dst) {
    size_t row = (size_t)dst->width * 3;
    for (int r = 0; r < dst->height; r++) memcpy(dst->rgb + r * row, src + ((size_t)(y + r) * sw + x) * 3, row);
}

int preprocess_resize(const rgb_image *in, int process_res, resize_method m, rgb_image *out, char *err, size_t errlen) {
    resize_plan p;
    rgb_image mid = {0};
    memset(out, 0, sizeof *out);
    if (!in || !in->rgb) {
        set_error(err, errlen, "no image to preprocess");
        return -1;
    }
    if (plan_resize(in->width, in->height, process_res, m, &p, err, errlen)) return -1;

    const uint8_t *cur = in->rgb;
    if (p.boundary != STEP_NONE) {
        if (image_alloc(&mid, p.bw, p.bh) || run_step(p.boundary, in->rgb, in->width, in->height, &mid)) goto oom;
        cur = mid.rgb;
    }
    if (image_alloc(out, p.fw, p.fh)) goto oom;
    if (p.fixup != STEP_NONE) {
        if (run_step(p.fixup, cur, p.bw, p.bh, out)) goto oom;
    } else {
        crop_copy(cur, p.bw, p.crop_x, p.crop_y, out);
    }
    image_free(&mid);
    return 0;
oom:
    image_free(&mid);
    image_free(out);
    set_error(err, errlen, "out of memory preprocessing a %dx%d image", in->width, in->height);
    return -1;
}

/* ToTensor then Normalize, in float32 and in torch's order: (v / 255 - mean) / std. */
static void normalisation_table(float lut[3][256]) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, stdev[3] = {0.229f, 0.224f, 0.225f};
    for (int c = 0; c < 3; c++) {
        for (int v = 0; v < 256; v++) {
            float x = (float)v / 255.f;
            x = x - mean[c];
            lut[c][v] = x / stdev[c];
        }
    }
}

int preprocess_batch(const rgb_image *views, int n, da3_batch *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!views || n <= 0) {
        set_error(err, errlen, "empty batch");
        return -1;
    }
    int min_w = 0, min_h = 0;
    for (int i = 0; i < n; i++) {
        const rgb_image *v = &views[i];
        if (!v->rgb || v->width < DA3_PATCH_SIZE || v->height < DA3_PATCH_SIZE || v->width % DA3_PATCH_SIZE ||
            v->height % DA3_PATCH_SIZE) {
            set_error(err, errlen, "view %d is %dx%d: not a resized image with sides multiple of %d", i, v->width,
                    v->height, DA3_PATCH_SIZE);
            return -1;
        }
        if (i == 0 || v->width < min_w) min_w = v->width;
        if (i == 0 || v->height < min_h) min_h = v->height;
    }
    size_t plane = (size_t)min_w * min_h;
    if ((size_t)n > SIZE_MAX / 3 / sizeof(float) / plane) {
        set_error(err, errlen, "batch too large: %d views of %dx%d", n, min_w, min_h);
        return -1;
    }
    out->input = malloc((size_t)n * 3 * plane * sizeof(float));
    out->rgb = malloc((size_t)n * 3 * plane);
    if (!out->input || !out->rgb) {
        da3_batch_free(out);
        set_error(err, errlen, "out of memory for a batch of %d views of %dx%d", n, min_w, min_h);
        return -1;
    }
    out->n = n;
    out->width = min_w;
    out->height = min_h;

    float lut[3][256];
    normalisation_table(lut);
    for (int i = 0; i < n; i++) {
        const rgb_image *v = &views[i];
        /* torchvision CenterCrop: offset round((size - crop) / 2) with Python's round(). */
        int top = (int)rint((v->height - min_h) / 2.0), left = (int)rint((v->width - min_w) / 2.0);
        uint8_t *rgb = out->rgb + (size_t)i * 3 * plane;
        float *r = out->input + (size_t)i * 3 * plane, *g = r + plane, *b = g + plane;
        for (int y = 0; y < min_h; y++) {
            const uint8_t *src = v->rgb + ((size_t)(top + y) * v->width + left) * 3;
            memcpy(rgb + (size_t)y * min_w * 3, src, (size_t)min_w * 3);
            size_t o = (size_t)y * min_w;
            for (int x = 0; x < min_w; x++) {
                r[o + x] = lut[0][src[3 * x]];
                g[o + x] = lut[1][src[3 * x + 1]];
                b[o + x] = lut[2][src[3 * x + 2]];
            }
        }
    }
    return 0;
}

void da3_batch_free(da3_batch *b) {
    if (!b) return;
    free(b->input);
    free(b->rgb);
    memset(b, 0, sizeof *b);
}
