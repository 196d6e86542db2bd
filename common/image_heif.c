/* HEIF/HEIC (what iPhones save) through libheif, HEVC decoded by libde265. Before libheif sees the
 * bytes, common/heif_boxes.c reads the box structure, so sizes are checked against what will
 * really be allocated (a grid's canvas, each coded picture) and a file can neither pass the
 * limits with a small ispe nor make the front decode 4 G pixels. The geometry (irot, imir, clap)
 * is applied here, not by libheif, so that the front (which validates without it) and the worker
 * (which applies it) follow one description of it, and so that libheif 1.15's limits (it cannot
 * mirror images deeper than 8 bits) do not apply. The Exif orientation tag inside a HEIF is not
 * read: HEIF says irot/imir are the orientation, and Apple writes both, so applying the tag too
 * would turn such a photo twice. */
#include <libheif/heif.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/heif_boxes.h"
#include "common/image_formats.h"
#include "common/util.h"

static pthread_once_t heif_once = PTHREAD_ONCE_INIT;

/* libheif's plugin registry is set up once for the process (never torn down: libheif's
 * heif_deinit is not safe while another thread decodes). */
static void heif_start(void) { heif_init(NULL); }

int image_heif_sniff(const uint8_t *data, size_t len) { return hbox_sniff(data, len) == HBOX_BRAND_HEIF; }

int image_heif_is_avif(const uint8_t *data, size_t len) { return hbox_sniff(data, len) == HBOX_BRAND_AVIF; }

/* hbox_read with the error worded for an upload's refusal. */
static int read_boxes(const uint8_t *data, size_t len, hbox_info *b, char *err, size_t errlen) {
    char why[200];
    int rc = hbox_read(data, len, b, why, sizeof why);
    if (rc == HBOX_CORRUPT) set_error(err, errlen, "truncated or corrupt HEIF: %s", why);
    if (rc == HBOX_UNSUPPORTED) set_error(err, errlen, "%s", why);
    return rc ? -1 : 0;
}

/* The size limits on what the file declares and on what decoding it allocates. */
static int check_sizes(const hbox_info *b, char *err, size_t errlen) {
    if (image_check_limits(b->width, b->height, err, errlen) ||
        image_check_limits(b->canvas_w, b->canvas_h, err, errlen))
        return -1;
    if (b->max_tile_px > (uint64_t)IMAGE_MAX_PIXELS || b->alpha_px > (uint64_t)IMAGE_MAX_PIXELS ||
        b->alpha_tile_px > (uint64_t)IMAGE_MAX_PIXELS) {
        set_error(err, errlen, "HEIF image codes a picture larger than %ld pixels", (long)IMAGE_MAX_PIXELS);
        return -1;
    }
    return 0;
}

/* Peak bytes of a validation decode, from what libheif 1.15 allocates for it: a coded picture
 * costs its libde265 frame (1.5 B/px at 4:2:0) and block data plus its conversion to planar RGB
 * (3 B/px), 4.6 B/px measured, counted as 5; a grid adds its RGB canvas (3 B/px) and decodes one
 * tile at a time; an alpha image is decoded alike and then copied in as one more plane. Samples
 * deeper than 8 bits are stored in 16. Then the file three times: what libheif's parse keeps and
 * the coded data it copies for the decoder (a growing vector: twice, briefly). */
static long long validate_cost(const hbox_info *b, size_t len) {
    long long s = b->bit_depth > 8 ? 2 : 1;
    long long colour = b->grid ? (long long)b->canvas_w * b->canvas_h * 3 + (long long)b->max_tile_px * 5
                               : (long long)b->max_tile_px * 5;
    long long alpha = 0;
    if (b->alpha_px)
        alpha = (b->alpha_grid ? (long long)b->alpha_px * 3 + (long long)b->alpha_tile_px * 5
                               : (long long)b->alpha_tile_px * 5) +
                (long long)b->canvas_w * b->canvas_h;
    return (colour + alpha) * s + 3 * (long long)len;
}

