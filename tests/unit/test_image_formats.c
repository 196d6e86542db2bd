/* Unit tests for HEIF/HEIC and WebP (common/image_heif.c, common/heif_boxes.c, common/image_webp.c)
 * on files made at test time: PNGs written here, encoded with Debian's heif-enc, cwebp and
 * img2webp, and with libheif's encoder where heif-enc cannot say what is wanted (heif-enc 1.15
 * drops a JPEG's EXIF orientation instead of writing irot/imir, and writes no clap or grid of
 * several tiles); grids are assembled here from encoded tiles. Checked: pixels against the
 * source, orientation against the JPEG path and against libheif's own transformations, the size
 * limits and validation budget refused before decoding, truncations, corrupt and lying headers,
 * animated WebP, random corruption (any outcome but a crash: the sanitizer run checks that).
 * Tolerances on a smooth 96x64 source (max / mean absolute difference per channel; measured
 * today in brackets): lossless WebP 0 / 0 [0 / 0]; WebP q90 16 / 2.5 [7 / 1.2]; HEIC q90, with
 * alpha, 10-bit and monochrome 16 / 2 [4 / 0.9] (libheif decodes HEVC without its deblocking
 * filter); HEIC lossless 2 / 0.5 [1 / 0.3] (libheif's YCbCr/RGB rounding); a 17x13 HEIC 32 / 6
 * [13 / 3.9] (4:2:0 on a tiny image). Orientation and crops are compared exactly with libheif's
 * own decode. Set DA3_TEST_KEEP=1 to keep the generated files. */
#include <libheif/heif.h>
#include <png.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "common/image_decode.h"
#include "common/session_files.h"
#include "common/util.h"
#include "tests/unit/check.h"

static char tmp_dir[256];

/* Under LeakSanitizer: x265, the encoder this test drives through libheif, leaks a little per
 * encode (the server never encodes). Our code's leaks are still reported. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libx265.so\n"; }

static const char *tmp_path(const char *name) {
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", tmp_dir, name);
    return p;
}

/* Runs a shell command (quiet); 1 when it exited 0. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[2200];
    snprintf(full, sizeof full, "%s >/dev/null 2>&1", cmd);
    return system(full) == 0;
}

static uint8_t *load(const char *path, size_t *len) {
    uint8_t *d = read_file(path, len);
    CHECK_MSG(d != NULL, "cannot read %s", path);
    return d;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- source images ---- */

/* A smooth picture (codecs keep it well): gradients in each channel. */
static uint8_t smooth_px(int x, int y, int w, int h, int c) {
    return (uint8_t)(c == 0 ? x * 255 / w : c == 1 ? y * 255 / h : (x + y) * 255 / (w + h));
}

static uint8_t *make_rgb(int w, int h, int quadrants) {
    static const uint8_t q[4][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 255}};
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                rgb[((size_t)y * w + x) * 3 + c] =
                    quadrants ? q[(x >= w / 2) + 2 * (y >= h / 2)][c] : smooth_px(x, y, w, h, c);
    return rgb;
}

/* Writes a PNG of `ch` channels (1 grey, 3 RGB, 4 RGBA) at 8 or 16 bits from RGB8 (grey: R;
 * alpha: a ramp; 16 bits: v * 257). */
static void write_png(const char *path, const uint8_t *rgb, int w, int h, int ch, int depth) {
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (!f || !png || !info || setjmp(png_jmpbuf(png))) {
        CHECK_MSG(0, "cannot write %s", path);
        if (f) fclose(f);
        png_destroy_write_struct(&png, &info);
        return;
    }
    png_init_io(png, f);
    int type = ch == 1 ? PNG_COLOR_TYPE_GRAY : ch == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, type, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    uint8_t *row = malloc((size_t)w * ch * 2);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                /* alpha never 0: encoders may rewrite the colour of fully transparent pixels */
                int v = c < 3 ? rgb[((size_t)y * w + x) * 3 + (ch == 1 ? 0 : c)] : 128 + x * 127 / w;
                if (depth == 16) {
                    row[((size_t)x * ch + c) * 2] = (uint8_t)v;
                    row[((size_t)x * ch + c) * 2 + 1] = (uint8_t)v;
                } else {
                    row[(size_t)x * ch + c] = (uint8_t)v;
                }
            }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(row);
    fclose(f);
}

/* A JPEG of rgb carrying an EXIF orientation tag (big-endian TIFF, one IFD entry). */
static uint8_t *jpeg_with_orientation(const uint8_t *rgb, int w, int h, int orientation, size_t *len) {
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long jlen = 0;
    CHECK(tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpg, &jlen, TJSAMP_444, 95, 0) == 0);
    static const uint8_t tiff_head[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1};
    uint8_t app1[2 + 2 + 6 + 26];
    memcpy(app1,
           "\xff\xe1\x00\x22"
           "Exif\0\0",
           10);
    memcpy(app1 + 10, tiff_head, sizeof tiff_head);
    uint8_t tail[8] = {0, (uint8_t)orientation, 0, 0, 0, 0, 0, 0};
    memcpy(app1 + 10 + sizeof tiff_head, tail, 8);
    uint8_t *out = malloc(jlen + sizeof app1);
    memcpy(out, jpg, 2);
    memcpy(out + 2, app1, sizeof app1);
    memcpy(out + 2 + sizeof app1, jpg + 2, jlen - 2);
    *len = jlen + sizeof app1;
    tjFree(jpg);
    tjDestroy(tj);
    return out;
}

/* ---- comparisons ---- */

typedef struct {
    int max;
    double mean;
} diff;

static diff compare(const rgb_image *img, const uint8_t *ref, int w, int h) {
    diff d = {-1, 1e9};
    if (!img->rgb || img->width != w || img->height != h) return d;
    long long sum = 0;
    d.max = 0;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        int v = abs((int)img->rgb[i] - (int)ref[i]);
        sum += v;
        if (v > d.max) d.max = v;
    }
    d.mean = (double)sum / ((double)w * h * 3);
    return d;
}

/* The four corner pixels (one in from each edge). */
static void corners(const rgb_image *img, uint8_t out[4][3]) {
    int w = img->width, h = img->height, xs[4] = {1, w - 2, 1, w - 2}, ys[4] = {1, 1, h - 2, h - 2};
    for (int q = 0; q < 4; q++) memcpy(out[q], img->rgb + ((size_t)ys[q] * w + xs[q]) * 3, 3);
}

static int corners_close(uint8_t a[4][3], uint8_t b[4][3], int tol) {
    for (int q = 0; q < 4; q++)
        for (int c = 0; c < 3; c++)
            if (abs(a[q][c] - b[q][c]) > tol) return 0;
    return 1;
}

/* Decodes (must succeed) and validates (must succeed, reporting the stored size sw x sh unless
 * sw is 0). */
static int decode_ok(const char *what, const uint8_t *d, size_t len, rgb_image *img, int sw, int sh) {
    char err[256] = "";
    int w = -1, h = -1;
    int v = image_validate(d, len, &w, &h, err, sizeof err);
    CHECK_MSG(v == 0 && (sw == 0 || (w == sw && h == sh)), "%s: validate %d %dx%d (want %dx%d): %s", what, v, w, h, sw,
              sh, err);
    err[0] = 0;
    int r = image_decode(d, len, img, err, sizeof err);
    CHECK_MSG(r == 0, "%s: decode: %s", what, err);
    return r;
}

