/* Unit tests for worker/preprocess (and the cv2-compatible kernels in worker/resize): output sizes
 * and pixels against DA3's Python preprocessing run with cv2 (scripts/gen_preprocess_fixtures.py),
 * normalisation against float32 numpy, batch centre-crops, errors, and timings.
 * Data: $DA3_TEST_DATA or tests/data. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/image_decode.h"
#include "common/util.h"
#include "tests/unit/check.h"
#include "worker/preprocess.h"

static char data_dir[512];

/* Reads <data_dir>/preprocess/<name> whole (NUL-terminated, by common/util's read_file). */
static uint8_t *load(const char *name, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/preprocess/%s", data_dir, name);
    uint8_t *buf = read_file(path, len);
    if (!buf) fprintf(stderr, "missing fixture %s\n", path);
    return buf;
}

static int load_png(const char *name, rgb_image *img) {
    size_t len;
    char err[256];
    uint8_t *data = load(name, &len);
    int rc = data ? image_decode(data, len, img, err, sizeof err) : -1;
    CHECK_MSG(rc == 0, "%s: %s", name, data ? err : "missing");
    free(data);
    return rc;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_method_names(void) {
    const char *names[] = {"upper_bound_resize", "upper_bound_crop", "lower_bound_resize", "lower_bound_crop"};
    for (int i = 0; i < 4; i++) {
        resize_method m;
        CHECK(resize_method_parse(names[i], &m) == 0 && (int)m == i);
        CHECK(strcmp(resize_method_name((resize_method)i), names[i]) == 0);
    }
    resize_method m = RESIZE_LOWER_BOUND_CROP;
    CHECK(resize_method_parse("upper_bound", &m) == -1 && m == RESIZE_LOWER_BOUND_CROP);
    CHECK(resize_method_parse("", &m) == -1);
    CHECK(resize_method_parse(NULL, &m) == -1);
}

/* dims.txt: DA3's output size for random inputs, its documented examples and exact .5 ties. */
static void test_output_sizes(void) {
    size_t len;
    char *text = (char *)load("dims.txt", &len);
    CHECK(text != NULL);
    if (!text) return;
    int rows = 0, refused = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        int w, h, res, ew, eh, ow = -1, oh = -1;
        char name[64], err[256] = "";
        resize_method m;
        if (line[0] == '#' || sscanf(line, "%d %d %d %63s %d %d", &w, &h, &res, name, &ew, &eh) != 6) continue;
        CHECK(resize_method_parse(name, &m) == 0);
        int rc = preprocess_output_size(w, h, res, m, &ow, &oh, err, sizeof err);
        if (ew <= 0) {
            const char *why = ew == 0 ? "too small" : "too large";
            CHECK_MSG(rc == -1 && strstr(err, why), "%s: want '%s', got %dx%d '%s'", line, why, ow, oh, err);
            refused++;
        } else {
            CHECK_MSG(rc == 0 && ow == ew && oh == eh, "%s: got %dx%d '%s'", line, ow, oh, err);
        }
        rows++;
    }
    CHECK(rows > 200 && refused > 10);
    free(text);
}

