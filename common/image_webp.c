/* WebP (what many Android apps and browsers give) through libwebp. The RIFF chunks are walked here
 * first: they must all lie inside the file (a cut file is refused before libwebp runs), and they
 * hold the EXIF chunk, whose orientation is applied as for a JPEG. That is PIL's exif_transpose
 * and Safari's behaviour, and what a converter that copied a camera's EXIF without turning the
 * pixels (cwebp -metadata exif does exactly that) means; Chromium ignores the tag in WebP, so a
 * browser may preview such a file sideways while the server reconstructs it upright, the same as
 * every JPEG here. Animated WebP is refused: its frames are not views of one scene taken as
 * photos, and silently keeping only the first would drop what the client sent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <webp/decode.h>

#include "common/image_formats.h"
#include "common/util.h"

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct {
    int frames;          /* ANMF chunks */
    const uint8_t *exif; /* the first EXIF chunk's payload, or NULL */
    size_t exif_len;
} riff_info;

/* Walks the chunks inside the RIFF container. Returns 0, or -1 with the reason in err. */
static int riff_walk(const uint8_t *d, size_t len, riff_info *ri, char *err, size_t errlen) {
    memset(ri, 0, sizeof *ri);
    if (len < 12 || memcmp(d, "RIFF", 4) || memcmp(d + 8, "WEBP", 4)) {
        set_error(err, errlen, "truncated or corrupt WebP: no RIFF/WEBP header");
        return -1;
    }
    uint64_t riff = le32(d + 4);
    if (riff < 4 || riff + 8 > len) {
        set_error(err, errlen, "truncated or corrupt WebP: the file has %zu bytes but its header announces %llu", len,
                  (unsigned long long)riff + 8);
        return -1;
    }
    size_t end = (size_t)riff + 8, p = 12; /* bytes after the container are not WebP's: ignored, as libwebp does */
    while (p < end) {
        if (end - p < 8) {
            set_error(err, errlen, "truncated or corrupt WebP: a chunk header at byte %zu is cut short", p);
            return -1;
        }
        uint64_t n = le32(d + p + 4);
        if (n > end - p - 8) {
            set_error(err, errlen, "truncated or corrupt WebP: chunk '%.4s' at byte %zu needs %llu bytes, %zu remain",
                      (const char *)d + p, p, (unsigned long long)n, end - p - 8);
            return -1;
        }
        if (!memcmp(d + p, "ANMF", 4)) ri->frames++;
        if (!memcmp(d + p, "EXIF", 4) && !ri->exif) {
            ri->exif = d + p + 8;
            ri->exif_len = (size_t)n;
        }
        p += 8 + (size_t)n + (n & 1); /* chunks are padded to an even size */
    }
    return 0;
}

static int exif_orientation_of(const riff_info *ri) {
    if (!ri->exif) return 1;
    /* The chunk holds the TIFF block itself; some writers keep JPEG's "Exif\0\0" in front of it. */
    if (ri->exif_len >= 6 && memcmp(ri->exif, "Exif\0\0", 6) == 0)
        return image_exif_orientation(ri->exif + 6, ri->exif_len - 6);
    return image_exif_orientation(ri->exif, ri->exif_len);
}

static const char *status_text(VP8StatusCode s) {
    switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the data ends early";
    default: return "decoding failed";
    }
}

/* The container, the features libwebp reads from the headers (no pixel decoded), the refusal of
 * animations and the size limits. */
static int webp_header(const uint8_t *d, size_t len, riff_info *ri, WebPBitstreamFeatures *f, char *err,
                       size_t errlen) {
    if (riff_walk(d, len, ri, err, errlen)) return -1;
    VP8StatusCode s = WebPGetFeatures(d, len, f);
    if (s != VP8_STATUS_OK) {
        set_error(err, errlen, "truncated or corrupt WebP: %s", status_text(s));
        return -1;
    }
    if (f->has_animation || ri->frames) {
        char frames[32] = "";
        if (ri->frames) snprintf(frames, sizeof frames, " (%d frames)", ri->frames);
        set_error(err, errlen, "animated WebP%s is not accepted; send a still image (each frame as its own image)",
                  frames);
        return -1;
    }
    return image_check_limits(f->width, f->height, err, errlen);
}

