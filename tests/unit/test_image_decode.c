/* Unit tests for common/image_decode: every JPEG/PNG layout against pixels PIL produced
 * (scripts/gen_preprocess_fixtures.py), EXIF orientations, truncation, garbage, size limits,
 * plus validate/decode timings for a 640x480 q90 JPEG. Data: $DA3_TEST_DATA or tests/data. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>

#include "common/image_decode.h"
#include "common/util.h"
#include "tests/unit/check.h"

static char data_dir[512];

/* Reads tests/data/<sub>/<name> whole; NULL if missing. */
/* Reads <data_dir>/<sub>/<name> whole with common/util's read_file; NULL if missing. */
static uint8_t *load(const char *sub, const char *name, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", data_dir, sub, name);
    uint8_t *buf = read_file(path, len);
    if (!buf) fprintf(stderr, "missing fixture %s\n", path);
    return buf;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static void test_sniff(void) {
    const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0}, png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    CHECK(image_sniff(jpg, sizeof jpg) == IMAGE_FORMAT_JPEG);
    CHECK(image_sniff(png, sizeof png) == IMAGE_FORMAT_PNG);
    CHECK(image_sniff(png, 7) == IMAGE_FORMAT_UNKNOWN);
    CHECK(image_sniff(jpg, 2) == IMAGE_FORMAT_UNKNOWN);
    CHECK(image_sniff((const uint8_t *)"GIF89a", 6) == IMAGE_FORMAT_UNKNOWN);
    CHECK(image_sniff(NULL, 0) == IMAGE_FORMAT_UNKNOWN);
    CHECK(strcmp(image_format_ext(IMAGE_FORMAT_JPEG), "jpg") == 0);
    CHECK(strcmp(image_format_ext(IMAGE_FORMAT_PNG), "png") == 0);
    CHECK(strcmp(image_format_ext(IMAGE_FORMAT_UNKNOWN), "bin") == 0);
    rgb_image img = {0};
    CHECK(image_alloc(&img, 0, 5) == -1 && img.rgb == NULL);
    CHECK(image_alloc(&img, 3, 2) == 0 && img.rgb && img.width == 3 && img.height == 2);
    image_free(&img);
    CHECK(img.rgb == NULL && img.width == 0);
    image_free(&img); /* safe twice */
}

/* Decoding a prefix of the file (or the file with one byte cut) must fail, never crash. */
static void check_truncations(const char *name, const uint8_t *data, size_t len) {
    const char *want =
        image_sniff(data, len) == IMAGE_FORMAT_JPEG ? "truncated or corrupt JPEG: " : "truncated or corrupt PNG: ";
    size_t cuts[] = {len - 1, len - 2, len * 9 / 10, len * 2 / 3, len / 2, len / 4, 40, 12};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        if (cuts[i] < 8 || cuts[i] >= len) continue;
        char err[256] = "";
        rgb_image img;
        int w, h;
        CHECK_MSG(image_decode(data, cuts[i], &img, err, sizeof err) == -1 && img.rgb == NULL, "%s cut to %zu decoded",
                  name, cuts[i]);
        CHECK_MSG(starts_with(err, want), "%s cut to %zu: '%s'", name, cuts[i], err);
        err[0] = 0;
        CHECK_MSG(image_validate(data, cuts[i], &w, &h, err, sizeof err) == -1, "%s cut to %zu validated", name,
                  cuts[i]);
        CHECK_MSG(starts_with(err, want), "%s cut to %zu: '%s'", name, cuts[i], err);
    }
}