/* Both decode and validate must fail, with a message starting with `want`. */
static void expect_refused(const char *what, const uint8_t *d, size_t len, const char *want) {
    char err[300] = "";
    rgb_image img;
    int w = -7, h = -7;
    CHECK_MSG(image_decode(d, len, &img, err, sizeof err) == -1 && img.rgb == NULL, "%s: decoded", what);
    CHECK_MSG(starts_with(err, want), "%s: decode said '%s', want '%s...'", what, err, want);
    err[0] = 0;
    CHECK_MSG(image_validate(d, len, &w, &h, err, sizeof err) == -1 && w == -7 && h == -7, "%s: validated", what);
    CHECK_MSG(starts_with(err, want), "%s: validate said '%s', want '%s...'", what, err, want);
}

/* Validation must refuse with `want` (a refusal decoding does not make: the budget). */
static void expect_validate_refused(const char *what, const uint8_t *d, size_t len, const char *want) {
    char err[300] = "";
    int w = -7, h = -7;
    CHECK_MSG(image_validate(d, len, &w, &h, err, sizeof err) == -1 && w == -7 && h == -7, "%s: validated", what);
    CHECK_MSG(starts_with(err, want), "%s: validate said '%s', want '%s...'", what, err, want);
}

static void check_truncations(const char *name, const uint8_t *d, size_t len, const char *want) {
    size_t cuts[] = {len - 1, len - 2, len - 100, len * 9 / 10, len * 2 / 3, len / 2, len / 4, 200, 40, 16, 12};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        if (cuts[i] < 12 || cuts[i] >= len) continue;
        char what[128];
        snprintf(what, sizeof what, "%s cut to %zu of %zu bytes", name, cuts[i], len);
        expect_refused(what, d, cuts[i], want);
    }
}

/* Flipped bits anywhere: any outcome but a crash or a leak; a success is a sane image. */
static void check_mutations(const char *name, const uint8_t *orig, size_t len, int iterations) {
    uint8_t *d = malloc(len);
    uint32_t s = 4242;
    int decoded = 0;
    for (int it = 0; it < iterations; it++) {
        memcpy(d, orig, len);
        for (int k = 0; k < 1 + it % 3; k++) {
            s = s * 1103515245u + 12345u;
            /* half the flips in the first 600 bytes, where the boxes and headers are */
            size_t at = (it & 1) ? (s >> 8) % (len < 600 ? len : 600) : (s >> 8) % len;
            d[at] ^= (uint8_t)(1u << ((s >> 4) & 7));
        }
        char err[300];
        rgb_image img;
        int w, h;
        if (image_decode(d, len, &img, err, sizeof err) == 0) {
            CHECK_MSG(img.width > 0 && img.height > 0 && img.rgb, "%s mutation %d", name, it);
            decoded++;
            image_free(&img);
        } else {
            CHECK_MSG(img.rgb == NULL && err[0], "%s mutation %d: no message", name, it);
        }
        (void)image_validate(d, len, &w, &h, err, sizeof err);
        (void)image_orientation(d, len);
    }
    printf("  %d mutations of %s: %d still decoded, none crashed\n", iterations, name, decoded);
    free(d);
}

/* ---- libheif as encoder and as reference decoder ---- */

typedef struct {
    uint8_t *d;
    size_t len;
} membuf;

static struct heif_error membuf_write(struct heif_context *ctx, const void *data, size_t size, void *user) {
    (void)ctx;
    membuf *m = user;
    m->d = realloc(m->d, m->len + size);
    memcpy(m->d + m->len, data, size);
    m->len += size;
    struct heif_error ok = {heif_error_Ok, heif_suberror_Unspecified, "ok"};
    return ok;
}

/* Encodes rgb with libheif's HEVC encoder: `orientation` becomes irot/imir, and with workaround 0
 * a size the encoder pads is cropped by a clap (1: by a one-tile grid, heif-enc's way). */
static uint8_t *heif_encode(const uint8_t *rgb, int w, int h, int orientation, int workaround, size_t *len) {
    struct heif_context *ctx = heif_context_alloc();
    struct heif_encoder *enc = NULL;
    struct heif_image *img = NULL;
    membuf out = {0};
    CHECK(heif_context_get_encoder_for_format(ctx, heif_compression_HEVC, &enc).code == heif_error_Ok);
    heif_encoder_set_lossy_quality(enc, 95);
    heif_image_create(w, h, heif_colorspace_RGB, heif_chroma_interleaved_RGB, &img);
    heif_image_add_plane(img, heif_channel_interleaved, w, h, 8);
    int stride;
    uint8_t *p = heif_image_get_plane(img, heif_channel_interleaved, &stride);
    for (int y = 0; y < h; y++) memcpy(p + (size_t)y * stride, rgb + (size_t)y * w * 3, (size_t)w * 3);
    struct heif_encoding_options *opt = heif_encoding_options_alloc();
    opt->image_orientation = (enum heif_orientation)orientation;
    opt->macOS_compatibility_workaround = (uint8_t)workaround;
    CHECK(heif_context_encode_image(ctx, img, enc, opt, NULL).code == heif_error_Ok);
    struct heif_writer writer = {1, membuf_write};
    CHECK(heif_context_write(ctx, &writer, &out).code == heif_error_Ok);
    heif_encoding_options_free(opt);
    heif_image_release(img);
    heif_encoder_release(enc);
    heif_context_free(ctx);
    *len = out.len;
    return out.d;
}

/* The image as libheif itself shows it (its own irot/imir/clap), or -1. */
static int libheif_reference(const uint8_t *d, size_t len, rgb_image *out) {
    struct heif_context *ctx = heif_context_alloc();
    struct heif_image_handle *h = NULL;
    struct heif_image *img = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (heif_context_read_from_memory_without_copy(ctx, d, len, NULL).code == heif_error_Ok &&
        heif_context_get_primary_image_handle(ctx, &h).code == heif_error_Ok &&
        heif_decode_image(h, &img, heif_colorspace_RGB, heif_chroma_interleaved_RGB, NULL).code == heif_error_Ok) {
        int stride, w = heif_image_get_width(img, heif_channel_interleaved),
                    hh = heif_image_get_height(img, heif_channel_interleaved);
        const uint8_t *p = heif_image_get_plane_readonly(img, heif_channel_interleaved, &stride);
        if (image_alloc(out, w, hh) == 0) {
            for (int y = 0; y < hh; y++) memcpy(out->rgb + (size_t)y * w * 3, p + (size_t)y * stride, (size_t)w * 3);
            rc = 0;
        }
    }
    if (img) heif_image_release(img);
    if (h) heif_image_handle_release(h);
    heif_context_free(ctx);
    return rc;
}

/* ---- a little box surgery (big-endian ISOBMFF) ---- */

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}
static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }

/* Offset of the nth (0-based) box of `type` inside [start, end), descending into meta, iprp,
 * ipco and iinf; 0 when absent (no box starts at 0 but ftyp). */