/* cases.txt: full preprocess_resize output against the cv2-made image. */
static void test_pixels_vs_cv2(void) {
    size_t len;
    char *text = (char *)load("cases.txt", &len);
    CHECK(text != NULL);
    if (!text) return;
    int cases = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char in_name[128], method[64], out_name[160], err[256] = "";
        int res, ew, eh;
        resize_method m;
        if (line[0] == '#' || sscanf(line, "%127s %63s %d %d %d %159s", in_name, method, &res, &ew, &eh, out_name) != 6)
            continue;
        rgb_image in, want, got;
        CHECK(resize_method_parse(method, &m) == 0);
        if (load_png(in_name, &in)) continue;
        if (load_png(out_name, &want)) {
            image_free(&in);
            continue;
        }
        int rc = preprocess_resize(&in, res, m, &got, err, sizeof err);
        CHECK_MSG(rc == 0, "%s: %s", out_name, err);
        if (rc == 0) {
            CHECK_MSG(got.width == ew && got.height == eh && want.width == ew && want.height == eh, "%s: %dx%d",
                      out_name, got.width, got.height);
            int maxd = -1;
            long ndiff = 0;
            if (got.width == want.width && got.height == want.height) {
                maxd = 0;
                for (size_t i = 0; i < (size_t)ew * eh * 3; i++) {
                    int d = abs((int)got.rgb[i] - (int)want.rgb[i]);
                    ndiff += d != 0;
                    if (d > maxd) maxd = d;
                }
            }
            CHECK_MSG(maxd >= 0 && maxd <= 1, "%s: max abs diff %d", out_name, maxd);
            printf("  %3dx%-3d %-18s res %3d -> %3dx%-3d  max abs diff vs cv2 %d (%ld values differ)\n", in.width,
                   in.height, method, res, ew, eh, maxd, ndiff);
            image_free(&got);
        }
        image_free(&in);
        image_free(&want);
        cases++;
    }
    CHECK(cases == 16);
    free(text);
}

/* A 28x14 view holding all 256 values per channel: the batch floats must equal, bit for bit,
 * numpy's float32 (v / 255 - mean) / std (norm.f32, little-endian). */
static void test_normalisation(void) {
    size_t len;
    uint8_t *table = load("norm.f32", &len);
    CHECK(table && len == 3 * 256 * 4);
    if (!table || len != 3 * 256 * 4) {
        free(table);
        return;
    }
    rgb_image v;
    CHECK(image_alloc(&v, 28, 14) == 0);
    for (int i = 0; i < 28 * 14; i++) {
        v.rgb[3 * i] = (uint8_t)i;
        v.rgb[3 * i + 1] = (uint8_t)(i * 7 + 3);
        v.rgb[3 * i + 2] = (uint8_t)(255 - i);
    }
    da3_batch b;
    char err[256];
    CHECK(preprocess_batch(&v, 1, &b, err, sizeof err) == 0 && b.n == 1 && b.width == 28 && b.height == 14);
    static const double mean[3] = {0.485, 0.456, 0.406}, stdev[3] = {0.229, 0.224, 0.225};
    int mismatches = 0;
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < 28 * 14; i++) {
            uint8_t px = v.rgb[3 * i + c];
            const uint8_t *e = table + ((size_t)c * 256 + px) * 4;
            uint32_t bits = (uint32_t)e[0] | (uint32_t)e[1] << 8 | (uint32_t)e[2] << 16 | (uint32_t)e[3] << 24;
            float want, got = b.input[(size_t)c * 28 * 14 + i];
            memcpy(&want, &bits, 4);
            mismatches += memcmp(&want, &got, 4) != 0;
            CHECK_NEAR(got, (px / 255.0 - mean[c]) / stdev[c], 1e-6);
            CHECK(b.rgb[3 * i + c] == px);
        }
    }
    CHECK_MSG(mismatches == 0, "%d normalised values differ from float32 numpy", mismatches);
    printf("  normalisation: %d of %d values bit-identical to float32 numpy\n", 3 * 28 * 14 - mismatches, 3 * 28 * 14);
    da3_batch_free(&b);
    CHECK(b.input == NULL && b.rgb == NULL && b.n == 0);
    da3_batch_free(&b);
    image_free(&v);
    free(table);
}