/* Every fixture in manifest.txt against the RGB that PIL (or the PNG spec, for 16-bit grey) gives. */
static void test_manifest(void) {
    size_t mlen;
    char *manifest = (char *)load("images", "manifest.txt", &mlen);
    CHECK(manifest != NULL);
    if (!manifest) return;
    manifest = realloc(manifest, mlen + 1);
    manifest[mlen] = 0;
    int cases = 0;
    for (char *line = strtok(manifest, "\n"); line; line = strtok(NULL, "\n")) {
        char name[128], expect_name[128];
        int w, h, tol;
        if (line[0] == '#' || sscanf(line, "%127s %d %d %127s %d", name, &w, &h, expect_name, &tol) != 5) continue;
        size_t len, elen;
        uint8_t *data = load("images", name, &len), *expect = load("images", expect_name, &elen);
        CHECK_MSG(data && expect, "%s", name);
        if (data && expect) {
            char err[256] = "";
            rgb_image img;
            int rc = image_decode(data, len, &img, err, sizeof err);
            CHECK_MSG(rc == 0, "%s: %s", name, err);
            if (rc == 0) {
                CHECK_MSG(img.width == w && img.height == h, "%s: %dx%d, want %dx%d", name, img.width, img.height, w,
                          h);
                int maxd = -1;
                if (img.width == w && img.height == h && elen == (size_t)w * h * 3) {
                    maxd = 0;
                    for (size_t i = 0; i < elen; i++) {
                        int d = abs((int)img.rgb[i] - (int)expect[i]);
                        if (d > maxd) maxd = d;
                    }
                }
                CHECK_MSG(maxd >= 0 && maxd <= tol, "%s: max abs diff %d (allowed %d)", name, maxd, tol);
                printf("  decode %-22s %2dx%-2d max abs diff vs reference %d\n", name, w, h, maxd);
                image_free(&img);
            }
            int vw = 0, vh = 0;
            CHECK_MSG(image_validate(data, len, &vw, &vh, err, sizeof err) == 0, "%s: %s", name, err);
            /* validate reports stored dimensions: swapped for EXIF orientations 5..8 */
            int swapped = starts_with(name, "orient_") && name[7] >= '5';
            CHECK_MSG(swapped ? (vw == h && vh == w) : (vw == w && vh == h), "%s: validate %dx%d", name, vw, vh);
            check_truncations(name, data, len);
            cases++;
        }
        free(data);
        free(expect);
    }
    CHECK(cases == 27);
    free(manifest);
}

/* Independent of PIL: every orientation must display red top-left, green top-right, blue
 * bottom-left, white bottom-right. */
static void test_orientation_semantics(void) {
    static const uint8_t corner[4][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 255}};
    for (int k = 1; k <= 8; k++) {
        char name[32], err[256];
        size_t len;
        snprintf(name, sizeof name, "orient_%d.jpg", k);
        uint8_t *data = load("images", name, &len);
        rgb_image img;
        if (!data || image_decode(data, len, &img, err, sizeof err)) {
            CHECK_MSG(0, "%s did not decode", name);
            free(data);
            continue;
        }
        int xs[4] = {1, img.width - 2, 1, img.width - 2}, ys[4] = {1, 1, img.height - 2, img.height - 2};
        for (int q = 0; q < 4; q++) {
            const uint8_t *p = img.rgb + ((size_t)ys[q] * img.width + xs[q]) * 3;
            for (int c = 0; c < 3; c++)
                CHECK_MSG(abs(p[c] - corner[q][c]) < 40, "%s corner %d channel %d = %d", name, q, c, p[c]);
        }
        image_free(&img);
        free(data);
    }
}

/* A broken Exif block must not crash and must leave the image as stored. */
static void test_bad_exif(void) {
    size_t len;
    uint8_t *data = load("images", "orient_6.jpg", &len);
    if (!data) {
        CHECK(0);
        return;
    }
    uint8_t *exif = memmem(data, len, "Exif\0\0", 6);
    CHECK(exif != NULL);
    if (exif) {
        uint8_t *tiff = exif + 6;
        char err[256];
        rgb_image img;
        memcpy(tiff + 4, "\xff\xff\xff\xf0", 4); /* IFD offset far outside the segment */
        CHECK(image_decode(data, len, &img, err, sizeof err) == 0 && img.width == 12 && img.height == 16);
        image_free(&img);
        memcpy(tiff + 4, "\0\0\0\x08", 4);
        tiff[8] = tiff[9] = 0xff; /* 65535 entries claimed: the walk stops at the segment end */
        CHECK(image_decode(data, len, &img, err, sizeof err) == 0 && img.width == 16 && img.height == 12);
        image_free(&img);
        uint8_t *tag = memmem(tiff, 40, "\x01\x12\x00\x03", 4); /* big-endian orientation entry */
        CHECK(tag != NULL);
        if (tag) {
            tag[9] = 9; /* orientation 9 does not exist: ignored */
            CHECK(image_decode(data, len, &img, err, sizeof err) == 0 && img.width == 12 && img.height == 16);
            image_free(&img);
            tag[9] = 6;
            tag[3] = 2; /* ASCII-typed orientation: ignored */
            CHECK(image_decode(data, len, &img, err, sizeof err) == 0 && img.width == 12 && img.height == 16);
            image_free(&img);
        }
    }
    free(data);
}