static size_t box_find(const uint8_t *d, size_t start, size_t end, const char *type, int *nth) {
    for (size_t p = start; p + 8 <= end;) {
        size_t size = be32(d + p);
        if (size < 8 || size > end - p) return 0;
        if (!memcmp(d + p + 4, type, 4) && (*nth)-- == 0) return p;
        size_t skip = !memcmp(d + p + 4, "meta", 4)                                    ? 12
                      : !memcmp(d + p + 4, "iprp", 4) || !memcmp(d + p + 4, "ipco", 4) ? 8
                      : !memcmp(d + p + 4, "iinf", 4)                                  ? 14
                                                                                       : 0;
        if (skip) {
            size_t r = box_find(d, p + skip, p + size, type, nth);
            if (r) return r;
        }
        p += size;
    }
    return 0;
}

static size_t find_box(const uint8_t *d, size_t len, const char *type, int nth) {
    return box_find(d, 0, len, type, &nth);
}

/* The item data of a single-item file made by libheif (iloc version 0, one extent): offset, length. */
static int first_item_data(const uint8_t *d, size_t len, size_t *off, size_t *n, size_t *len_field) {
    size_t b = find_box(d, len, "iloc", 0);
    if (!b || d[b + 8] != 0 || d[b + 12] != 0x44) return -1;
    int base = d[b + 13] >> 4; /* 0 or 4 bytes of base_offset, which libheif fills */
    size_t e = b + 12 + 2 + 2 + 2 + 2 + (size_t)base + 2;
    *off = (base ? be32(d + b + 20) : 0) + be32(d + e);
    *n = be32(d + e + 4);
    *len_field = e + 4;
    return 0;
}

/* ---- a grid assembled from encoded tiles ---- */

typedef struct {
    const uint8_t *hvcc; /* the hvcC box, header included */
    size_t hvcc_len;
    const uint8_t *data; /* the coded picture */
    size_t data_len;
    int w, h;
} tile_src;

static int tile_from(const uint8_t *d, size_t len, tile_src *t, int w, int h) {
    size_t hv = find_box(d, len, "hvcC", 0), off, n, lf;
    if (!hv || first_item_data(d, len, &off, &n, &lf) || off + n > len) return -1;
    *t = (tile_src){d + hv, be32(d + hv), d + off, n, w, h};
    return 0;
}

typedef struct {
    uint8_t *d;
    size_t len, cap;
} wbuf;

static void wput(wbuf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) b->d = realloc(b->d, b->cap = (b->len + n) * 2 + 256);
    memcpy(b->d + b->len, p, n);
    b->len += n;
}
static void w32(wbuf *b, uint32_t v) {
    uint8_t x[4];
    put32(x, v);
    wput(b, x, 4);
}
static void w16(wbuf *b, uint32_t v) {
    uint8_t x[2];
    put16(x, v);
    wput(b, x, 2);
}
static void w8(wbuf *b, uint32_t v) {
    uint8_t x = (uint8_t)v;
    wput(b, &x, 1);
}
static size_t wbox(wbuf *b, const char *type) {
    size_t at = b->len;
    w32(b, 0);
    wput(b, type, 4);
    return at;
}
static void wend(wbuf *b, size_t at) { put32(b->d + at, (uint32_t)(b->len - at)); }

/* A HEIF whose primary item 1 is a rows x cols grid of output ow x oh (declared ispe iw x ih),
 * tile i being tiles[refs[i]] (items 2...: one item per distinct source, so a source referenced
 * twice is one item referenced twice); n_refs references; irot (-1: none) on the grid. */
static uint8_t *build_grid(const tile_src *tiles, int n_tiles, const int *refs, int n_refs, int rows, int cols, int ow,
                           int oh, int iw, int ih, int irot, size_t *len) {
    uint8_t grid[8] = {0, 0, (uint8_t)(rows - 1), (uint8_t)(cols - 1)};
    put16(grid + 4, (uint32_t)ow);
    put16(grid + 6, (uint32_t)oh);
    size_t mdat_at = 0;
    wbuf b = {0};
    for (int pass = 0; pass < 2; pass++) {
        b.len = 0;
        size_t f = wbox(&b, "ftyp");
        wput(&b, "heic\0\0\0\0mif1heic", 16);
        wend(&b, f);
        size_t meta = wbox(&b, "meta");
        w32(&b, 0);
        size_t hd = wbox(&b, "hdlr");
        w32(&b, 0), w32(&b, 0), wput(&b, "pict", 4), w32(&b, 0), w32(&b, 0), w32(&b, 0), w8(&b, 0);
        wend(&b, hd);
        size_t pi = wbox(&b, "pitm");
        w32(&b, 0), w16(&b, 1);
        wend(&b, pi);
        size_t il = wbox(&b, "iloc");
        w32(&b, 0), w8(&b, 0x44), w8(&b, 0x00), w16(&b, (uint32_t)(1 + n_tiles));
        size_t at = mdat_at + 8;
        w16(&b, 1), w16(&b, 0), w16(&b, 1), w32(&b, (uint32_t)at), w32(&b, sizeof grid);
        at += sizeof grid;
        for (int t = 0; t < n_tiles; t++) {
            w16(&b, (uint32_t)(2 + t)), w16(&b, 0), w16(&b, 1), w32(&b, (uint32_t)at),
                w32(&b, (uint32_t)tiles[t].data_len);
            at += tiles[t].data_len;
        }
        wend(&b, il);
        size_t ii = wbox(&b, "iinf");
        w32(&b, 0), w16(&b, (uint32_t)(1 + n_tiles));
        for (int t = 0; t <= n_tiles; t++) {
            size_t ie = wbox(&b, "infe");
            w32(&b, t ? 0x02000001u : 0x02000000u); /* version 2; tiles hidden */
            w16(&b, (uint32_t)(1 + t)), w16(&b, 0), wput(&b, t ? "hvc1" : "grid", 4), w8(&b, 0);
            wend(&b, ie);
        }
        wend(&b, ii);
        size_t ir = wbox(&b, "iref");
        w32(&b, 0);
        size_t dg = wbox(&b, "dimg");
        w16(&b, 1), w16(&b, (uint32_t)n_refs);
        for (int r = 0; r < n_refs; r++) w16(&b, (uint32_t)(2 + refs[r]));
        wend(&b, dg);
        wend(&b, ir);
        size_t ip = wbox(&b, "iprp");
        size_t ic = wbox(&b, "ipco");
        /* properties: 1..n hvcC of each tile, n+1..2n ispe of each tile, 2n+1 grid ispe, 2n+2 irot */
        for (int t = 0; t < n_tiles; t++) wput(&b, tiles[t].hvcc, tiles[t].hvcc_len);
        for (int t = 0; t <= n_tiles; t++) {
            size_t is = wbox(&b, "ispe");
            w32(&b, 0), w32(&b, (uint32_t)(t < n_tiles ? tiles[t].w : iw)),
                w32(&b, (uint32_t)(t < n_tiles ? tiles[t].h : ih));
            wend(&b, is);
        }
        size_t ro = wbox(&b, "irot");
        w8(&b, (uint32_t)(irot < 0 ? 0 : irot));
        wend(&b, ro);
        wend(&b, ic);
        size_t pm = wbox(&b, "ipma");
        w32(&b, 0), w32(&b, (uint32_t)(1 + n_tiles));
        w16(&b, 1), w8(&b, irot < 0 ? 1 : 2), w8(&b, (uint32_t)(2 * n_tiles + 1));
        if (irot >= 0) w8(&b, 0x80 | (uint32_t)(2 * n_tiles + 2));
        for (int t = 0; t < n_tiles; t++)
            w16(&b, (uint32_t)(2 + t)), w8(&b, 2), w8(&b, 0x80 | (uint32_t)(1 + t)),
                w8(&b, (uint32_t)(n_tiles + 1 + t));
        wend(&b, pm);
        wend(&b, ip);
        wend(&b, meta);
        mdat_at = b.len;
        size_t md = wbox(&b, "mdat");
        wput(&b, grid, sizeof grid);
        for (int t = 0; t < n_tiles; t++) wput(&b, tiles[t].data, tiles[t].data_len);
        wend(&b, md);
    }
    *len = b.len;
    return b.d;
}

