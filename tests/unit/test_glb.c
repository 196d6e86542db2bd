/* GLB writer: container layout (header, chunk lengths, padding, alignment), the glTF JSON read
 * back with Jansson (meshes, modes, accessors, bounds, byte offsets, hf_alignment), the binary
 * data, exact glb_size, short buffers, and write throughput. The GLBs it makes (with and
 * without cameras, empty, 1 point, many points, a fused scene) go to argv[1] (kept) or a temp
 * folder under $TMPDIR (removed); with DA3_REPO set (scripts/run-tests.sh sets it) they are also
 * run through scripts/validate-glb.sh, the Khronos validator. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/check.h"
#include "worker/fusion.h"
#include "worker/fusion_frustum.h"
#include "worker/fusion_sample.h"
#include "worker/glb.h"

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---------- building clouds ---------- */

static point_cloud make_cloud(size_t n, int cameras, uint64_t seed) {
    point_cloud pc;
    memset(&pc, 0, sizeof pc);
    sample_rng rng;
    sample_rng_seed(&rng, seed);
    pc.n_points = n;
    if (n) {
        pc.xyz = malloc(n * 12);
        pc.rgba = malloc(n * 4);
        for (size_t i = 0; i < 3 * n; i++)
            pc.xyz[i] = ((float)sample_rng_below(&rng, 2000001) - 1000000.0f) / 3e5f; /* [-3.3, 3.3] */
        for (size_t i = 0; i < n; i++) {
            uint32_t c = (uint32_t)sample_rng_below(&rng, 1u << 24);
            pc.rgba[4 * i] = (uint8_t)c, pc.rgba[4 * i + 1] = (uint8_t)(c >> 8);
            pc.rgba[4 * i + 2] = (uint8_t)(c >> 16), pc.rgba[4 * i + 3] = 255;
        }
        if (n > 2) { /* awkward values must round-trip through the JSON bounds */
            pc.xyz[0] = 1e-8f, pc.xyz[1] = -12345.678f, pc.xyz[5] = 0.1f;
            pc.xyz[3] = 98765.4321f, pc.xyz[4] = 3.4e-5f;
        }
    }
    const double a[16] = {0.1, -1.0 / 3, 2e-7, 4.25, 1e300 / 1e299, -0.0, 0.7071067811865476, -1.5,
                          0.3, 0.2, -0.9, 123456.789, 0, 0, 0, 1};
    memcpy(pc.alignment, a, sizeof a);
    if (cameras) {
        pc.n_cameras = cameras;
        pc.camera_lines = malloc((size_t)cameras * 48 * sizeof(float));
        pc.camera_rgba = malloc((size_t)cameras * 4);
        for (int i = 0; i < cameras * 48; i++) pc.camera_lines[i] = (float)sample_rng_below(&rng, 1000) / 300.0f - 1.5f;
        for (int i = 0; i < cameras; i++) frustum_color(i, cameras, pc.camera_rgba + 4 * i);
    }
    return pc;
}

/* A small fused scene: 4 views looking at a wavy wall, with frustums. */
static point_cloud fused_scene(void) {
    const int n = 4, h = 42, w = 56;
    da3_prediction pred = {n, h, w, NULL, NULL, NULL, NULL};
    size_t px = (size_t)n * h * w;
    pred.depth = malloc(px * sizeof(float));
    pred.conf = malloc(px * sizeof(float));
    pred.extrinsics = calloc((size_t)n * 12, sizeof(float));
    pred.intrinsics = calloc((size_t)n * 9, sizeof(float));
    uint8_t *rgb = malloc(px * 3);
    for (int i = 0; i < n; i++) {
        float *k = pred.intrinsics + 9 * i, *e = pred.extrinsics + 12 * i;
        k[0] = k[4] = 50, k[2] = w / 2.0f, k[5] = h / 2.0f, k[8] = 1;
        double ang = 0.15 * i;
        e[0] = (float)cos(ang), e[2] = (float)sin(ang), e[5] = 1, e[8] = (float)-sin(ang), e[10] = (float)cos(ang);
        e[3] = -0.3f * i;
        for (int v = 0; v < h; v++)
            for (int u = 0; u < w; u++) {
                size_t j = ((size_t)i * h + v) * w + u;
                pred.depth[j] = 3.0f + 0.3f * (float)sin(u * 0.2 + i) + 0.01f * v;
                pred.conf[j] = 1.0f + (float)((u * 7 + v * 13 + i) % 50) / 10.0f;
                rgb[3 * j] = (uint8_t)(u * 4), rgb[3 * j + 1] = (uint8_t)(v * 6), rgb[3 * j + 2] = (uint8_t)(60 * i);
            }
    }
    fusion_params p = {10.0, 5000, 1, 42};
    point_cloud pc;
    char err[160] = "";
    CHECK_MSG(fuse_point_cloud(&pred, rgb, &p, &pc, err, sizeof err) == 0, "%s", err);
    free(pred.depth), free(pred.conf), free(pred.extrinsics), free(pred.intrinsics), free(rgb);
    return pc;
}