static void expect_error(const char *what, const uint8_t *data, size_t len, const char *want, int exact) {
    char err[256] = "";
    rgb_image img;
    int w = -7, h = -7;
    CHECK_MSG(image_decode(data, len, &img, err, sizeof err) == -1 && img.rgb == NULL && img.width == 0, "%s decoded",
              what);
    CHECK_MSG(exact ? strcmp(err, want) == 0 : starts_with(err, want), "%s: decode said '%s', want '%s'", what, err,
              want);
    err[0] = 0;
    CHECK_MSG(image_validate(data, len, &w, &h, err, sizeof err) == -1 && w == -7 && h == -7, "%s validated", what);
    CHECK_MSG(exact ? strcmp(err, want) == 0 : starts_with(err, want), "%s: validate said '%s', want '%s'", what, err,
              want);
}

static void test_errors(void) {
    uint8_t garbage[512];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof garbage; i++) garbage[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 24);
    garbage[0] = 'x';
    expect_error("garbage", garbage, sizeof garbage, "not a JPEG, PNG, HEIC or WebP image", 1);
    expect_error("empty", garbage, 0, "not a JPEG, PNG, HEIC or WebP image", 1);
    expect_error("NULL", NULL, 0, "not a JPEG, PNG, HEIC or WebP image", 1);
    memcpy(garbage, "\xff\xd8\xff", 3);
    expect_error("JPEG magic + garbage", garbage, sizeof garbage, "truncated or corrupt JPEG: ", 0);
    memcpy(garbage, "\x89PNG\r\n\x1a\n", 8);
    expect_error("PNG signature + garbage", garbage, sizeof garbage, "truncated or corrupt PNG: ", 0);

    const char *huge[][2] = {{"huge.png", "image too large: 20000x20000 (limit 8192x8192 pixels)"},
                             {"huge.jpg", "image too large: 20000x20000 (limit 8192x8192 pixels)"},
                             {"wide.png", "image too large: 16385x1 (limit 16384 pixels per side)"}};
    for (int i = 0; i < 3; i++) {
        size_t len;
        uint8_t *data = load("images", huge[i][0], &len);
        CHECK(data != NULL);
        if (data) expect_error(huge[i][0], data, len, huge[i][1], 1);
        free(data);
    }

    /* A flipped bit inside PNG pixel data breaks the IDAT CRC. */
    size_t len;
    uint8_t *png = load("images", "png_rgb8.png", &len);
    if (png) {
        uint8_t *idat = memmem(png, len, "IDAT", 4);
        CHECK(idat != NULL);
        if (idat) {
            idat[10] ^= 0x40;
            expect_error("PNG with corrupt IDAT", png, len, "truncated or corrupt PNG: ", 0);
        }
    }
    free(png);
}

/* Mutated JPEG/PNG bytes: any outcome but a crash or leak (the sanitizer run checks those). */
static void test_mutations(void) {
    const char *names[] = {"jpeg_progressive.jpg", "orient_3.jpg", "png_pal2_adam7.png", "png_rgba16.png"};
    uint32_t s = 99;
    for (int n = 0; n < 4; n++) {
        size_t len;
        uint8_t *orig = load("images", names[n], &len);
        if (!orig) continue;
        uint8_t *data = malloc(len);
        for (int iter = 0; iter < 300; iter++) {
            memcpy(data, orig, len);
            for (int k = 0; k < 3; k++) {
                s = s * 1103515245u + 12345u;
                data[3 + (s >> 8) % (len - 3)] ^= (uint8_t)(1u << ((s >> 4) & 7));
            }
            char err[256];
            rgb_image img;
            int w, h;
            if (image_decode(data, len, &img, err, sizeof err) == 0) {
                CHECK(img.width > 0 && img.height > 0 && img.rgb);
                image_free(&img);
            } else {
                CHECK(img.rgb == NULL && err[0]);
            }
            (void)image_validate(data, len, &w, &h, err, sizeof err);
        }
        free(data);
        free(orig);
    }
}

/* Stray bytes before a marker (some cameras write them) only warn: the image is accepted with the
 * same pixels, like PIL does; a truncated stream stays an error. */