/* ---- tests ---- */

static void test_sniff(void) {
    const uint8_t heic[] = {0, 0, 0, 24, 'f', 't', 'y', 'p', 'h', 'e', 'i', 'c',
                            0, 0, 0, 0,  'm', 'i', 'f', '1', 'h', 'e', 'i', 'c'};
    const uint8_t mif1[] = {0, 0, 0, 20, 'f', 't', 'y', 'p', 'm', 'i', 'f', '1', 0, 0, 0, 0, 'm', 'i', 'a', 'f'};
    const uint8_t avif[] = {0, 0, 0, 24, 'f', 't', 'y', 'p', 'a', 'v', 'i', 'f',
                            0, 0, 0, 0,  'm', 'i', 'f', '1', 'm', 'i', 'a', 'f'};
    const uint8_t mp4[] = {0, 0, 0, 20, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0, 'm', 'p', '4', '1'};
    const uint8_t hevc_in_compat[] = {0,   0,   0, 20, 'f', 't', 'y', 'p', 'm', 'i',
                                      'f', '1', 0, 0,  0,   0,   'h', 'e', 'v', 'c'};
    CHECK(image_sniff(heic, sizeof heic) == IMAGE_FORMAT_HEIF);
    CHECK(image_sniff(heic, 12) == IMAGE_FORMAT_HEIF); /* a cut file is still known, to say it is cut */
    CHECK(image_sniff(heic, 11) == IMAGE_FORMAT_UNKNOWN);
    CHECK(image_sniff(mif1, sizeof mif1) == IMAGE_FORMAT_HEIF);
    CHECK(image_sniff(hevc_in_compat, sizeof hevc_in_compat) == IMAGE_FORMAT_HEIF);
    CHECK(image_sniff(avif, sizeof avif) == IMAGE_FORMAT_UNKNOWN);
    CHECK(image_sniff(mp4, sizeof mp4) == IMAGE_FORMAT_UNKNOWN);
    CHECK(image_sniff((const uint8_t *)"RIFF\x10\0\0\0WEBPVP8 ", 16) == IMAGE_FORMAT_WEBP);
    CHECK(image_sniff((const uint8_t *)"RIFF\x10\0\0\0WAVEfmt ", 16) == IMAGE_FORMAT_UNKNOWN);
    CHECK(image_sniff((const uint8_t *)"RIFF\x10\0\0\0WEB", 11) == IMAGE_FORMAT_UNKNOWN);
    CHECK(strcmp(image_format_ext(IMAGE_FORMAT_HEIF), "heic") == 0);
    CHECK(strcmp(image_format_ext(IMAGE_FORMAT_WEBP), "webp") == 0);
    expect_refused("AVIF ftyp", avif, sizeof avif, "AVIF images are not accepted; send JPEG, PNG, HEIC or WebP");
    expect_refused("MP4 ftyp", mp4, sizeof mp4, "not a JPEG, PNG, HEIC or WebP image");
    expect_refused("HEIF ftyp alone", heic, sizeof heic, "truncated or corrupt HEIF: no meta box");
    expect_refused("WebP header alone", (const uint8_t *)"RIFF\x04\0\0\0WEBP", 12, "truncated or corrupt WebP: ");
}

/* Encodes a PNG with heif-enc / cwebp (`tool` with its options) and compares the decode with the
 * source pixels; returns the file. */
static uint8_t *encode_and_compare(const char *what, const char *tool, const char *png, const char *out,
                                   const uint8_t *ref, int w, int h, int max_tol, double mean_tol, size_t *len) {
    uint8_t *d = NULL;
    if (!sh("%s %s -o %s", tool, png, out)) {
        CHECK_MSG(0, "%s %s failed", tool, png);
        return NULL;
    }
    if (!(d = load(out, len))) return NULL;
    rgb_image img = {0};
    if (decode_ok(what, d, *len, &img, w, h) == 0) {
        diff df = compare(&img, ref, w, h);
        CHECK_MSG(df.max >= 0 && df.max <= max_tol && df.mean <= mean_tol, "%s: max %d mean %.2f (allowed %d / %.2f)",
                  what, df.max, df.mean, max_tol, mean_tol);
        printf("  %-40s %dx%d %6zu bytes: max abs diff %3d, mean %.2f\n", what, w, h, *len, df.max, df.mean);
    }
    image_free(&img);
    return d;
}

static void test_heic_pixels(void) {
    const int w = 96, h = 64;
    uint8_t *rgb = make_rgb(w, h, 0), *grey = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h; i++) grey[i * 3] = grey[i * 3 + 1] = grey[i * 3 + 2] = rgb[i * 3];
    write_png(tmp_path("rgb8.png"), rgb, w, h, 3, 8);
    write_png(tmp_path("rgba8.png"), rgb, w, h, 4, 8);
    write_png(tmp_path("grey8.png"), rgb, w, h, 1, 8);
    write_png(tmp_path("rgb16.png"), rgb, w, h, 3, 16);
    size_t len;
    uint8_t *d;
    d = encode_and_compare("HEIC q90", "heif-enc -q 90", tmp_path("rgb8.png"), tmp_path("q90.heic"), rgb, w, h, 16, 2,
                           &len);
    if (d) check_truncations("q90.heic", d, len, "truncated or corrupt HEIF: ");
    free(d);
    d = encode_and_compare("HEIC lossless", "heif-enc -L -p chroma=444 --matrix_coefficients=0", tmp_path("rgb8.png"),
                           tmp_path("lossless.heic"), rgb, w, h, 2, 0.5, &len);
    free(d);
    /* Alpha is an auxiliary image libheif decodes too: dropped, the colour as sent. */
    d = encode_and_compare("HEIC with alpha", "heif-enc -q 90", tmp_path("rgba8.png"), tmp_path("alpha.heic"), rgb, w,
                           h, 16, 2, &len);
    if (d) check_truncations("alpha.heic", d, len, "truncated or corrupt HEIF: ");
    free(d);
    /* Monochrome HEVC (4:0:0) to grey RGB. */
    d = encode_and_compare("HEIC monochrome", "heif-enc -q 90", tmp_path("grey8.png"), tmp_path("grey.heic"), grey, w,
                           h, 16, 2, &len);
    free(d);
    /* 10-bit HEVC (Main 10) to 8 bits. */
    d = encode_and_compare("HEIC 10-bit", "heif-enc -q 90 -b 10", tmp_path("rgb16.png"), tmp_path("10bit.heic"), rgb, w,
                           h, 16, 2, &len);
    free(d);
    /* An odd size: heif-enc pads the coded picture and crops with a one-tile grid. */
    const int ow = 17, oh = 13;
    uint8_t *odd = make_rgb(ow, oh, 0);
    write_png(tmp_path("odd.png"), odd, ow, oh, 3, 8);
    d = encode_and_compare("HEIC 17x13 (one-tile grid)", "heif-enc -q 90", tmp_path("odd.png"), tmp_path("odd.heic"),
                           odd, ow, oh, 32, 6, &len);
    if (d) check_truncations("odd.heic (grid)", d, len, "truncated or corrupt HEIF: ");
    free(d);
    free(odd);
    free(rgb);
    free(grey);
}

