/* JPEG (TurboJPEG) and PNG (libpng) decoding to RGB8, with the size limits and error messages the
 * front (upload validation) and the worker (pipeline input) share; HEIF and WebP live in their own
 * files (image_heif.c, image_webp.c) and are dispatched to from here. Pixel semantics follow what
 * DA3 gets from PIL's Image.open(...).convert("RGB"): libjpeg ISLOW IDCT with fancy upsampling,
 * CMYK JPEGs taken as Adobe-inverted, PNG alpha and tRNS dropped, 16-bit samples keep the high
 * byte. JPEG EXIF orientation is applied like PIL's ImageOps.exif_transpose. */
#include "common/image_decode.h"
#include "common/image_formats.h"
#include "common/util.h"

#include <limits.h>
#include <png.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

/* LIMITSCANS refuses progressive files with absurd scan counts (a known CPU bomb). Warnings do not
 * stop the decoder; jpeg_failed() then decides which of them mean the upload is broken. */
#ifdef TJFLAG_LIMITSCANS
#define JPEG_FLAGS (TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS)
#else
#define JPEG_FLAGS (TJFLAG_ACCURATEDCT)
#endif

/* After tjDecompress2 returned non-zero: 1 if the image must be refused. Every warning is fatal
 * (truncation, a bad marker, ...) except "N extraneous bytes before marker", a harmless quirk of
 * some cameras and editors that PIL (DA3's loader) accepts too. */
static int jpeg_failed(tjhandle tj) {
    if (tjGetErrorCode(tj) != TJERR_WARNING) return 1;
    return strstr(tjGetErrorStr2(tj), "extraneous bytes before marker") == NULL;
}


/* Refuses sizes before anything is allocated for them. */
static int check_limits(long long w, long long h, char *err, size_t errlen) {
    if (w <= 0 || h <= 0) {
        set_error(err, errlen, "invalid image dimensions: %lldx%lld", w, h);
        return -1;
    }
    /* Each side first: a container's 32-bit sizes would overflow the product (found by
     * fuzz_image: corpus regress-heif-size-overflow). */
    if (w > IMAGE_MAX_PIXELS || h > IMAGE_MAX_PIXELS || w * h > IMAGE_MAX_PIXELS) {
        long side = 1;
        while ((side + 1) * (side + 1) <= IMAGE_MAX_PIXELS) side++;
        if (side * side == IMAGE_MAX_PIXELS)
            set_error(err, errlen, "image too large: %lldx%lld (limit %ldx%ld pixels)", w, h, side, side);
        else
            set_error(err, errlen, "image too large: %lldx%lld (limit %ld pixels)", w, h, (long)IMAGE_MAX_PIXELS);
        return -1;
    }
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE) {
        set_error(err, errlen, "image too large: %lldx%lld (limit %d pixels per side)", w, h, IMAGE_MAX_SIDE);
        return -1;
    }
    return 0;
}

image_format image_sniff(const uint8_t *data, size_t len) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!data) return IMAGE_FORMAT_UNKNOWN;
    if (len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return IMAGE_FORMAT_JPEG;
    if (len >= 8 && memcmp(data, png_sig, 8) == 0) return IMAGE_FORMAT_PNG;
    if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0) return IMAGE_FORMAT_WEBP;
    if (image_heif_sniff(data, len)) return IMAGE_FORMAT_HEIF;
    return IMAGE_FORMAT_UNKNOWN;
}

const char *image_format_ext(image_format fmt) {
    switch (fmt) {
    case IMAGE_FORMAT_JPEG: return "jpg";
    case IMAGE_FORMAT_PNG: return "png";
    case IMAGE_FORMAT_HEIF: return "heic";
    case IMAGE_FORMAT_WEBP: return "webp";
    default: return "bin";
    }
}

int image_check_limits(long long w, long long h, char *err, size_t errlen) { return check_limits(w, h, err, errlen); }

/* The refusal of bytes no decoder takes; AVIF gets a sentence of its own, being so close to HEIC. */
static void set_unknown_format(const uint8_t *data, size_t len, char *err, size_t errlen) {
    if (image_heif_is_avif(data, len))
        set_error(err, errlen, "AVIF images are not accepted; send JPEG, PNG, HEIC or WebP");
    else
        set_error(err, errlen, "not a JPEG, PNG, HEIC or WebP image");
}

