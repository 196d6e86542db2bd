/* cv2.resize-compatible kernels for interleaved 8-bit RGB (uint8 HxWx3 arrays), so that the C
 * preprocessing reproduces DA3's Python preprocessing pixel for pixel. Buffers are contiguous
 * (stride 3*width); src and dst must not overlap. */
#ifndef DA3_RESIZE_H
#define DA3_RESIZE_H

#include <stdint.h>

/* cv2.resize(src, (dw, dh), interpolation=cv2.INTER_AREA) for a shrink (dw <= sw, dh <= sh),
 * including OpenCV's integer-factor fast path. Returns 0, or -1 for bad sizes or out of memory. */
int resize_area_rgb8(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh);

/* cv2.resize(src, (dw, dh), interpolation=cv2.INTER_CUBIC) (Keys a=-0.75, 11-bit fixed-point
 * coefficients, replicated border) for any size change. Returns 0, or -1 for bad sizes / ENOMEM. */
int resize_cubic_rgb8(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh);

#endif