/* ---------- reading a GLB back ---------- */

typedef struct {
    json_t *root;
    const uint8_t *bin;
    size_t bin_len; /* BIN chunk length (0 without a BIN chunk) */
} glb_doc;

/* Checks the container and parses the JSON. Returns 0 on success. */
static int open_glb(const uint8_t *g, size_t len, glb_doc *d) {
    memset(d, 0, sizeof *d);
    CHECK(len >= 20 && len % 4 == 0);
    if (len < 20) return -1;
    CHECK(rd32(g) == 0x46546C67 && rd32(g + 4) == 2 && rd32(g + 8) == len);
    uint32_t jlen = rd32(g + 12);
    CHECK(rd32(g + 16) == 0x4E4F534A && jlen % 4 == 0 && 20 + (size_t)jlen <= len);
    if (20 + (size_t)jlen > len) return -1;
    const char *text = (const char *)g + 20;
    size_t end = jlen;
    while (end > 0 && text[end - 1] == ' ') end--;
    CHECK(end > 0 && text[end - 1] == '}' && jlen - end < 4); /* padded with < 4 spaces */
    json_error_t jerr;
    d->root = json_loadb(text, jlen, 0, &jerr);
    CHECK_MSG(d->root != NULL, "JSON: %s", jerr.text);
    size_t rest = len - 20 - jlen;
    if (rest) {
        CHECK(rest >= 8);
        uint32_t blen = rd32(g + 20 + jlen);
        CHECK(rd32(g + 24 + jlen) == 0x004E4942 && blen % 4 == 0 && (size_t)blen + 8 == rest);
        CHECK((20 + jlen + 8) % 4 == 0); /* the BIN data starts 4-byte aligned in the file */
        d->bin = g + 28 + jlen;
        d->bin_len = blen;
    }
    return d->root ? 0 : -1;
}