/* ---- geometry: irot, imir and clap in file order, as libheif 1.15 would apply them ---- */

/* libheif's Fraction: int32 parts, the denominator halved (with the numerator) while above 2^16.
 * Here in 64 bits, and refused where libheif's 32-bit arithmetic would overflow. */
typedef struct {
    long long n, d;
} frac;

static int frac_make(long long n, long long d, frac *out) {
    if (n > INT32_MAX || n < INT32_MIN || d > INT32_MAX || d < INT32_MIN) return -1;
    while (d > 0x10000 || d < -0x10000) n /= 2, d /= 2;
    if (d == 0) return -1;
    *out = (frac){n, d};
    return 0;
}

static int frac_add(frac a, frac b, int sign, frac *out) {
    if (a.d == b.d) return frac_make(a.n + sign * b.n, a.d, out);
    return frac_make(a.n * b.d + sign * b.n * a.d, a.d * b.d, out);
}

static int frac_add_int(frac a, long long v, frac *out) { return frac_make(a.n + v * a.d, a.d, out); }

static long long frac_round_down(frac a) { return a.n / a.d; }

static long long frac_round(frac a) { return (a.n + a.d / 2) / a.d; }

/* The crop a clap makes of a w x h image, with libheif's rounding and clamping: 0 and the
 * rectangle, or -1 when it is empty or its numbers are out of range. */
static int clap_rect(const int32_t v[8], int w, int h, int *x0, int *y0, int *cw, int *ch) {
    frac width, height, hoff, voff, half_w, half_h, t, pc;
    if ((uint32_t)v[0] > INT32_MAX || (uint32_t)v[1] > INT32_MAX || (uint32_t)v[2] > INT32_MAX ||
        (uint32_t)v[3] > INT32_MAX || (uint32_t)v[5] > INT32_MAX || (uint32_t)v[7] > INT32_MAX)
        return -1;
    if (frac_make(v[0], v[1], &width) || frac_make(v[2], v[3], &height) || frac_make(v[4], v[5], &hoff) ||
        frac_make(v[6], v[7], &voff) || frac_make(w - 1, 2, &half_w) || frac_make(h - 1, 2, &half_h))
        return -1;
    /* left = round_down(hoff + (w-1)/2 - (width-1)/2); right = round(width - 1 + left); top and
     * bottom alike but with round() for top (libheif's own asymmetry). */
    frac wm1, hm1, r;
    if (frac_add_int(width, -1, &wm1) || frac_make(wm1.n, wm1.d * 2, &wm1) || frac_add(hoff, half_w, 1, &pc) ||
        frac_add(pc, wm1, -1, &t))
        return -1;
    long long left = frac_round_down(t);
    if (frac_add_int(width, -1, &r) || frac_add_int(r, left, &r)) return -1;
    long long right = frac_round(r);
    if (frac_add_int(height, -1, &hm1) || frac_make(hm1.n, hm1.d * 2, &hm1) || frac_add(voff, half_h, 1, &pc) ||
        frac_add(pc, hm1, -1, &t))
        return -1;
    long long top = frac_round(t);
    if (frac_add_int(height, -1, &r) || frac_add_int(r, top, &r)) return -1;
    long long bottom = frac_round(r);
    if (left < 0) left = 0;
    if (top < 0) top = 0;
    if (right >= w) right = w - 1;
    if (bottom >= h) bottom = h - 1;
    if (left > right || top > bottom) return -1;
    *x0 = (int)left, *y0 = (int)top, *cw = (int)(right - left + 1), *ch = (int)(bottom - top + 1);
    return 0;
}

/* An orientation as "mirror left-right first (m), then turn r quarter turns clockwise". */
typedef struct {
    int m, r;
} turn;