static void test_extraneous_bytes(void) {
    size_t len;
    uint8_t *jpg = load("images", "orient_1.jpg", &len);
    if (!jpg) return;
    CHECK(len > 4 && jpg[len - 2] == 0xFF && jpg[len - 1] == 0xD9);
    uint8_t *odd = malloc(len + 3);
    memcpy(odd, jpg, len - 2);
    memcpy(odd + len - 2, "\x00\x11\x22\xFF\xD9", 5); /* 3 bytes before EOI */
    rgb_image a = {0}, b = {0};
    char err[256] = "";
    CHECK(image_decode(jpg, len, &a, err, sizeof err) == 0);
    CHECK_MSG(image_decode(odd, len + 3, &b, err, sizeof err) == 0, "extraneous bytes refused: %s", err);
    CHECK_MSG(image_validate(odd, len + 3, NULL, NULL, err, sizeof err) == 0, "validate: %s", err);
    CHECK(a.rgb && b.rgb && a.width == b.width && a.height == b.height &&
          !memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3));
    image_free(&a);
    image_free(&b);
    free(odd);
    free(jpg);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median microseconds of `runs` calls (decode when rgb != NULL, else validate). */
static double median_us(const uint8_t *data, size_t len, int decode, int runs) {
    double t[64];
    char err[256];
    for (int i = 0; i < runs; i++) {
        rgb_image img;
        int w, h;
        double t0 = now_s();
        int rc = decode ? image_decode(data, len, &img, err, sizeof err)
                        : image_validate(data, len, &w, &h, err, sizeof err);
        t[i] = (now_s() - t0) * 1e6;
        CHECK_MSG(rc == 0, "timing run failed: %s", err);
        if (decode && rc == 0) image_free(&img);
    }
    qsort(t, (size_t)runs, sizeof t[0], cmp_double);
    return t[runs / 2];
}