/* libheif's encoder writes irot/imir for an EXIF orientation: the decode must show what the JPEG
 * path (checked against PIL in test_image_decode) shows for the same pixels and tag, exactly what
 * libheif shows with its own transformations, and validation must report the stored size. */
static void test_heic_orientation(void) {
    const int w = 96, h = 64;
    uint8_t *rgb = make_rgb(w, h, 1);
    static const char *variants[3] = {"plain", "clap", "grid"};
    for (int k = 1; k <= 8; k++) {
        for (int v = 0; v < 3; v++) {
            size_t len, jlen;
            /* 90x60 is not a multiple of the encoder's block size: libheif crops the coded 96x64
             * with a clap (workaround 0, after which the irot/imir come) or with a one-tile grid
             * (workaround 1, the default). All must come out exactly as libheif shows them. */
            int cw = v ? 90 : w, ch = v ? 60 : h;
            uint8_t *src = make_rgb(cw, ch, 1);
            uint8_t *d = heif_encode(src, cw, ch, k, v == 2, &len), *jpg = jpeg_with_orientation(src, cw, ch, k, &jlen);
            char what[64];
            snprintf(what, sizeof what, "HEIF orientation %d, %s %dx%d", k, variants[v], cw, ch);
            CHECK_MSG(image_orientation(d, len) == k, "%s: image_orientation %d", what, image_orientation(d, len));
            CHECK_MSG(v != 1 || find_box(d, len, "clap", 0), "%s: no clap written", what);
            rgb_image img = {0}, ref = {0}, viajpeg = {0};
            char err[256];
            /* validation reports the decoded size before any transformation (under a clap, what
             * the encoder coded) */
            if (decode_ok(what, d, len, &img, v == 1 ? 0 : cw, ch) == 0 && libheif_reference(d, len, &ref) == 0 &&
                image_decode(jpg, jlen, &viajpeg, err, sizeof err) == 0) {
                diff df = compare(&img, ref.rgb, ref.width, ref.height);
                CHECK_MSG(df.max == 0, "%s: %dx%d vs libheif's %dx%d, max diff %d", what, img.width, img.height,
                          ref.width, ref.height, df.max);
                uint8_t a[4][3], b[4][3];
                corners(&img, a);
                corners(&viajpeg, b);
                CHECK_MSG(img.width == viajpeg.width && img.height == viajpeg.height && corners_close(a, b, 40),
                          "%s: not shown as the JPEG with the same tag", what);
            }
            image_free(&img);
            image_free(&ref);
            image_free(&viajpeg);
            free(d);
            free(jpg);
            free(src);
        }
    }
    /* heif-enc 1.15 copies a JPEG's Exif (orientation 6 here) but writes no irot: HEIF's Exif tag
     * is informative only, so the image stays as stored. */
    size_t jlen, len;
    uint8_t *jpg = jpeg_with_orientation(rgb, w, h, 6, &jlen);
    FILE *f = fopen(tmp_path("exif6.jpg"), "wb");
    if (f) fwrite(jpg, 1, jlen, f), fclose(f);
    uint8_t *d = sh("heif-enc -q 90 %s -o %s", tmp_path("exif6.jpg"), tmp_path("exif6.heic"))
                     ? load(tmp_path("exif6.heic"), &len)
                     : NULL;
    CHECK(d != NULL);
    if (d && image_orientation(d, len) == 1) {
        rgb_image img = {0};
        if (decode_ok("heif-enc of an EXIF-6 JPEG", d, len, &img, w, h) == 0) CHECK(img.width == w && img.height == h);
        image_free(&img);
    } else if (d) {
        printf("  note: this heif-enc writes irot for EXIF orientation (%d)\n", image_orientation(d, len));
    }
    free(d);
    free(jpg);
    free(rgb);
}

