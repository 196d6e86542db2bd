/* Internal to common/image_*.c: what image_decode.c (the dispatcher, JPEG, PNG, the limits and the
 * validation gate) shares with the files of the other formats, and their entry points. Callers
 * outside common/ use common/image_decode.h. */
#ifndef DA3_IMAGE_FORMATS_H
#define DA3_IMAGE_FORMATS_H

#include <stddef.h>
#include <stdint.h>

#include "common/image_decode.h"

/* ---- image_decode.c ---- */

/* 0 if a w x h image is within IMAGE_MAX_PIXELS / IMAGE_MAX_SIDE, else -1 with the message
 * ("image too large: ..."). */
int image_check_limits(long long w, long long h, char *err, size_t errlen);

/* The orientation tag (1-8) of a TIFF block ("II*\0" / "MM\0*", as in an EXIF segment); 1 when
 * absent or malformed. */
int image_exif_orientation(const uint8_t *tiff, size_t len);

/* Re-maps the pixels as EXIF orientation 1-8 says (1: nothing). Returns 0 or -1 (out of memory). */
int image_apply_orientation(rgb_image *img, int orientation);

/* Takes one of the image_validate_concurrency() validation slots, waiting for one if need be. */
void image_validate_gate_enter(void);

/* Gives back the slot image_validate_gate_enter took. */
void image_validate_gate_leave(void);

/* ---- image_heif.c (HEIF/HEIC through libheif) ---- */

/* 1 if the bytes start like a HEIF file (an ftyp box with an HEVC or the generic mif1/msf1 brand). */
int image_heif_sniff(const uint8_t *data, size_t len);

/* 1 if the bytes start like an AVIF file (refused with a message of its own). */
int image_heif_is_avif(const uint8_t *data, size_t len);

/* image_decode for HEIF: the primary image to RGB8, irot/imir/clap applied. */
int image_heif_decode(const uint8_t *data, size_t len, rgb_image *out, char *err, size_t errlen);

/* image_validate for HEIF: refuses from the box structure what is too large or inconsistent,
 * then decodes the primary image (no transformations, native colours) in a validation slot.
 * Reports the decoded, untransformed size. */
int image_heif_validate(const uint8_t *data, size_t len, int *w, int *h, char *err, size_t errlen);

/* The irot/imir transformations of the primary image as an EXIF orientation (1-8); 1 for none
 * or for unreadable bytes. (HEIF's Exif orientation tag is informative only and not read.) */
int image_heif_orientation(const uint8_t *data, size_t len);

/* ---- image_webp.c (WebP through libwebp) ---- */

/* image_decode for WebP: RGB8 (alpha dropped), the EXIF orientation applied. */
int image_webp_decode(const uint8_t *data, size_t len, rgb_image *out, char *err, size_t errlen);

/* image_validate for WebP: the headers' size and features checked first, then the whole
 * bitstream decoded at 1/8 scale in a validation slot. Reports the stored size. */
int image_webp_validate(const uint8_t *data, size_t len, int *w, int *h, char *err, size_t errlen);

/* The orientation tag of the file's EXIF chunk (1-8), 1 when there is none. */
int image_webp_orientation(const uint8_t *data, size_t len);

#endif