/* Views of different sizes are centre-cropped to the smallest H and W, torchvision-style. */
static void test_batch_centre_crop(void) {
    const int sizes[3][2] = {{140, 112}, {126, 98}, {154, 126}}; /* W x H */
    rgb_image views[3];
    for (int i = 0; i < 3; i++) {
        CHECK(image_alloc(&views[i], sizes[i][0], sizes[i][1]) == 0);
        for (int y = 0; y < sizes[i][1]; y++)
            for (int x = 0; x < sizes[i][0]; x++) {
                uint8_t *p = views[i].rgb + ((size_t)y * sizes[i][0] + x) * 3;
                p[0] = (uint8_t)x, p[1] = (uint8_t)y, p[2] = (uint8_t)(i * 50);
            }
    }
    da3_batch b;
    char err[256];
    CHECK(preprocess_batch(views, 3, &b, err, sizeof err) == 0);
    CHECK(b.n == 3 && b.width == 126 && b.height == 98);
    const int left[3] = {7, 0, 14}, top[3] = {7, 0, 14};
    for (int i = 0; i < 3 && b.rgb; i++) {
        const uint8_t *v = b.rgb + (size_t)i * 98 * 126 * 3;
        for (int y = 0; y < 98; y += 97)
            for (int x = 0; x < 126; x += 125) {
                const uint8_t *p = v + ((size_t)y * 126 + x) * 3;
                CHECK_MSG(p[0] == x + left[i] && p[1] == y + top[i] && p[2] == i * 50, "view %d (%d,%d) = %d,%d", i, x,
                          y, p[0], p[1]);
            }
        /* planar float layout: (N,3,H,W) */
        float g = b.input[(((size_t)i * 3 + 1) * 98 + 5) * 126 + 9];
        CHECK_NEAR(g, ((5 + top[i]) / 255.0 - 0.456) / 0.224, 1e-6);
    }
    da3_batch_free(&b);

    CHECK(preprocess_batch(views, 0, &b, err, sizeof err) == -1 && b.input == NULL);
    views[1].width = 125; /* not a multiple of 14 */
    CHECK(preprocess_batch(views, 3, &b, err, sizeof err) == -1 && strstr(err, "view 1"));
    views[1].width = 126;
    for (int i = 0; i < 3; i++) image_free(&views[i]);
}

static void test_errors(void) {
    rgb_image img, out;
    char err[256] = "";
    CHECK(image_alloc(&img, 5, 600) == 0);
    memset(img.rgb, 100, (size_t)5 * 600 * 3);
    CHECK(preprocess_resize(&img, 504, RESIZE_UPPER_BOUND_RESIZE, &out, err, sizeof err) == -1 && out.rgb == NULL);
    CHECK_MSG(strstr(err, "too small"), "'%s'", err);
    CHECK(preprocess_resize(&img, 504, RESIZE_UPPER_BOUND_CROP, &out, err, sizeof err) == -1);
    CHECK(preprocess_resize(&img, 0, RESIZE_UPPER_BOUND_RESIZE, &out, err, sizeof err) == -1);
    CHECK(preprocess_resize(&img, 504, (resize_method)7, &out, err, sizeof err) == -1);
    /* the shortest side already equals process_res (no resize); flooring 5 to 14 leaves nothing */
    CHECK(preprocess_resize(&img, 5, RESIZE_LOWER_BOUND_CROP, &out, err, sizeof err) == -1);
    image_free(&img);
    /* lower bound of a 4x5000 strip at 504 would be 504x630000: refused before allocating */
    CHECK(image_alloc(&img, 4, 5000) == 0);
    memset(img.rgb, 100, (size_t)4 * 5000 * 3);
    CHECK(preprocess_resize(&img, 504, RESIZE_LOWER_BOUND_RESIZE, &out, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "too large"), "'%s'", err);
    image_free(&img);

    /* Already the right size: an exact copy. */
    CHECK(image_alloc(&img, 504, 378) == 0);
    for (size_t i = 0; i < (size_t)504 * 378 * 3; i++) img.rgb[i] = (uint8_t)(i * 31 >> 3);
    CHECK(preprocess_resize(&img, 504, RESIZE_UPPER_BOUND_RESIZE, &out, err, sizeof err) == 0);
    CHECK(out.width == 504 && out.height == 378 && memcmp(out.rgb, img.rgb, (size_t)504 * 378 * 3) == 0);
    image_free(&out);
    image_free(&img);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median ms of preprocess_resize + preprocess_batch (normalisation) for one source size. */
static void time_case(int w, int h, int res, resize_method m) {
    rgb_image img, out;
    da3_batch b;
    char err[256];
    double tr[15], tn[15];
    if (image_alloc(&img, w, h)) return;
    uint32_t s = 1;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) img.rgb[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 24);
    for (int k = 0; k < 15; k++) {
        double t0 = now_s();
        int rc = preprocess_resize(&img, res, m, &out, err, sizeof err);
        double t1 = now_s();
        rc = rc ? rc : preprocess_batch(&out, 1, &b, err, sizeof err);
        tr[k] = (t1 - t0) * 1e3;
        tn[k] = (now_s() - t1) * 1e3;
        CHECK_MSG(rc == 0, "%s", err);
        if (rc == 0) da3_batch_free(&b);
        image_free(&out);
    }
    qsort(tr, 15, sizeof tr[0], cmp_double);
    qsort(tn, 15, sizeof tn[0], cmp_double);
    int ow = 0, oh = 0;
    preprocess_output_size(w, h, res, m, &ow, &oh, err, sizeof err);
    printf("  timing %4dx%-4d -> %3dx%-3d %-18s resize %6.2f ms, crop+normalise %5.2f ms (median of 15)\n", w, h, ow,
           oh, resize_method_name(m), tr[7], tn[7]);
    image_free(&img);
}

