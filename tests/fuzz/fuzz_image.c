/* Fuzzes common/image_decode.c (and, through its dispatch, every format it sniffs: HEIC/WebP in
 * common/image_heif.c / image_webp.c join in once image_decode dispatches to them), in the order
 * the server runs them: image_sniff, image_orientation, image_jpeg_validate_cost and
 * camera_check_image (the front's cheap checks), image_validate (the front's upload check), then
 * image_decode (the worker) for what validation accepted. Invariants:
 *   - validation reports dimensions within IMAGE_MAX_PIXELS / IMAGE_MAX_SIDE, and refusals say why;
 *   - an accepted image decodes (validation promises the worker a decodable file), to the
 *     validated size, or its transpose for EXIF orientations 5-8, with a buffer of exactly
 *     width*height*3 bytes (ASan checks the worker-side reads of it below);
 *   - orientation is 1-8; a JPEG's validation cost is -1 or non-negative.
 * Decoding is skipped above FUZZ_DECODE_MAX_PIXELS: a 4 KB PNG can declare and fill 8192x4096
 * (deflate expands 1000:1) and one such decode takes a second under ASan; validation still runs
 * on it and the limits are checked there. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/camera_json.h"
#include "common/image_decode.h"
#include "fuzz_util.h"

#define FUZZ_DECODE_MAX_PIXELS (1L << 21)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    image_format fmt = image_sniff(data, size);
    (void)image_format_ext(fmt);
    int orientation = image_orientation(data, size);
    FUZZ_ASSERT(orientation >= 1 && orientation <= 8);
    long long cost = image_jpeg_validate_cost(data, size);
    FUZZ_ASSERT(cost >= -1);
    char err[512] = "";
    FUZZ_ASSERT((camera_check_image(data, size, err, sizeof err) == 0) == (orientation == 1));

    int w = -1, h = -1;
    err[0] = 0;
    if (image_validate(data, size, &w, &h, err, sizeof err) != 0) {
        FUZZ_ASSERT(err[0] != 0);
        return 0;
    }
    FUZZ_ASSERT(w >= 1 && h >= 1 && w <= IMAGE_MAX_SIDE && h <= IMAGE_MAX_SIDE);
    FUZZ_ASSERT((long long)w * h <= IMAGE_MAX_PIXELS);
    if ((long long)w * h > FUZZ_DECODE_MAX_PIXELS) return 0;

    rgb_image img;
    err[0] = 0;
    int rc = image_decode(data, size, &img, err, sizeof err);
    if (rc != 0) fprintf(stderr, "validated but not decodable: %s\n", err);
    FUZZ_ASSERT(rc == 0);
    int swapped = orientation >= 5;
    FUZZ_ASSERT(img.width == (swapped ? h : w) && img.height == (swapped ? w : h));
    /* Touch the first and last pixel as the worker's resize would. */
    size_t bytes = (size_t)img.width * img.height * 3;
    volatile uint8_t sink = img.rgb[0] ^ img.rgb[bytes - 1];
    (void)sink;
    image_free(&img);
    FUZZ_ASSERT(img.rgb == NULL);
    return 0;
}