/* Grids assembled from encoded tiles, honest and not. */
static void test_heic_grid(void) {
    const int t = 64;
    static const uint8_t colours[4][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 255}};
    uint8_t *enc[4];
    size_t enc_len[4];
    tile_src tiles[4];
    for (int i = 0; i < 4; i++) {
        uint8_t *px = malloc((size_t)t * t * 3);
        for (int p = 0; p < t * t; p++) memcpy(px + p * 3, colours[i], 3);
        enc[i] = heif_encode(px, t, t, 1, 1, &enc_len[i]);
        CHECK_MSG(tile_from(enc[i], enc_len[i], &tiles[i], t, t) == 0, "tile %d: unexpected libheif layout", i);
        free(px);
    }
    const int four[4] = {0, 1, 2, 3};
    size_t len;
    uint8_t *d = build_grid(tiles, 4, four, 4, 2, 2, 120, 100, 120, 100, -1, &len);
    rgb_image img = {0}, ref = {0};
    if (decode_ok("2x2 grid 120x100", d, len, &img, 120, 100) == 0 && libheif_reference(d, len, &ref) == 0) {
        CHECK(compare(&img, ref.rgb, ref.width, ref.height).max == 0);
        const uint8_t *p = img.rgb;
        CHECK(p[0] > 200 && p[1] < 50 && p[2] < 50); /* red top-left */
        CHECK(p[((size_t)99 * 120 + 119) * 3 + 2] > 200 &&
              p[((size_t)99 * 120 + 119) * 3] > 200); /* white bottom-right */
    }
    image_free(&img);
    image_free(&ref);
    check_truncations("2x2 grid", d, len, "truncated or corrupt HEIF: ");
    check_mutations("2x2 grid", d, len, 150);
    free(d);
    /* The grid turned (irot 3 = EXIF 6): stored 120x100, shown 100x120 as libheif shows it. */
    d = build_grid(tiles, 4, four, 4, 2, 2, 120, 100, 120, 100, 3, &len);
    CHECK(image_orientation(d, len) == 6);
    if (decode_ok("2x2 grid turned", d, len, &img, 120, 100) == 0 && libheif_reference(d, len, &ref) == 0)
        CHECK_MSG(img.width == 100 && img.height == 120 && compare(&img, ref.rgb, ref.width, ref.height).max == 0,
                  "turned grid %dx%d vs libheif %dx%d", img.width, img.height, ref.width, ref.height);
    image_free(&img);
    image_free(&ref);
    free(d);
    /* Sizes, refused from the boxes before anything is decoded. */
    d = build_grid(tiles, 4, four, 4, 2, 2, 20000, 20000, 20000, 20000, -1, &len);
    expect_refused("grid declaring 20000x20000", d, len, "image too large: 20000x20000 (limit 8192x8192 pixels)");
    free(d);
    d = build_grid(tiles, 4, four, 4, 2, 2, 16000, 16000, 120, 100, -1, &len);
    expect_refused("grid of ispe 120x100 but output 16000x16000", d, len,
                   "image too large: 16000x16000 (limit 8192x8192 pixels)");
    free(d);
    int *many = calloc(2048, sizeof *many);
    d = build_grid(tiles, 1, many, 2048, 32, 64, 120, 100, 120, 100, -1, &len);
    expect_refused("one tile referenced 2048 times", d, len,
                   "truncated or corrupt HEIF: grid item 1's 2048 tiles hold 8388608 pixels for an output of 120x100");
    free(d);
    d = build_grid(tiles, 4, four, 3, 2, 2, 120, 100, 120, 100, -1, &len);
    expect_refused("grid missing a tile", d, len,
                   "truncated or corrupt HEIF: grid item 1 has 4 tiles but references 3 images");
    free(d);
    /* 48 MP (iPhone "HEIF Max") as a grid of 512x512 tiles: 3 B/px of canvas is over the budget. */
    uint8_t *px = make_rgb(512, 512, 0);
    size_t big_len;
    uint8_t *big = heif_encode(px, 512, 512, 1, 1, &big_len);
    tile_src bt;
    CHECK(tile_from(big, big_len, &bt, 512, 512) == 0);
    d = build_grid(&bt, 1, many, 16 * 12, 12, 16, 8064, 6048, 8064, 6048, -1, &len);
    expect_validate_refused("48 MP grid", d, len,
                            "HEIF image of 8064x6048 needs 141 MB to check (limit 128 MB per image)");
    free(d);
    /* 12 MP as an iPhone lays it out (8x6 tiles of 512, cropped to 4032x3024) fits the budget:
     * tiles decoded one at a time into a 37 MB canvas. (24 MP, 108 tiles, needs 73 MB: kept as
     * grid24mp.heic with DA3_TEST_KEEP=1, for measuring.) */
    d = build_grid(&bt, 1, many, 8 * 6, 6, 8, 4032, 3024, 4032, 3024, -1, &len);
    double t0 = now_s();
    int w = 0, h = 0;
    char err[256] = "";
    CHECK_MSG(image_validate(d, len, &w, &h, err, sizeof err) == 0 && w == 4032 && h == 3024, "12 MP grid: %s", err);
    printf("  validate 12 MP grid of 48 tiles of 512x512: %.0f ms\n", (now_s() - t0) * 1e3);
    free(d);
    if (getenv("DA3_TEST_KEEP")) {
        d = build_grid(&bt, 1, many, 12 * 9, 9, 12, 5712, 4284, 5712, 4284, -1, &len);
        FILE *f = fopen(tmp_path("grid24mp.heic"), "wb");
        if (f) fwrite(d, 1, len, f), fclose(f);
        free(d);
        d = build_grid(&bt, 1, many, 8 * 6, 6, 8, 4032, 3024, 4032, 3024, -1, &len);
        f = fopen(tmp_path("grid12mp.heic"), "wb");
        if (f) fwrite(d, 1, len, f), fclose(f);
        free(d);
    }
    free(big);
    free(px);
    free(many);
    for (int i = 0; i < 4; i++) free(enc[i]);
}

/* Lies inside an otherwise good file. */
static void test_heic_lies(void) {
    const int w = 96, h = 64;
    uint8_t *rgb = make_rgb(w, h, 0);
    size_t len;
    uint8_t *good = heif_encode(rgb, w, h, 1, 1, &len), *d = malloc(2 * len + 256);
    size_t ispe = find_box(good, len, "ispe", 0), off, n, len_field;
    CHECK(ispe && first_item_data(good, len, &off, &n, &len_field) == 0 && off + n == len);
    /* ispe says 20000x20000: over the limits whatever the picture. */
    memcpy(d, good, len);
    put32(d + ispe + 12, 20000), put32(d + ispe + 16, 20000);
    expect_refused("ispe 20000x20000 on a 96x64 picture", d, len,
                   "image too large: 20000x20000 (limit 8192x8192 pixels)");
    /* ispe says 16x16: the coded picture (96x64, what libde265 allocates) is larger than declared
     * by more than the 64 pixels of a coding block. */
    put32(d + ispe + 12, 16), put32(d + ispe + 16, 16);
    expect_refused("ispe 16x16 on a 96x64 picture", d, len,
                   "truncated or corrupt HEIF: item 1's coded picture is 96x64 but the item declares 16x16");
    put32(d + ispe + 12, 0), put32(d + ispe + 16, 0);
    expect_refused("ispe 0x0", d, len, "truncated or corrupt HEIF: item 1 declares a size of 0x0");
    /* An in-band parameter set asking libde265 for 16384x16384 (what it would allocate) behind
     * an honest ispe: appended to the item's data, the item and mdat lengths fixed up. */
    /* NAL header (type 33), vps 0 / one sub-layer / nesting, profile-tier-level (12 bytes, with
     * emulation-prevention 03s as an encoder writes them), sps_id 0, 4:2:0, 16384 x 16384, no
     * conformance window, 8-bit, stop bit. */
    static const uint8_t sps[] = {0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
                                  0x00, 0x03, 0x00, 0x5a, 0xa0, 0x00, 0x20, 0x00, 0x80, 0x01, 0x00, 0x05, 0xc0};
    memcpy(d, good, len);
    uint8_t nal_len[4];
    put32(nal_len, sizeof sps);
    memcpy(d + len, nal_len, 4);
    memcpy(d + len + 4, sps, sizeof sps);
    size_t mdat = find_box(good, len, "mdat", 0);
    put32(d + mdat, be32(good + mdat) + 4 + sizeof sps);
    put32(d + len_field, (uint32_t)(n + 4 + sizeof sps));
    expect_refused("in-band SPS of 16384x16384", d, len + 4 + sizeof sps,
                   "truncated or corrupt HEIF: item 1's coded picture is 16384x16384 but the item declares 96x64");
    /* The same coded picture twice in one item: libheif would decode both. */
    memcpy(d, good, len);
    memcpy(d + len, good + off, n);
    put32(d + mdat, be32(good + mdat) + (uint32_t)n);
    put32(d + len_field, (uint32_t)(2 * n));
    expect_refused("two pictures in one item", d, len + n, "HEIF image item with 2 coded pictures");
    /* A clap with a zero denominator would divide by zero inside libheif's parser. */
    size_t clen, cap;
    uint8_t *odd = make_rgb(90, 60, 0), *c = heif_encode(odd, 90, 60, 1, 0, &clen);
    cap = find_box(c, clen, "clap", 0);
    CHECK_MSG(cap != 0, "libheif wrote no clap for 90x60");
    if (cap) {
        uint8_t *e = malloc(clen);
        memcpy(e, c, clen);
        put32(e + cap + 12, 0);
        expect_refused("clap width n/0", e, clen,
                       "truncated or corrupt HEIF: a clean aperture (clap) with a zero denominator");
        /* A clap that leaves nothing: offset 10000 to the right. */
        memcpy(e, c, clen);
        put32(e + cap + 24, 10000), put32(e + cap + 28, 1);
        expect_refused("clap outside the image", e, clen,
                       "truncated or corrupt HEIF: its clean aperture (clap) leaves nothing");
        free(e);
    }
    /* The primary item missing, and an AV1 primary in a file that only says mif1. */
    memcpy(d, good, len);
    size_t pitm = find_box(good, len, "pitm", 0);
    put16(d + pitm + 12, 77);
    expect_refused("pitm naming no item", d, len, "truncated or corrupt HEIF: the primary item 77 does not exist");
    memcpy(d, good, len);
    size_t infe = find_box(good, len, "infe", 0);
    memcpy(d + infe + 16, "av01", 4);
    expect_refused("an av01 primary", d, len,
                   "AVIF (AV1-coded HEIF) images are not accepted; send JPEG, PNG, HEIC or WebP");
    memcpy(d + infe + 16, "iovl", 4);
    expect_refused("an overlay primary", d, len, "HEIF images of type 'iovl' are not supported");
    /* Random damage, headers and all. */
    check_mutations("96x64 HEIC", good, len, 300);
    free(c);
    free(odd);
    free(d);
    free(good);
    free(rgb);
}