static turn turn_then(turn t, const hbox_transform *x) {
    if (x->kind == HBOX_IROT) return (turn){t.m, (t.r + 4 - x->value) % 4}; /* irot turns anticlockwise */
    /* Mirroring after a turn: LR . rot(r) = rot(-r) . LR; top-bottom = rot(2) . LR. */
    return (turn){!t.m, ((x->value ? 4 : 6) - t.r) % 4};
}

static int turn_exif(turn t) {
    static const int exif[2][4] = {{1, 6, 3, 8}, {2, 7, 4, 5}};
    return exif[t.m][t.r];
}

/* Walks the transformations over a w x h decoded image: each run of irot/imir becomes one EXIF
 * orientation, each clap a crop, checked to be non-empty. With img, applies them. */
static int run_geometry(const hbox_info *b, int w, int h, rgb_image *img, char *err, size_t errlen) {
    turn t = {0, 0};
    for (int i = 0; i <= b->n_transforms; i++) {
        const hbox_transform *x = i < b->n_transforms ? &b->transforms[i] : NULL;
        if (x && x->kind != HBOX_CLAP) {
            t = turn_then(t, x);
            continue;
        }
        int o = turn_exif(t); /* a clap or the end: the turns so far happen first */
        if (img && o != 1 && image_apply_orientation(img, o)) {
            set_error(err, errlen, "out of memory rotating a %dx%d HEIF", w, h);
            return -1;
        }
        if (o >= 5) {
            int s = w;
            w = h, h = s;
        }
        t = (turn){0, 0};
        if (!x) break;
        int x0, y0, cw, ch;
        if (clap_rect(x->clap, w, h, &x0, &y0, &cw, &ch)) {
            set_error(err, errlen,
                      "truncated or corrupt HEIF: its clean aperture (clap) leaves nothing of the %dx%d image", w, h);
            return -1;
        }
        if (img && (cw != w || ch != h)) {
            rgb_image cut;
            if (image_alloc(&cut, cw, ch)) {
                set_error(err, errlen, "out of memory cropping a %dx%d HEIF", w, h);
                return -1;
            }
            for (int y = 0; y < ch; y++)
                memcpy(cut.rgb + (size_t)y * cw * 3, img->rgb + (((size_t)(y0 + y) * w) + x0) * 3, (size_t)cw * 3);
            image_free(img);
            *img = cut;
        }
        w = cw, h = ch;
    }
    return 0;
}

int image_heif_orientation(const uint8_t *data, size_t len) {
    hbox_info b;
    if (hbox_read(data, len, &b, NULL, 0)) return 1;
    turn t = {0, 0};
    for (int i = 0; i < b.n_transforms; i++)
        if (b.transforms[i].kind != HBOX_CLAP) t = turn_then(t, &b.transforms[i]);
    return turn_exif(t);
}

/* ---- decoding ---- */

/* Opens the bytes in libheif and decodes the primary image without its transformations (applied
 * by run_geometry), as interleaved RGB8 (rgb8 = 1) or in its own colour format (rgb8 = 0: no
 * conversion, what validation needs). */
static int heif_decode_primary(const uint8_t *data, size_t len, int rgb8, int threads, struct heif_image **out,
                               char *err, size_t errlen) {
    pthread_once(&heif_once, heif_start);
    struct heif_context *ctx = heif_context_alloc();
    struct heif_image_handle *handle = NULL;
    struct heif_decoding_options *opt = heif_decoding_options_alloc();
    struct heif_error e = {heif_error_Memory_allocation_error, heif_suberror_Unspecified, "out of memory"};
    *out = NULL;
    if (ctx && opt) {
        /* A backstop: the limits were checked on the box structure already. */
        heif_context_set_maximum_image_size_limit(ctx, IMAGE_MAX_SIDE + 1);
        heif_context_set_max_decoding_threads(ctx, threads);
        opt->ignore_transformations = 1;
        opt->convert_hdr_to_8bit = 1;
        e = heif_context_read_from_memory_without_copy(ctx, data, len, NULL);
        if (e.code == heif_error_Ok) e = heif_context_get_primary_image_handle(ctx, &handle);
        if (e.code == heif_error_Ok)
            e = rgb8 ? heif_decode_image(handle, out, heif_colorspace_RGB, heif_chroma_interleaved_RGB, opt)
                     : heif_decode_image(handle, out, heif_colorspace_undefined, heif_chroma_undefined, opt);
    }
    if (e.code != heif_error_Ok) set_error(err, errlen, "truncated or corrupt HEIF: %s", e.message);
    heif_decoding_options_free(opt);
    if (handle) heif_image_handle_release(handle);
    heif_context_free(ctx);
    return e.code == heif_error_Ok ? 0 : -1;
}