/* Camera matrices follow the same resizes and crops as the pixels (DA3's _resize_ixt/_crop_ixt). */
static void test_intrinsics(void) {
    char err[256];
    double k[9], out[9];
    const double k640[9] = {500, 0, 320, 0, 500, 240, 0, 0, 1};
    CHECK(preprocess_intrinsics(k640, 640, 480, 504, RESIZE_UPPER_BOUND_RESIZE, out, err, sizeof err) == 0);
    const double e640[9] = {393.75, 0, 252, 0, 393.75, 189, 0, 0, 1};
    for (int i = 0; i < 9; i++) CHECK_NEAR(out[i], e640[i], 1e-9);
    /* 1000x700 -> 504x353 by the boundary resize; then 353 -> 350 by a second resize ... */
    const double k1000[9] = {800, 0, 500, 0, 800, 350, 0, 0, 1};
    CHECK(preprocess_intrinsics(k1000, 1000, 700, 504, RESIZE_UPPER_BOUND_RESIZE, out, err, sizeof err) == 0);
    const double e_resize[9] = {403.2, 0, 252, 0, 400, 175, 0, 0, 1};
    for (int i = 0; i < 9; i++) CHECK_NEAR(out[i], e_resize[i], 1e-9);
    /* ... or by a centre crop of 3 rows, (3 // 2) = 1 off the top. */
    CHECK(preprocess_intrinsics(k1000, 1000, 700, 504, RESIZE_UPPER_BOUND_CROP, out, err, sizeof err) == 0);
    const double e_crop[9] = {403.2, 0, 252, 0, 800 * 353 / 700.0, 350 * 353 / 700.0 - 1, 0, 0, 1};
    for (int i = 0; i < 9; i++) CHECK_NEAR(out[i], e_crop[i], 1e-9);
    /* In place, and refused like the pixels are. */
    memcpy(k, k640, sizeof k);
    CHECK(preprocess_intrinsics(k, 640, 480, 504, RESIZE_UPPER_BOUND_RESIZE, k, err, sizeof err) == 0);
    CHECK_NEAR(k[2], 252, 1e-9);
    CHECK(preprocess_intrinsics(k640, 0, 480, 504, RESIZE_UPPER_BOUND_RESIZE, out, err, sizeof err) == -1);
}

int main(void) {
    snprintf(data_dir, sizeof data_dir, "%s", test_data_dir());
    test_method_names();
    test_output_sizes();
    test_pixels_vs_cv2();
    test_normalisation();
    test_batch_centre_crop();
    test_errors();
    test_intrinsics();
    time_case(640, 480, 504, RESIZE_UPPER_BOUND_RESIZE);
    time_case(1920, 1080, 504, RESIZE_UPPER_BOUND_RESIZE);
    time_case(4032, 3024, 504, RESIZE_UPPER_BOUND_RESIZE);
    time_case(100, 75, 504, RESIZE_UPPER_BOUND_RESIZE);
    CHECK_DONE("test_preprocess");
}