static void test_avif(void) {
    uint8_t *rgb = make_rgb(64, 64, 0);
    write_png(tmp_path("avif.png"), rgb, 64, 64, 3, 8);
    size_t len;
    uint8_t *d = sh("heif-enc -A -q 60 %s -o %s", tmp_path("avif.png"), tmp_path("a.avif"))
                     ? load(tmp_path("a.avif"), &len)
                     : NULL;
    CHECK_MSG(d != NULL, "heif-enc -A failed");
    if (d)
        expect_refused("an AVIF from heif-enc -A", d, len,
                       "AVIF images are not accepted; send JPEG, PNG, HEIC or WebP");
    free(d);
    free(rgb);
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void putle32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static void test_webp(void) {
    const int w = 96, h = 64;
    uint8_t *rgb = make_rgb(w, h, 0);
    write_png(tmp_path("w_rgb8.png"), rgb, w, h, 3, 8);
    write_png(tmp_path("w_rgba8.png"), rgb, w, h, 4, 8);
    size_t len;
    uint8_t *d = encode_and_compare("WebP q90", "cwebp -q 90", tmp_path("w_rgb8.png"), tmp_path("q90.webp"), rgb, w, h,
                                    16, 2.5, &len);
    if (d) {
        check_truncations("q90.webp", d, len, "truncated or corrupt WebP: ");
        check_mutations("q90.webp", d, len, 300);
        /* Corrupt headers: the frame size, the RIFF size. */
        uint8_t *e = malloc(len);
        memcpy(e, d, len);
        uint8_t *frame = memmem(e, len, "\x9d\x01\x2a", 3); /* VP8 key frame start code, then 14-bit sizes */
        CHECK(frame != NULL);
        if (frame) {
            frame[3] = 0xff, frame[4] = 0x3f, frame[5] = 0xff, frame[6] = 0x3f;
            expect_refused("VP8 frame of 16383x16383", e, len, "image too large: 16383x16383 (limit 8192x8192 pixels)");
            frame[3] = 0, frame[4] = 0;
            expect_refused("VP8 frame of width 0", e, len, "truncated or corrupt WebP: ");
        }
        memcpy(e, d, len);
        putle32(e + 4, le32(d + 4) + 100);
        char want[160];
        snprintf(want, sizeof want, "truncated or corrupt WebP: the file has %zu bytes but its header announces %zu",
                 len, len + 100);
        expect_refused("RIFF size past the end", e, len, want);
        free(e);
    }
    free(d);
    d = encode_and_compare("WebP lossless", "cwebp -lossless", tmp_path("w_rgb8.png"), tmp_path("lossless.webp"), rgb,
                           w, h, 0, 0, &len);
    if (d) {
        check_truncations("lossless.webp", d, len, "truncated or corrupt WebP: ");
        check_mutations("lossless.webp", d, len, 200);
        /* A lossless stream claiming 6000x6000 costs 4 B/px to check: refused from its header. */
        uint8_t *e = malloc(len);
        memcpy(e, d, len);
        CHECK(!memcmp(e + 12, "VP8L", 4) && e[20] == 0x2f);
        uint32_t bits = (uint32_t)(6000 - 1) | (uint32_t)(6000 - 1) << 14 | (le32(e + 21) & 0xf0000000u);
        putle32(e + 21, bits);
        expect_validate_refused("lossless 6000x6000", e, len,
                                "lossless WebP of 6000x6000 needs 138 MB to check (limit 128 MB per image)");
        char err[256] = "";
        rgb_image img;
        CHECK_MSG(image_decode(e, len, &img, err, sizeof err) == -1 && starts_with(err, "truncated or corrupt WebP: "),
                  "lossless 6000x6000 header on 96x64 data: decode said '%s'", err);
        free(e);
    }
    free(d);
    d = encode_and_compare("WebP q90 with alpha", "cwebp -q 90 -exact", tmp_path("w_rgba8.png"), tmp_path("alpha.webp"),
                           rgb, w, h, 16, 2.5, &len);
    free(d);
    d = encode_and_compare("WebP lossless with alpha", "cwebp -lossless -exact", tmp_path("w_rgba8.png"),
                           tmp_path("alpha_ll.webp"), rgb, w, h, 0, 0, &len);
    free(d);
    /* Animated: refused, with the frame count. */
    uint8_t *quad = make_rgb(w, h, 1);
    write_png(tmp_path("w_quad.png"), quad, w, h, 3, 8);
    free(quad);
    if (sh("img2webp -lossy %s %s -o %s", tmp_path("w_rgb8.png"), tmp_path("w_quad.png"), tmp_path("anim.webp")) &&
        (d = load(tmp_path("anim.webp"), &len))) {
        expect_refused("animated WebP", d, len,
                       "animated WebP (2 frames) is not accepted; send a still image (each frame as its own image)");
        CHECK(image_orientation(d, len) == 1);
        free(d);
    } else {
        CHECK_MSG(0, "img2webp failed");
    }
    free(rgb);
}

/* cwebp -metadata exif copies a JPEG's EXIF and leaves the pixels as stored: shown like the JPEG. */
static void test_webp_orientation(void) {
    const int w = 96, h = 64;
    uint8_t *rgb = make_rgb(w, h, 1);
    for (int k = 1; k <= 8; k++) {
        size_t jlen, len;
        uint8_t *jpg = jpeg_with_orientation(rgb, w, h, k, &jlen);
        char jpath[64], wpath[64];
        snprintf(jpath, sizeof jpath, "exif%d.jpg", k);
        snprintf(wpath, sizeof wpath, "exif%d.webp", k);
        FILE *f = fopen(tmp_path(jpath), "wb");
        if (f) fwrite(jpg, 1, jlen, f), fclose(f);
        uint8_t *d = sh("cwebp -q 95 -metadata exif %s -o %s", tmp_path(jpath), tmp_path(wpath))
                         ? load(tmp_path(wpath), &len)
                         : NULL;
        CHECK_MSG(d != NULL, "cwebp -metadata exif failed");
        rgb_image img = {0}, viajpeg = {0};
        char err[256], what[64];
        snprintf(what, sizeof what, "WebP with EXIF orientation %d", k);
        if (d) {
            CHECK_MSG(image_orientation(d, len) == k, "%s: image_orientation %d", what, image_orientation(d, len));
            if (decode_ok(what, d, len, &img, w, h) == 0 && image_decode(jpg, jlen, &viajpeg, err, sizeof err) == 0) {
                uint8_t a[4][3], b[4][3];
                corners(&img, a);
                corners(&viajpeg, b);
                CHECK_MSG(img.width == viajpeg.width && img.height == viajpeg.height && corners_close(a, b, 40),
                          "%s: not shown as the JPEG", what);
            }
            /* Some writers keep JPEG's "Exif\0\0" in front of the TIFF block: same orientation. */
            uint8_t *x = memmem(d, len, "EXIF", 4);
            if (x && k == 6) {
                size_t at = (size_t)(x - d), n = le32(x + 4);
                uint8_t *e = malloc(len + 6);
                memcpy(e, d, at + 8);
                memcpy(e + at + 8, "Exif\0\0", 6);
                memcpy(e + at + 14, d + at + 8, len - at - 8);
                putle32(e + at + 4, (uint32_t)(n + 6));
                putle32(e + 4, le32(d + 4) + 6);
                CHECK(image_orientation(e, len + 6) == 6);
                free(e);
            }
        }
        image_free(&img);
        image_free(&viajpeg);
        free(d);
        free(jpg);
    }
    free(rgb);
}

/* Stored files are found again after a restart, whatever their format. */
static void test_session_files(void) {
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/images", tmp_dir);
    mkdir(dir, 0755);
    const char *names[] = {"000000.jpg", "000001.png", "000002.heic", "000003.webp"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "wb");
        if (f) fclose(f);
    }
    for (int i = 0; i < 4; i++) {
        CHECK(session_image_find(path, sizeof path, dir, i) == 0 && strcmp(strrchr(path, '/') + 1, names[i]) == 0);
        unlink(path);
    }
    CHECK(session_image_find(path, sizeof path, dir, 4) == -1);
    rmdir(dir);
}