/* A photo-like 640x480 JPEG (the preprocess scene plus texture), q90 4:2:0, made in memory. */
static void test_timing(void) {
    size_t len;
    char err[256];
    uint8_t *png = load("preprocess", "in_640x480.png", &len);
    rgb_image img;
    if (!png || image_decode(png, len, &img, err, sizeof err)) {
        free(png);
        CHECK(0);
        return;
    }
    uint32_t s = 7;
    for (size_t i = 0; i < (size_t)img.width * img.height * 3; i++) {
        s = s * 1103515245u + 12345u;
        int v = img.rgb[i] + (int)((s >> 16) % 25) - 12;
        img.rgb[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long jlen = 0;
    CHECK(tj && tjCompress2(tj, img.rgb, img.width, 0, img.height, TJPF_RGB, &jpg, &jlen, TJSAMP_420, 90, 0) == 0);
    const int runs = 41;
    double v = median_us(jpg, jlen, 0, runs), d = median_us(jpg, jlen, 1, runs);
    double pv = median_us(png, len, 0, runs), pd = median_us(png, len, 1, runs);
    printf("  timing 640x480 JPEG q90 (%lu bytes): validate %.0f us, decode %.0f us (median of %d)\n", jlen, v, d,
           runs);
    printf("  timing 640x480 PNG (%zu bytes): validate %.0f us, decode %.0f us\n", len, pv, pd);
    check_truncations("640x480 q90 JPEG", jpg, jlen);
    char msg[256] = "";
    rgb_image tmp;
    CHECK(image_decode(jpg, jlen / 2, &tmp, msg, sizeof msg) == -1);
    CHECK_MSG(strcmp(msg, "truncated or corrupt JPEG: Premature end of JPEG file") == 0, "'%s'", msg);
    tjFree(jpg);
    tjDestroy(tj);
    image_free(&img);
    free(png);
}

/* Offset of the first SOFn marker's body (after FF Cx and the length), or 0. */
static size_t find_sof(const uint8_t *d, size_t len) {
    for (size_t p = 2; p + 9 < len; p++)
        if (d[p] == 0xFF && (d[p + 1] == 0xC0 || d[p + 1] == 0xC2)) return p + 4;
    return 0;
}

/* A progressive (or multi-scan) JPEG needs its whole coefficient buffer even at 1/8 scale: the
 * header says how much, and one over the budget is refused before libjpeg allocates it. */
static void test_validate_budget(void) {
    size_t len, blen;
    char err[256];
    uint8_t *prog = load("images", "jpeg_progressive.jpg", &len), *base = load("images", "orient_1.jpg", &blen);
    if (!prog || !base) return;
    CHECK(image_jpeg_validate_cost(base, blen) == 0);
    long long c = image_jpeg_validate_cost(prog, len);
    CHECK_MSG(c > 0 && c < (long long)IMAGE_VALIDATE_MAX_BYTES, "cost %lld", c);
    CHECK_MSG(image_validate(prog, len, NULL, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(image_jpeg_validate_cost((const uint8_t *)"\xff\xd8\xff", 3) == -1);

    /* The same stream claiming 8192x8192 (what an attacker sends: a few hundred bytes that would
     * make libjpeg reserve 192 MB at 4:2:0). */
    size_t sof = find_sof(prog, len);
    CHECK(sof && prog[sof - 3] == 0xC2);
    uint8_t *big = malloc(len + 2);
    memcpy(big, prog, len);
    big[sof + 1] = big[sof + 3] = 0x20; /* height, width = 0x2000 */
    big[sof + 2] = big[sof + 4] = 0x00;
    long long want = image_jpeg_validate_cost(big, len);
    CHECK_MSG(want >= 192LL << 20, "8192x8192 progressive costs %lld", want);
    err[0] = 0;
    CHECK(image_validate(big, len, NULL, NULL, err, sizeof err) == -1);
    CHECK_MSG(starts_with(err, "progressive JPEG of 8192x8192 needs ") && strstr(err, "(limit 128 MB per image)"),
              "message: %s", err);
    /* Junk before the frame header (libjpeg skips it with a warning) hides nothing from the scan
     * (TurboJPEG's header reader refuses this one outright today; the scan must not rely on it). */
    memmove(big + sof - 2, big + sof - 4, len - (sof - 4));
    big[sof - 4] = 0x00;
    big[sof - 3] = 0x11;
    CHECK(image_jpeg_validate_cost(big, len + 2) == want);
    CHECK(image_validate(big, len + 2, NULL, NULL, err, sizeof err) == -1);
    free(big);

    /* A real progressive photo under the budget validates. */
    int w = 1600, h = 1200;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) rgb[i] = (uint8_t)(i * 7 / 3);
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long jlen = 0;
    CHECK(tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpg, &jlen, TJSAMP_420, 85, TJFLAG_PROGRESSIVE) == 0);
    long long cost = image_jpeg_validate_cost(jpg, jlen);
    /* 200x150 luma blocks (rounded to 2x2 MCUs: 200x150) + 2 x 100x75 chroma, 128 bytes each */
    CHECK_MSG(cost == (200LL * 150 + 2 * 100 * 75) * 128, "cost %lld", cost);
    CHECK_MSG(image_validate(jpg, jlen, &w, &h, err, sizeof err) == 0 && w == 1600 && h == 1200, "%s", err);
    tjFree(jpg);
    tjDestroy(tj);
    free(rgb);
    free(prog);
    free(base);
}

typedef struct {
    const uint8_t *data;
    size_t len;
    int ok;
} validate_job;

static void *validate_many(void *arg) {
    validate_job *j = arg;
    char err[256];
    for (int i = 0; i < 20; i++) j->ok += image_validate(j->data, j->len, NULL, NULL, err, sizeof err) == 0;
    return NULL;
}

/* Many threads validating at once all get through the gate (it bounds, never loses a slot). */
static void test_validate_gate(void) {
    size_t len;
    uint8_t *jpg = load("images", "orient_1.jpg", &len);
    if (!jpg) return;
    CHECK(image_validate_concurrency() == IMAGE_VALIDATE_MAX_CONCURRENT);
    image_validate_set_concurrency(2);
    CHECK(image_validate_concurrency() == 2);
    pthread_t th[8];
    validate_job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (validate_job){jpg, len, 0};
        pthread_create(&th[i], NULL, validate_many, &jobs[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].ok == 20);
    }
    image_validate_set_concurrency(IMAGE_VALIDATE_MAX_CONCURRENT);
    free(jpg);
}

int main(void) {
    snprintf(data_dir, sizeof data_dir, "%s", test_data_dir());
    test_sniff();
    test_manifest();
    test_orientation_semantics();
    test_bad_exif();
    test_errors();
    test_mutations();
    test_extraneous_bytes();
    test_validate_budget();
    test_validate_gate();
    test_timing();
    CHECK_DONE("test_image_decode");
}
