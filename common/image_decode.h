/* Image decoding shared by the front (upload validation) and the worker (pipeline input).
 * JPEG goes through libjpeg-turbo's TurboJPEG API, PNG through libpng, HEIF/HEIC through libheif
 * (common/image_heif.c) and WebP through libwebp (common/image_webp.c). */
#ifndef DA3_IMAGE_DECODE_H
#define DA3_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

/* Images larger than this many pixels (w*h, after decode) are refused: 8192x8192. */
#define IMAGE_MAX_PIXELS (8192L * 8192L)
#define IMAGE_MAX_SIDE 16384

typedef enum {
    IMAGE_FORMAT_UNKNOWN = 0,
    IMAGE_FORMAT_JPEG,
    IMAGE_FORMAT_PNG,
    IMAGE_FORMAT_HEIF, /* HEIC: HEVC-coded HEIF */
    IMAGE_FORMAT_WEBP
} image_format;

/* Interleaved 8-bit RGB, row-major, stride = 3*width. Owns `rgb` (free with image_free). */
typedef struct {
    int width, height;
    uint8_t *rgb;
} rgb_image;

/* Returns the format named by the first bytes of `data` (magic numbers; HEIF by its ftyp brands,
 * WebP by RIFF....WEBP), or UNKNOWN (AVIF included). */
image_format image_sniff(const uint8_t *data, size_t len);

/* File extension (without dot) used to store an image of this format: "jpg", "png", "heic",
 * "webp" or "bin". */
const char *image_format_ext(image_format fmt);

/* Fully decodes JPEG/PNG/HEIF/WebP bytes to RGB8 (alpha dropped), upright: the JPEG and WebP EXIF
 * orientation, HEIF's irot/imir (and clap crop) applied.
 * Returns 0, or -1 with a human-readable reason in err (truncated, corrupt, too large...). */
int image_decode(const uint8_t *data, size_t len, rgb_image *out, char *err, size_t errlen);

/* The orientation image_decode applies, in EXIF's numbering (1-8): a JPEG's or WebP's EXIF tag,
 * a HEIF's irot/imir; 1 when absent, for PNG or for anything else. */
int image_orientation(const uint8_t *data, size_t len);

/* Memory one validation may use. A baseline JPEG decoded at 1/8 scale needs a few rows; a
 * progressive (or multi-scan) one needs its whole coefficient buffer, 2 bytes per pixel and
 * component (8192x8192 4:2:0: 192 MB), so those are refused above this, before decoding; so are
 * HEIFs (about 3 B/px for a grid, 5 for a single picture) and lossless WebPs (4 B/px) above it. */
#define IMAGE_VALIDATE_MAX_BYTES (128u << 20)
/* Validations that may run at once in a process (the others wait): bounds the front's memory
 * and CPU for validation to this many uploads, however many arrive together. */
#define IMAGE_VALIDATE_MAX_CONCURRENT 4

/* Checks that the bytes are a complete, decodable JPEG/PNG/HEIF/WebP within the size limits
 * without keeping the pixels (cheap: JPEG and WebP are decoded at 1/8 scale, HEIF in its own
 * colours without its rotation), using at most about
 * IMAGE_VALIDATE_MAX_BYTES, with at most image_validate_concurrency() validations at a time.
 * Reports the stored (pre-EXIF) dimensions in *w, *h when not NULL. Returns 0, or -1 with a
 * reason in err. */
int image_validate(const uint8_t *data, size_t len, int *w, int *h, char *err, size_t errlen);

/* Sets how many image_validate calls may decode at once (>= 1; IMAGE_VALIDATE_MAX_CONCURRENT by
 * default). Call before the threads that validate start. */
void image_validate_set_concurrency(int n);

/* The current limit of concurrent validations. */
int image_validate_concurrency(void);

/* The bytes a 1/8-scale validation of this JPEG's layout needs for its coefficient buffer: 0 for a
 * single-scan baseline stream (a few rows suffice), the whole buffer for progressive and
 * multi-scan streams; -1 when the markers before the first scan cannot be read. */
long long image_jpeg_validate_cost(const uint8_t *data, size_t len);

/* Allocates an uninitialised w x h RGB8 image; returns 0 or -1 on overflow/ENOMEM. */
int image_alloc(rgb_image *img, int width, int height);

/* Releases the pixels and zeroes the struct; safe on a zeroed struct. */
void image_free(rgb_image *img);

#endif