static long jint(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

/* The bytes of accessor a (checking offsets, alignment, stride and bounds); NULL on error. */
static const uint8_t *accessor_data(const glb_doc *d, long a, long *count, size_t *stride) {
    json_t *acc = json_array_get(json_object_get(d->root, "accessors"), (size_t)a);
    if (!acc) return NULL;
    json_t *view = json_array_get(json_object_get(d->root, "bufferViews"), (size_t)jint(acc, "bufferView"));
    CHECK(view && jint(view, "buffer") == 0);
    if (!view) return NULL;
    const char *type = json_string_value(json_object_get(acc, "type"));
    long ct = jint(acc, "componentType");
    size_t elem = !strcmp(type, "VEC3") && ct == 5126 ? 12 : !strcmp(type, "VEC4") && ct == 5121 ? 4 : 0;
    CHECK_MSG(elem, "accessor %ld: unexpected %s/%ld", a, type, ct);
    long acc_off = json_object_get(acc, "byteOffset") ? jint(acc, "byteOffset") : 0;
    long view_off = jint(view, "byteOffset"), view_len = jint(view, "byteLength");
    *stride = json_object_get(view, "byteStride") ? (size_t)jint(view, "byteStride") : elem;
    *count = jint(acc, "count");
    CHECK(acc_off % 4 == 0 && view_off % 4 == 0 && *stride % 4 == 0 && *count > 0);
    CHECK((size_t)acc_off + (size_t)(*count - 1) * *stride + elem <= (size_t)view_len);
    CHECK((size_t)(view_off + view_len) <= d->bin_len);
    if (ct == 5121) CHECK(json_is_true(json_object_get(acc, "normalized")));
    return d->bin + view_off + acc_off;
}

/* POSITION min/max must be exactly the bounds of the data, as float32. */
static void check_bounds(json_t *acc, const uint8_t *data, long count, size_t stride) {
    float mn[3], mx[3];
    for (long i = 0; i < count; i++)
        for (int c = 0; c < 3; c++) {
            float v;
            memcpy(&v, data + (size_t)i * stride + 4 * c, 4);
            if (!i || v < mn[c]) mn[c] = v;
            if (!i || v > mx[c]) mx[c] = v;
        }
    json_t *jmin = json_object_get(acc, "min"), *jmax = json_object_get(acc, "max");
    CHECK(json_array_size(jmin) == 3 && json_array_size(jmax) == 3);
    for (int c = 0; c < 3; c++) {
        CHECK_MSG((float)json_number_value(json_array_get(jmin, c)) == mn[c], "min[%d] %.9g", c, mn[c]);
        CHECK_MSG((float)json_number_value(json_array_get(jmax, c)) == mx[c], "max[%d] %.9g", c, mx[c]);
    }
}

/* Full structural and content check of a GLB written for pc. */
static void check_glb(const point_cloud *pc, const uint8_t *g, size_t len) {
    glb_doc d;
    if (open_glb(g, len, &d) != 0) return;
    json_t *r = d.root;
    json_t *asset = json_object_get(r, "asset");
    CHECK(!strcmp(json_string_value(json_object_get(asset, "version")), "2.0"));
    CHECK(!strcmp(json_string_value(json_object_get(asset, "generator")), "da3-server"));
    CHECK(jint(r, "scene") == 0);
    json_t *scene = json_array_get(json_object_get(r, "scenes"), 0);
    json_t *scene_nodes = json_object_get(scene, "nodes");
    CHECK(json_array_size(scene_nodes) == 1 && json_integer_value(json_array_get(scene_nodes, 0)) == 0);
    json_t *align = json_object_get(json_object_get(scene, "extras"), "hf_alignment");
    CHECK(json_array_size(align) == 4);
    for (int i = 0; i < 16; i++) {
        double v = json_number_value(json_array_get(json_array_get(align, i / 4), i % 4));
        CHECK_MSG(v == pc->alignment[i], "hf_alignment[%d] %.17g != %.17g", i, v, pc->alignment[i]);
    }

    const int has_points = pc->n_points > 0, n_meshes = has_points + pc->n_cameras;
    json_t *nodes = json_object_get(r, "nodes"), *meshes = json_object_get(r, "meshes");
    json_t *world = json_array_get(nodes, 0);
    CHECK(!strcmp(json_string_value(json_object_get(world, "name")), "world"));
    CHECK(json_array_size(nodes) == (size_t)n_meshes + 1 && json_array_size(meshes) == (size_t)n_meshes);
    CHECK(json_array_size(json_object_get(world, "children")) == (size_t)n_meshes);
    if (!n_meshes) {
        CHECK(!json_object_get(r, "buffers") && !json_object_get(r, "accessors") && !json_object_get(r, "materials"));
        CHECK(d.bin_len == 0);
        json_decref(r);
        return;
    }
    json_t *buf = json_array_get(json_object_get(r, "buffers"), 0);
    CHECK(json_array_size(json_object_get(r, "buffers")) == 1 && !json_object_get(buf, "uri"));
    size_t blen = (size_t)jint(buf, "byteLength");
    CHECK(blen <= d.bin_len && d.bin_len <= blen + 3);
    CHECK(json_array_size(json_object_get(r, "materials")) == 1);

    for (int k = 0; k < n_meshes; k++) {
        json_t *node = json_array_get(nodes, (size_t)k + 1);
        CHECK(json_integer_value(json_array_get(json_object_get(world, "children"), (size_t)k)) == k + 1);
        CHECK(jint(node, "mesh") == k);
        json_t *prims = json_object_get(json_array_get(meshes, (size_t)k), "primitives");
        CHECK(json_array_size(prims) == 1);
        json_t *prim = json_array_get(prims, 0), *attrs = json_object_get(prim, "attributes");
        int is_points = has_points && k == 0;
        CHECK(jint(prim, "mode") == (is_points ? 0 : 1) && jint(prim, "material") == 0);
        CHECK(!json_object_get(prim, "indices"));
        long pa = jint(attrs, "POSITION"), ca = jint(attrs, "COLOR_0"), pcount, ccount;
        size_t pstride, cstride;
        const uint8_t *pos = accessor_data(&d, pa, &pcount, &pstride);
        const uint8_t *col = accessor_data(&d, ca, &ccount, &cstride);
        if (!pos || !col) continue;
        CHECK(pcount == ccount);
        check_bounds(json_array_get(json_object_get(r, "accessors"), (size_t)pa), pos, pcount, pstride);
        if (is_points) {
            CHECK(pcount == (long)pc->n_points && pstride == 12 && cstride == 4);
            CHECK(!memcmp(pos, pc->xyz, pc->n_points * 12) && !memcmp(col, pc->rgba, pc->n_points * 4));
        } else {
            int cam = k - has_points;
            CHECK(pcount == 16); /* LINES: an even, non-zero count */
            CHECK(!memcmp(pos, pc->camera_lines + 48 * cam, 16 * 12));
            for (int v = 0; v < 16; v++) CHECK(!memcmp(col + v * cstride, pc->camera_rgba + 4 * cam, 4));
        }
    }
    json_decref(r);
}

/* Writes pc, checks it, saves it as dir/name. */
static void roundtrip(const point_cloud *pc, const char *dir, const char *name) {
    size_t n = glb_size(pc);
    uint8_t *g = malloc(n + 8);
    memset(g, 0xAB, n + 8);
    CHECK(glb_write(pc, g, n - 1) == 0); /* a short buffer is refused */
    CHECK(glb_write(pc, g, n + 8) == n);
    CHECK(g[n] == 0xAB); /* nothing past the end */
    check_glb(pc, g, n);
    uint8_t *again = malloc(n);
    CHECK(glb_write(pc, again, n) == n && !memcmp(g, again, n)); /* deterministic */
    free(again);
    if (!dir) {
        free(g);
        return;
    }
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (f) {
        CHECK(fwrite(g, 1, n, f) == n);
        fclose(f);
    }
    printf("wrote %s (%zu bytes)\n", path, n);
    free(g);
}

static void throughput(void) {
    point_cloud pc = make_cloud(1700000, 10, 5);
    size_t n = glb_size(&pc);
    uint8_t *g = malloc(n);
    memset(g, 0, n); /* fault the pages in first: the worker writes into a mapped arena */
    double best = 1e30, best_size = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_ms();
        size_t s = glb_size(&pc);
        double t1 = now_ms();
        CHECK(glb_write(&pc, g, n) == s);
        double t2 = now_ms();
        best_size = t1 - t0 < best_size ? t1 - t0 : best_size;
        best = t2 - t1 < best ? t2 - t1 : best;
    }
    printf("glb: 1.7M points + 10 cameras = %.1f MB: glb_size %.2f ms, glb_write %.2f ms (%.0f MB/s), best of 5\n",
           n / 1e6, best_size, best, n / 1e6 / (best / 1e3));
    check_glb(&pc, g, n);
    free(g);
    point_cloud_free(&pc);
}