int image_heif_decode(const uint8_t *data, size_t len, rgb_image *out, char *err, size_t errlen) {
    hbox_info b;
    struct heif_image *img;
    memset(out, 0, sizeof *out);
    /* The worker decodes what the front accepted, but not only that (da3-infer, old sessions):
     * the same structural checks and limits apply. Grid tiles on 4 threads (libheif's default). */
    if (read_boxes(data, len, &b, err, errlen) || check_sizes(&b, err, errlen) ||
        heif_decode_primary(data, len, 1, 4, &img, err, errlen))
        return -1;
    int stride = 0, rc = -1;
    const uint8_t *px = heif_image_get_plane_readonly(img, heif_channel_interleaved, &stride);
    int w = heif_image_get_width(img, heif_channel_interleaved),
        h = heif_image_get_height(img, heif_channel_interleaved);
    if (!px || heif_image_get_bits_per_pixel_range(img, heif_channel_interleaved) != 8 || w < 1 || h < 1 ||
        stride < 3 * w) {
        set_error(err, errlen, "truncated or corrupt HEIF: no 8-bit RGB image came out of the decoder");
    } else if (image_check_limits(w, h, err, errlen) == 0) {
        if (image_alloc(out, w, h)) {
            set_error(err, errlen, "out of memory decoding a %dx%d HEIF", w, h);
        } else {
            for (int y = 0; y < h; y++) memcpy(out->rgb + (size_t)y * w * 3, px + (size_t)y * stride, (size_t)w * 3);
            rc = run_geometry(&b, w, h, out, err, errlen);
        }
    }
    heif_image_release(img);
    if (rc) image_free(out);
    return rc;
}

int image_heif_validate(const uint8_t *data, size_t len, int *w, int *h, char *err, size_t errlen) {
    hbox_info b;
    if (read_boxes(data, len, &b, err, errlen) || check_sizes(&b, err, errlen)) return -1;
    long long cost = validate_cost(&b, len);
    if (cost > (long long)IMAGE_VALIDATE_MAX_BYTES) {
        set_error(err, errlen,
                  "HEIF image of %ux%u needs %lld MB to check (limit %u MB per image); send it smaller or as JPEG",
                  b.width, b.height, (cost + (1 << 20) - 1) >> 20, IMAGE_VALIDATE_MAX_BYTES >> 20);
        return -1;
    }
    struct heif_image *img;
    /* Tiles decoded on this thread (0 threads), so one slot is one core. */
    image_validate_gate_enter();
    int rc = heif_decode_primary(data, len, 0, 0, &img, err, errlen);
    image_validate_gate_leave();
    if (rc) return -1;
    int dw = heif_image_get_primary_width(img), dh = heif_image_get_primary_height(img);
    heif_image_release(img);
    if (dw < 1 || dh < 1) {
        set_error(err, errlen, "truncated or corrupt HEIF: the decoder produced a %dx%d image", dw, dh);
        return -1;
    }
    /* What the worker will do to it must work too (a clap that crops everything away...). */
    if (run_geometry(&b, dw, dh, NULL, err, errlen)) return -1;
    *w = dw;
    *h = dh;
    return 0;
}