int image_alloc(rgb_image *img, int width, int height) {
    memset(img, 0, sizeof *img);
    if (width <= 0 || height <= 0 || (size_t)width > SIZE_MAX / 3 / (size_t)height) return -1;
    img->rgb = malloc((size_t)width * height * 3);
    if (!img->rgb) return -1;
    img->width = width;
    img->height = height;
    return 0;
}

void image_free(rgb_image *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* ------------------------------------------------------------------------------------------ */
/* EXIF orientation                                                                            */
/* ------------------------------------------------------------------------------------------ */

static unsigned read_u16(const uint8_t *p, int big_endian) {
    return big_endian ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t read_u32(const uint8_t *p, int big_endian) {
    return big_endian ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
                      : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Tag 0x0112 of IFD0 in a TIFF block ("II*\0" or "MM\0*"); 1 when absent or malformed. */
static int exif_orientation(const uint8_t *t, size_t len) {
    if (len < 8) return 1;
    int big;
    if (t[0] == 'I' && t[1] == 'I')
        big = 0;
    else if (t[0] == 'M' && t[1] == 'M')
        big = 1;
    else
        return 1;
    if (read_u16(t + 2, big) != 42) return 1;
    uint32_t ifd = read_u32(t + 4, big);
    if (ifd > len - 2) return 1;
    unsigned count = read_u16(t + ifd, big);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)12 * i;
        if (e + 12 > len) break;
        if (read_u16(t + e, big) != 0x0112) continue;
        unsigned type = read_u16(t + e + 2, big);
        uint32_t n = read_u32(t + e + 4, big);
        uint32_t v = n != 1 ? 0 : type == 3 ? read_u16(t + e + 8, big) : type == 4 ? read_u32(t + e + 8, big) : 0;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* Walks the JPEG markers before the first scan; the first APP1 "Exif" segment wins, as in PIL. */
static int jpeg_orientation(const uint8_t *d, size_t len) {
    size_t p = 2; /* after SOI */
    while (p + 4 <= len) {
        if (d[p] != 0xFF) return 1;
        uint8_t marker = d[p + 1];
        if (marker == 0xFF) { /* fill byte */
            p++;
            continue;
        }
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) { /* no length field */
            p += 2;
            continue;
        }
        if (marker == 0xDA || marker == 0xD9) return 1;
        size_t seg = read_u16(d + p + 2, 1);
        if (seg < 2 || seg > len - p - 2) return 1;
        if (marker == 0xE1 && seg >= 2 + 6 && memcmp(d + p + 4, "Exif\0\0", 6) == 0)
            return exif_orientation(d + p + 10, seg - 8);
        p += 2 + seg;
    }
    return 1;
}

int image_exif_orientation(const uint8_t *tiff, size_t len) { return exif_orientation(tiff, len); }

int image_orientation(const uint8_t *data, size_t len) {
    switch (image_sniff(data, len)) {
    case IMAGE_FORMAT_JPEG: return jpeg_orientation(data, len);
    case IMAGE_FORMAT_HEIF: return image_heif_orientation(data, len);
    case IMAGE_FORMAT_WEBP: return image_webp_orientation(data, len);
    default: return 1;
    }
}

/* Re-maps pixels so the image displays upright: output (x, y) takes stored pixel
 * (x0 + x*dxx + y*dxy, y0 + x*dyx + y*dyy). Replaces img->rgb; returns 0 or -1 (ENOMEM). */
static int apply_orientation(rgb_image *img, int orientation) {
    int w = img->width, h = img->height;
    int x0 = 0, y0 = 0, dxx = 1, dxy = 0, dyx = 0, dyy = 1; /* identity */
    switch (orientation) {
    case 2: x0 = w - 1, dxx = -1; break;                                         /* mirror left-right */
    case 3: x0 = w - 1, y0 = h - 1, dxx = -1, dyy = -1; break;                   /* rotate 180 */
    case 4: y0 = h - 1, dyy = -1; break;                                         /* mirror top-bottom */
    case 5: dxx = 0, dxy = 1, dyx = 1, dyy = 0; break;                           /* transpose */
    case 6: y0 = h - 1, dxx = 0, dxy = 1, dyx = -1, dyy = 0; break;              /* rotate 90 clockwise */
    case 7: x0 = w - 1, y0 = h - 1, dxx = 0, dxy = -1, dyx = -1, dyy = 0; break; /* transverse */
    case 8: x0 = w - 1, dxx = 0, dxy = -1, dyx = 1, dyy = 0; break;              /* rotate 90 counter-clockwise */
    default: return 0;
    }
    int ow = orientation >= 5 ? h : w, oh = orientation >= 5 ? w : h;
    rgb_image out;
    if (image_alloc(&out, ow, oh)) return -1;
    ptrdiff_t step_x = dxx + (ptrdiff_t)dyx * w, step_y = dxy + (ptrdiff_t)dyy * w, base = (ptrdiff_t)y0 * w + x0;
    enum { TILE = 64 }; /* tiles keep both the reads and the writes of transposes cache-friendly */
    for (int ty = 0; ty < oh; ty += TILE) {
        for (int tx = 0; tx < ow; tx += TILE) {
            for (int y = ty; y < oh && y < ty + TILE; y++) {
                uint8_t *dst = out.rgb + ((size_t)y * ow + tx) * 3;
                ptrdiff_t s = base + tx * step_x + y * step_y;
                for (int x = tx; x < ow && x < tx + TILE; x++, s += step_x, dst += 3) memcpy(dst, img->rgb + s * 3, 3);
            }
        }
    }
    image_free(img);
    *img = out;
    return 0;
}

int image_apply_orientation(rgb_image *img, int orientation) { return apply_orientation(img, orientation); }

/* ------------------------------------------------------------------------------------------ */
/* JPEG                                                                                        */
/* ------------------------------------------------------------------------------------------ */

static int jpeg_header(tjhandle tj, const uint8_t *data, size_t len, int *w, int *h, int *colorspace, char *err,
                       size_t errlen) {
    int subsamp = -1;
    *w = *h = 0;
    *colorspace = -1;
    if (tjDecompressHeader3(tj, data, (unsigned long)len, w, h, &subsamp, colorspace) != 0) {
        set_error(err, errlen, "truncated or corrupt JPEG: %s", tjGetErrorStr2(tj));
        return -1;
    }
    if (*w < 1 || *h < 1) {
        /* TurboJPEG takes a stream without a frame header for a tables-only one and succeeds; for an
         * upload that means the data stopped early, which libjpeg's warning then says. */
        const char *why = tjGetErrorStr2(tj);
        set_error(err, errlen, "truncated or corrupt JPEG: %s", strcmp(why, "No error") ? why : "no image frame");
        return -1;
    }
    return check_limits(*w, *h, err, errlen);
}

static int is_cmyk(int colorspace) { return colorspace == TJCS_CMYK || colorspace == TJCS_YCCK; }

/* PIL reads CMYK JPEGs as Adobe-inverted ("CMYK;I") and converts with
 * R = (255-K) - (C*(255-K))/255 (rounded like its MULDIV255); on inverted samples that is the below. */
static void cmyk_inverted_to_rgb(const uint8_t *cmyk, size_t pixels, uint8_t *rgb) {
    for (size_t i = 0; i < pixels; i++, cmyk += 4, rgb += 3) {
        int nk = cmyk[3];
        for (int c = 0; c < 3; c++) {
            int t = (255 - cmyk[c]) * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            rgb[c] = (uint8_t)(v < 0 ? 0 : v);
        }
    }
}

static int jpeg_decode(const uint8_t *data, size_t len, rgb_image *out, char *err, size_t errlen) {
    tjhandle tj = tjInitDecompress();
    uint8_t *cmyk = NULL;
    int w, h, cs, rc = -1;
    if (!tj) {
        set_error(err, errlen, "cannot start JPEG decoder: %s", tjGetErrorStr2(NULL));
        return -1;
    }
    if (jpeg_header(tj, data, len, &w, &h, &cs, err, errlen)) goto done;
    if (image_alloc(out, w, h) || (is_cmyk(cs) && !(cmyk = malloc((size_t)w * h * 4)))) {
        set_error(err, errlen, "out of memory decoding a %dx%d JPEG", w, h);
        goto done;
    }
    int ok = is_cmyk(cs) ? tjDecompress2(tj, data, (unsigned long)len, cmyk, w, 0, h, TJPF_CMYK, JPEG_FLAGS)
                         : tjDecompress2(tj, data, (unsigned long)len, out->rgb, w, 0, h, TJPF_RGB, JPEG_FLAGS);
    if (ok != 0 && jpeg_failed(tj)) {
        set_error(err, errlen, "truncated or corrupt JPEG: %s", tjGetErrorStr2(tj));
        goto done;
    }
    if (cmyk) cmyk_inverted_to_rgb(cmyk, (size_t)w * h, out->rgb);
    if (apply_orientation(out, jpeg_orientation(data, len))) {
        set_error(err, errlen, "out of memory rotating a %dx%d JPEG", w, h);
        goto done;
    }
    rc = 0;
done:
    if (rc) image_free(out);
    free(cmyk);
    tjDestroy(tj);
    return rc;
}

/* What the markers before the first scan say about the coefficient memory libjpeg will take. */
typedef struct {
    int width, height, ncomp;
    int h[4], v[4];       /* sampling factors */
    int progressive;      /* SOF2/6/10/14 */
    int first_scan_comps; /* components of the first SOS: fewer than ncomp means several scans */
} jpeg_layout;

static int is_sof(uint8_t m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }

/* Walks the markers up to the first SOS. Returns 0, or -1 when they cannot be read. */
static int jpeg_layout_read(const uint8_t *d, size_t len, jpeg_layout *L) {
    memset(L, 0, sizeof *L);
    int have_sof = 0;
    size_t p = 2; /* after SOI */
    while (p + 4 <= len) {
        if (d[p] != 0xFF) { /* extraneous bytes: libjpeg skips them with a warning, and so do we */
            p++;
            continue;
        }
        uint8_t m = d[p + 1];
        if (m == 0xFF) { /* fill byte */
            p++;
            continue;
        }
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) { /* no length field */
            p += 2;
            continue;
        }
        if (m == 0xD9) return -1;
        size_t seg = read_u16(d + p + 2, 1);
        if (seg < 2 || seg > len - p - 2) return -1;
        const uint8_t *b = d + p + 4; /* segment body, seg - 2 bytes */
        if (is_sof(m) && !have_sof) {
            if (seg < 8) return -1;
            L->height = (int)read_u16(b + 1, 1);
            L->width = (int)read_u16(b + 3, 1);
            L->ncomp = b[5];
            if (L->ncomp < 1 || L->ncomp > 4 || seg < 8 + 3u * (unsigned)L->ncomp) return -1;
            for (int c = 0; c < L->ncomp; c++) {
                L->h[c] = b[6 + 3 * c + 1] >> 4;
                L->v[c] = b[6 + 3 * c + 1] & 15;
                if (L->h[c] < 1 || L->v[c] < 1) return -1;
            }
            L->progressive = m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE;
            have_sof = 1;
        } else if (m == 0xDA) {
            if (!have_sof || seg < 3) return -1;
            L->first_scan_comps = b[0];
            return 0;
        }
        p += 2 + seg;
    }
    return -1;
}

/* image_jpeg_validate_cost for a layout already read. */
static long long layout_cost(const jpeg_layout *lp) {
    const jpeg_layout L = *lp;
    /* libjpeg buffers the whole image's coefficients exactly when the file has several scans
     * (progressive, or a first scan without every component); a 1/8 scale does not change that. */
    if (!L.progressive && L.first_scan_comps >= L.ncomp) return 0;
    int hmax = 1, vmax = 1;
    for (int c = 0; c < L.ncomp; c++) {
        if (L.h[c] > hmax) hmax = L.h[c];
        if (L.v[c] > vmax) vmax = L.v[c];
    }
    long long total = 0;
    for (int c = 0; c < L.ncomp; c++) {
        /* As jdcoefct.c sizes it: blocks per component, rounded up to whole MCUs, 64 JCOEFs each. */
        long long wb = ((long long)L.width * L.h[c] + 8LL * hmax - 1) / (8LL * hmax);
        long long hb = ((long long)L.height * L.v[c] + 8LL * vmax - 1) / (8LL * vmax);
        wb = (wb + L.h[c] - 1) / L.h[c] * L.h[c];
        hb = (hb + L.v[c] - 1) / L.v[c] * L.v[c];
        total += wb * hb * 64 * 2;
    }
    return total;
}

long long image_jpeg_validate_cost(const uint8_t *data, size_t len) {
    jpeg_layout L;
    if (image_sniff(data, len) != IMAGE_FORMAT_JPEG || jpeg_layout_read(data, len, &L)) return -1;
    return layout_cost(&L);
}

static void gate_enter(void);
static void gate_leave(void);

/* Decodes at 1/8 scale: the whole entropy-coded stream is still parsed (so truncation and
 * corruption show), but the IDCT is DC-only and only the luma (or CMYK) planes are produced. */
static int jpeg_validate(const uint8_t *data, size_t len, int *w, int *h, char *err, size_t errlen) {
    tjhandle tj = tjInitDecompress();
    uint8_t *buf = NULL;
    int cs, rc = -1;
    if (!tj) {
        set_error(err, errlen, "cannot start JPEG decoder: %s", tjGetErrorStr2(NULL));
        return -1;
    }
    if (jpeg_header(tj, data, len, w, h, &cs, err, errlen)) goto done;
    /* Refused from the header, before libjpeg allocates anything for it. */
    jpeg_layout L;
    long long cost;
    if (jpeg_layout_read(data, len, &L) == 0) {
        cost = layout_cost(&L);
    } else { /* markers TurboJPEG read but we cannot: assume the worst, progressive 4:4:4 */
        memset(&L, 0, sizeof L);
        L.progressive = 1;
        cost = (long long)*w * *h * 2 * (cs == TJCS_GRAY ? 1 : is_cmyk(cs) ? 4 : 3);
    }
    if (cost > (long long)IMAGE_VALIDATE_MAX_BYTES) {
        set_error(err, errlen,
                  "%s JPEG of %dx%d needs %lld MB to check (limit %u MB per image); send it as a baseline "
                  "(non-progressive) JPEG or smaller",
                  L.progressive ? "progressive" : "multi-scan", *w, *h, (cost + (1 << 20) - 1) >> 20,
                  IMAGE_VALIDATE_MAX_BYTES >> 20);
        goto done;
    }
    const tjscalingfactor eighth = {1, 8};
    int sw = TJSCALED(*w, eighth), sh = TJSCALED(*h, eighth), pf = is_cmyk(cs) ? TJPF_CMYK : TJPF_GRAY;
    if (!(buf = malloc((size_t)sw * sh * tjPixelSize[pf]))) {
        set_error(err, errlen, "out of memory validating a %dx%d JPEG", *w, *h);
        goto done;
    }
    gate_enter();
    int bad = tjDecompress2(tj, data, (unsigned long)len, buf, sw, 0, sh, pf, JPEG_FLAGS) != 0 && jpeg_failed(tj);
    gate_leave();
    if (bad) {
        set_error(err, errlen, "truncated or corrupt JPEG: %s", tjGetErrorStr2(tj));
        goto done;
    }
    rc = 0;
done:
    free(buf);
    tjDestroy(tj);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* PNG                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Everything libpng's error longjmp must be able to release lives here, in the caller's frame. */
typedef struct {
    const uint8_t *data;
    size_t len, pos;
    jmp_buf jmp;
    char msg[200];    /* libpng's error, or ours */
    int limit_failed; /* msg is a size-limit message, shown as is */
    png_structp png;
    png_infop info;
    uint8_t *row;    /* validate: one reused row */
    png_bytep *rows; /* decode: row pointers into img */
    rgb_image img;
    int width, height;
} png_job;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_job *job = png_get_error_ptr(png);
    snprintf(job->msg, sizeof job->msg, "%s", msg);
    longjmp(job->jmp, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png; /* ancillary-chunk trouble (bad sRGB profile, CRC of a text chunk...) is harmless */
    (void)msg;
}

static void png_read_bytes(png_structp png, png_bytep out, size_t n) {
    png_job *job = png_get_io_ptr(png);
    if (n > job->len - job->pos) png_error(png, "unexpected end of file");
    memcpy(out, job->data + job->pos, n);
    job->pos += n;
}

/* Reads the header, applies the limits, then either all rows into one reused buffer (validate)
 * or the whole image as RGB8. Returns 0 or -1 with job->msg set. */
static int png_run(png_job *job, int decode) {
    job->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, job, png_on_error, png_on_warning);
    if (job->png) job->info = png_create_info_struct(job->png);
    if (!job->png || !job->info) {
        snprintf(job->msg, sizeof job->msg, "out of memory");
        return -1;
    }
    if (setjmp(job->jmp)) return -1;
    png_structp png = job->png;
    png_infop info = job->info;
    png_set_read_fn(png, job, png_read_bytes);
    png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX); /* our own limits give the message */
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    if (check_limits(w, h, job->msg, sizeof job->msg)) {
        job->limit_failed = 1;
        return -1;
    }
    job->width = (int)w;
    job->height = (int)h;
    if (decode) {
        if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
        if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (depth == 16) png_set_strip_16(png); /* keeps the high byte, as PIL does for RGB(A)/LA */
        if (!(ctype & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
        if ((ctype & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
    }
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (!decode) {
        if (!(job->row = malloc(rowbytes))) png_error(png, "out of memory");
        for (int pass = 0; pass < passes; pass++)
            for (png_uint_32 y = 0; y < h; y++) png_read_row(png, job->row, NULL);
    } else {
        if (rowbytes != (size_t)w * 3) png_error(png, "unsupported PNG pixel layout");
        if (image_alloc(&job->img, (int)w, (int)h) || !(job->rows = malloc(sizeof(png_bytep) * h)))
            png_error(png, "out of memory");
        for (png_uint_32 y = 0; y < h; y++) job->rows[y] = job->img.rgb + (size_t)y * rowbytes;
        png_read_image(png, job->rows);
    }
    png_read_end(png, NULL); /* checks the rest of the file (CRCs, IEND) */
    return 0;
}

static int png_process(const uint8_t *data, size_t len, int decode, png_job *job, char *err, size_t errlen) {
    memset(job, 0, sizeof *job);
    job->data = data;
    job->len = len;
    int rc = png_run(job, decode);
    png_destroy_read_struct(job->png ? &job->png : NULL, job->info ? &job->info : NULL, NULL);
    free(job->row);
    free(job->rows);
    if (rc) {
        image_free(&job->img);
        if (job->limit_failed)
            set_error(err, errlen, "%s", job->msg);
        else
            set_error(err, errlen, "truncated or corrupt PNG: %s", job->msg);
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Public entry points                                                                         */
/* ------------------------------------------------------------------------------------------ */

int image_decode(const uint8_t *data, size_t len, rgb_image *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    switch (image_sniff(data, len)) {
    case IMAGE_FORMAT_JPEG: return jpeg_decode(data, len, out, err, errlen);
    case IMAGE_FORMAT_PNG: {
        png_job job;
        if (png_process(data, len, 1, &job, err, errlen)) return -1;
        *out = job.img;
        return 0;
    }
    case IMAGE_FORMAT_HEIF: return image_heif_decode(data, len, out, err, errlen);
    case IMAGE_FORMAT_WEBP: return image_webp_decode(data, len, out, err, errlen);
    default: set_unknown_format(data, len, err, errlen); return -1;
    }
}

/* The gate on concurrent validations: a counter under a mutex (not a POSIX semaphore, so that
 * the limit can be changed and ThreadSanitizer sees the ordering). */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    int active, limit;
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, IMAGE_VALIDATE_MAX_CONCURRENT};

void image_validate_set_concurrency(int n) {
    pthread_mutex_lock(&gate.lock);
    gate.limit = n < 1 ? 1 : n;
    pthread_cond_broadcast(&gate.freed);
    pthread_mutex_unlock(&gate.lock);
}

int image_validate_concurrency(void) {
    pthread_mutex_lock(&gate.lock);
    int n = gate.limit;
    pthread_mutex_unlock(&gate.lock);
    return n;
}

/* Waits for one of the validation slots. */
static void gate_enter(void) {
    pthread_mutex_lock(&gate.lock);
    while (gate.active >= gate.limit) pthread_cond_wait(&gate.freed, &gate.lock);
    gate.active++;
    pthread_mutex_unlock(&gate.lock);
}

/* Frees the slot gate_enter took. */
static void gate_leave(void) {
    pthread_mutex_lock(&gate.lock);
    gate.active--;
    pthread_cond_signal(&gate.freed);
    pthread_mutex_unlock(&gate.lock);
}

void image_validate_gate_enter(void) { gate_enter(); }

void image_validate_gate_leave(void) { gate_leave(); }

int image_validate(const uint8_t *data, size_t len, int *w, int *h, char *err, size_t errlen) {
    int vw = 0, vh = 0, rc;
    switch (image_sniff(data, len)) {
    case IMAGE_FORMAT_JPEG: rc = jpeg_validate(data, len, &vw, &vh, err, errlen); break;
    case IMAGE_FORMAT_PNG: {
        png_job job;
        gate_enter(); /* PNG validation is row by row: the gate bounds its CPU, not much memory */
        rc = png_process(data, len, 0, &job, err, errlen);
        gate_leave();
        vw = job.width;
        vh = job.height;
        break;
    }
    /* These take their validation slot themselves, after the checks on their headers. */
    case IMAGE_FORMAT_HEIF: rc = image_heif_validate(data, len, &vw, &vh, err, errlen); break;
    case IMAGE_FORMAT_WEBP: rc = image_webp_validate(data, len, &vw, &vh, err, errlen); break;
    default: set_unknown_format(data, len, err, errlen); return -1;
    }
    if (rc == 0) {
        if (w) *w = vw;
        if (h) *h = vh;
    }
    return rc;
}