int main(int argc, char **argv) {
    char dir[4096];
    int temp_dir = argc < 2;
    if (temp_dir) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/da3_test_glb_XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    } else {
        snprintf(dir, sizeof dir, "%s", argv[1]);
        mkdir(dir, 0755);
    }

    const char *names[] = {"cloud_cameras.glb", "cloud_only.glb", "empty_cameras.glb", "empty.glb",
                           "one_point.glb",     "one_point_camera.glb", "many_points.glb", "fused_scene.glb"};
    point_cloud clouds[8] = {make_cloud(1000, 3, 1), make_cloud(1000, 0, 2), make_cloud(0, 2, 3),
                             make_cloud(0, 0, 4),    make_cloud(1, 0, 5),    make_cloud(1, 1, 6),
                             make_cloud(300000, 10, 7), fused_scene()};
    CHECK(clouds[7].n_points > 0 && clouds[7].n_points <= 5000 && clouds[7].n_cameras == 4);
    for (int i = 0; i < 8; i++) {
        roundtrip(&clouds[i], dir, names[i]);
        point_cloud_free(&clouds[i]);
    }
    /* Every small size (the bounds loop works 4 points at a time). */
    for (size_t n = 2; n <= 9; n++) {
        point_cloud pc = make_cloud(n, (int)n % 2, 100 + n);
        roundtrip(&pc, NULL, NULL);
        point_cloud_free(&pc);
    }
    /* The empty file is just the header and the JSON chunk. */
    point_cloud empty = make_cloud(0, 0, 4);
    size_t empty_size = glb_size(&empty);
    uint8_t small[2048];
    CHECK(empty_size < sizeof small && glb_write(&empty, small, sizeof small) == empty_size);
    CHECK(rd32(small + 12) + 20 == empty_size);
    CHECK(glb_write(&empty, NULL, 0) == 0);

    throughput();

    const char *repo = getenv("DA3_REPO");
    fflush(stdout); /* keep our lines before the validator's */
    if (repo && *repo) {
        char cmd[9000];
        snprintf(cmd, sizeof cmd, "'%s/scripts/validate-glb.sh' '%s'/*.glb", repo, dir);
        int rc = system(cmd);
        CHECK_MSG(rc == 0, "glTF validator failed on %s (rc %d)", dir, rc);
    } else {
        printf("validator skipped (DA3_REPO unset): scripts/validate-glb.sh %s/*.glb\n", dir);
    }
    if (temp_dir && repo && *repo) {
        char path[4200];
        for (int i = 0; i < 8; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            unlink(path);
        }
        rmdir(dir);
    }
    CHECK_DONE("test_glb");
}