int image_webp_orientation(const uint8_t *data, size_t len) {
    riff_info ri;
    return riff_walk(data, len, &ri, NULL, 0) ? 1 : exif_orientation_of(&ri);
}

int image_webp_decode(const uint8_t *data, size_t len, rgb_image *out, char *err, size_t errlen) {
    riff_info ri;
    WebPBitstreamFeatures f;
    WebPDecoderConfig cfg;
    memset(out, 0, sizeof *out);
    if (webp_header(data, len, &ri, &f, err, errlen)) return -1;
    if (!WebPInitDecoderConfig(&cfg)) {
        set_error(err, errlen, "cannot start the WebP decoder (library version mismatch)");
        return -1;
    }
    if (image_alloc(out, f.width, f.height)) {
        set_error(err, errlen, "out of memory decoding a %dx%d WebP", f.width, f.height);
        return -1;
    }
    /* Straight into our buffer: RGB, alpha dropped (as for PNG, and PIL's convert("RGB")). */
    cfg.output.colorspace = MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = out->rgb;
    cfg.output.u.RGBA.stride = 3 * f.width;
    cfg.output.u.RGBA.size = (size_t)3 * f.width * f.height;
    VP8StatusCode s = WebPDecode(data, len, &cfg);
    WebPFreeDecBuffer(&cfg.output);
    if (s != VP8_STATUS_OK) {
        set_error(err, errlen, "truncated or corrupt WebP: %s", status_text(s));
        image_free(out);
        return -1;
    }
    if (image_apply_orientation(out, exif_orientation_of(&ri))) {
        set_error(err, errlen, "out of memory rotating a %dx%d WebP", f.width, f.height);
        image_free(out);
        return -1;
    }
    return 0;
}

/* Peak bytes of a 1/8-scale validation: a lossless (VP8L) image is decoded whole into 32-bit ARGB
 * before it is scaled, since its backward references reach anywhere above (4.2 B/px measured,
 * the rest its entropy tables, counted with the file's size); a lossy one is decoded a
 * macroblock row at a time (0.2 B/px), plus a whole 8-bit plane when it has alpha. */
static long long validate_cost(const WebPBitstreamFeatures *f, size_t len) {
    long long px = (long long)f->width * f->height;
    return (f->format == 2 ? 4 * px : f->has_alpha ? px : 0) + (long long)len;
}

int image_webp_validate(const uint8_t *data, size_t len, int *w, int *h, char *err, size_t errlen) {
    riff_info ri;
    WebPBitstreamFeatures f;
    WebPDecoderConfig cfg;
    if (webp_header(data, len, &ri, &f, err, errlen)) return -1;
    long long cost = validate_cost(&f, len);
    if (cost > (long long)IMAGE_VALIDATE_MAX_BYTES) {
        set_error(err, errlen,
                  "lossless WebP of %dx%d needs %lld MB to check (limit %u MB per image); send it smaller or lossy",
                  f.width, f.height, (cost + (1 << 20) - 1) >> 20, IMAGE_VALIDATE_MAX_BYTES >> 20);
        return -1;
    }
    if (!WebPInitDecoderConfig(&cfg)) {
        set_error(err, errlen, "cannot start the WebP decoder (library version mismatch)");
        return -1;
    }
    /* Every byte is still entropy-decoded (truncation and corruption show), but the output is an
     * eighth of each side and the loop filter, which cannot fail, is skipped. */
    cfg.output.colorspace = MODE_RGB;
    cfg.options.use_scaling = 1;
    cfg.options.scaled_width = (f.width + 7) / 8;
    cfg.options.scaled_height = (f.height + 7) / 8;
    cfg.options.bypass_filtering = 1;
    cfg.options.no_fancy_upsampling = 1;
    image_validate_gate_enter();
    VP8StatusCode s = WebPDecode(data, len, &cfg);
    image_validate_gate_leave();
    WebPFreeDecBuffer(&cfg.output);
    if (s != VP8_STATUS_OK) {
        set_error(err, errlen, "truncated or corrupt WebP: %s", status_text(s));
        return -1;
    }
    *w = f.width;
    *h = f.height;
    return 0;
}