enum { N_THREAD_FILES = 6 };

typedef struct {
    uint8_t *d[N_THREAD_FILES];
    size_t len[N_THREAD_FILES];
    int ok, tried;
} job;

static void *validate_many(void *arg) {
    job *j = arg;
    char err[256];
    int w, h;
    for (int i = 0; i < 2 * N_THREAD_FILES; i++) {
        int f = i % N_THREAD_FILES;
        if (!j->d[f]) continue;
        j->tried++;
        j->ok += image_validate(j->d[f], j->len[f], &w, &h, err, sizeof err) == 0;
    }
    return NULL;
}

/* Threads validating HEIC (plain, alpha, 10-bit, a grid) and WebP at once, on 256 KB stacks (the
 * front's handler threads have 1 MB): libheif's one-time set-up, the gate, stack use. */
static void test_threads(void) {
    static const char *names[N_THREAD_FILES] = {"q90.heic", "alpha.heic", "10bit.heic",
                                                "odd.heic", "q90.webp",   "lossless.webp"};
    job shared = {0};
    for (int f = 0; f < N_THREAD_FILES; f++) shared.d[f] = load(tmp_path(names[f]), &shared.len[f]);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    pthread_t th[6];
    job jobs[6];
    for (int i = 0; i < 6; i++) {
        jobs[i] = shared;
        CHECK(pthread_create(&th[i], &attr, validate_many, &jobs[i]) == 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(jobs[i].ok == jobs[i].tried && jobs[i].tried == 2 * N_THREAD_FILES, "thread %d: %d of %d validated",
                  i, jobs[i].ok, jobs[i].tried);
    }
    pthread_attr_destroy(&attr);
    for (int f = 0; f < N_THREAD_FILES; f++) free(shared.d[f]);
}

/* Median microseconds of validate / decode, for the record. */
static void test_timing(void) {
    const int w = 640, h = 480;
    uint8_t *rgb = make_rgb(w, h, 0);
    uint32_t s = 3;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) { /* texture, as in a photo */
        s = s * 1103515245u + 12345u;
        int v = rgb[i] + (int)((s >> 16) % 25) - 12;
        rgb[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    write_png(tmp_path("t640.png"), rgb, w, h, 3, 8);
    const char *files[2] = {"t640.heic", "t640.webp"};
    if (!sh("heif-enc -q 85 %s -o %s", tmp_path("t640.png"), tmp_path(files[0])) ||
        !sh("cwebp -q 85 %s -o %s", tmp_path("t640.png"), tmp_path(files[1]))) {
        CHECK(0);
        free(rgb);
        return;
    }
    for (int f = 0; f < 2; f++) {
        size_t len;
        uint8_t *d = load(tmp_path(files[f]), &len);
        if (!d) continue;
        double tv[15], td[15];
        for (int r = 0; r < 15; r++) {
            char err[256];
            int vw, vh;
            rgb_image img;
            double t0 = now_s();
            CHECK(image_validate(d, len, &vw, &vh, err, sizeof err) == 0);
            double t1 = now_s();
            CHECK(image_decode(d, len, &img, err, sizeof err) == 0);
            td[r] = (now_s() - t1) * 1e6;
            tv[r] = (t1 - t0) * 1e6;
            image_free(&img);
        }
        for (int i = 0; i < 15; i++) /* insertion sort, for the medians */
            for (int j = i; j > 0 && tv[j] < tv[j - 1]; j--) {
                double x = tv[j];
                tv[j] = tv[j - 1], tv[j - 1] = x;
            }
        for (int i = 0; i < 15; i++)
            for (int j = i; j > 0 && td[j] < td[j - 1]; j--) {
                double x = td[j];
                td[j] = td[j - 1], td[j - 1] = x;
            }
        printf("  timing 640x480 %s (%zu bytes): validate %.0f us, decode %.0f us (median of 15)\n", files[f], len,
               tv[7], td[7]);
        free(d);
    }
    free(rgb);
}

int main(void) {
    if (!sh("command -v heif-enc") || !sh("command -v cwebp") || !sh("command -v img2webp")) {
        fprintf(stderr,
                "test_image_formats: FAIL: heif-enc, cwebp and img2webp are needed (Debian packages libheif-examples "
                "and webp; scripts/install-deps.sh --test installs them)\n");
        return 1;
    }
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/da3-test-formats-XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_sniff();
    test_heic_pixels();
    test_heic_orientation();
    test_heic_grid();
    test_heic_lies();
    test_avif();
    test_webp();
    test_webp_orientation();
    test_session_files();
    test_threads();
    test_timing();
    if (getenv("DA3_TEST_KEEP"))
        printf("  files kept in %s\n", tmp_dir);
    else
        sh("rm -rf %s", tmp_dir);
    CHECK_DONE("test_image_formats");
}
