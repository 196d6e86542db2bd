/* Streaming sessions on the worker (worker/stream_session.h) with the demo network at process_res
 * 70 on small synthetic JPEGs in temporary session folders: chunk 0 is the plain pipeline's
 * result bit for bit; later chunks commit state without touching earlier cameras; the deltas'
 * point counts add up to the finalize's, a finalize from scratch gives the same cloud, and a
 * one-chunk finalize the plain pipeline's GLB; a retried committed chunk rebuilds the same delta
 * without the network (also when images arrived since); a wrong stream_from, corrupt or truncated
 * chunk files, a corrupt state.json, an overlap that cannot be aligned and a different image size
 * are refused with a message and leave the state as it was; known cameras chain with identity
 * links. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "common/camera_json.h"
#include "common/session_files.h"
#include "common/util.h"
#include "tests/unit/check.h"
#include "worker/glb.h"
#include "worker/pipeline.h"
#include "worker/stream_session.h"

#define RES 70
#define W 96 /* 96 x 72 -> 70 x 56 at process_res 70 */
#define H 72

static char root[] = "/tmp/da3-stream-session-XXXXXX";

/* ---------- fixtures ---------- */

/* tests/tools/make_jpeg's picture: gradients, a disc and noise, fixed by the seed. */
static void paint(uint8_t *rgb, int w, int h, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1;
#define NEXT() (s ^= s << 13, s ^= s >> 17, s ^= s << 5, s)
    int cx = (int)(NEXT() % (uint32_t)w), cy = (int)(NEXT() % (uint32_t)h);
    int r = 10 + (int)(NEXT() % (uint32_t)(w / 3 + 1));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            int inside = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
            int noise = (int)(NEXT() % 24);
            p[0] = (uint8_t)((x * 255 / w + noise + (inside ? 90 : 0)) & 255);
            p[1] = (uint8_t)((y * 255 / h + noise) & 255);
            p[2] = (uint8_t)(((x + y) * 128 / (w + h) + seed * 37 + (inside ? 0 : 60)) & 255);
        }
#undef NEXT
}

/* Stores image `index` of a session as the front does (images/NNNNNN.jpg). */
static int add_image(const char *image_dir, int index, int w, int h, uint32_t seed) {
    uint8_t *rgb = malloc((size_t)w * h * 3);
    unsigned char *jpeg = NULL;
    unsigned long size = 0;
    paint(rgb, w, h, seed);
    tjhandle tj = tjInitCompress();
    int rc = tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_420, 90, 0);
    char path[700];
    if (rc == 0) rc = session_image_path(path, sizeof path, image_dir, index, IMAGE_FORMAT_JPEG);
    if (rc == 0) rc = write_file_atomic_nosync(path, jpeg, size);
    tjFree(jpeg);
    tjDestroy(tj);
    free(rgb);
    return rc;
}

/* A new session folder <root>/sessions/<name>/images with n images (seeds 1..n). */
static void new_session(const char *name, int n, char *image_dir, size_t cap) {
    snprintf(image_dir, cap, "%s/sessions/%s/images", root, name);
    CHECK(mkdir_p(image_dir) == 0);
    for (int i = 0; i < n; i++) CHECK(add_image(image_dir, i, W, H, (uint32_t)i + 1) == 0);
}

static void file_in_stream(const char *image_dir, const char *file, char *out, size_t cap) {
    char dir[700];
    CHECK(session_stream_dir(dir, sizeof dir, image_dir) == 0);
    snprintf(out, cap, "%s/%s", dir, file);
}

static uint8_t *slurp(const char *image_dir, const char *file, size_t *len) {
    char path[800];
    file_in_stream(image_dir, file, path, sizeof path);
    return read_file(path, len);
}

static void spit(const char *image_dir, const char *file, const void *data, size_t len) {
    char path[800];
    file_in_stream(image_dir, file, path, sizeof path);
    CHECK(write_file_atomic_nosync(path, data, len) == 0);
}

static pipeline_params params(void) {
    pipeline_params p;
    pipeline_params_default(&p);
    p.process_res = RES;
    return p;
}

static int run(da3_model *m, const char *image_dir, int from, int count, int finalize, const pipeline_params *p,
               stream_result *r, char *err, size_t errlen) {
    stream_request rq = {4, 2, from, count, finalize};
    return stream_session_run(m, image_dir, &rq, p, NULL, NULL, r, err, errlen);
}

/* The cloud's GLB bytes (malloc'd). */
static unsigned char *glb_of(const point_cloud *pc, size_t *len) {
    *len = glb_size(pc);
    unsigned char *b = malloc(*len);
    CHECK(b && glb_write(pc, b, *len) == *len);
    return b;
}

static int same_points(const point_cloud *a, const point_cloud *b) {
    return a->n_points == b->n_points && (a->n_points == 0 || (!memcmp(a->xyz, b->xyz, a->n_points * 12) &&
                                                                !memcmp(a->rgba, b->rgba, a->n_points * 4)));
}

static int file_equal(const char *image_dir, const char *file, const uint8_t *data, size_t len) {
    size_t now_len = 0;
    uint8_t *now = slurp(image_dir, file, &now_len);
    int same = now && now_len == len && !memcmp(now, data, len);
    free(now);
    return same;
}

/* ---------- the tests ---------- */

typedef struct {
    point_cloud delta[4];
    float extrinsics0[4 * 12]; /* views 0..3 as the plain pipeline predicts them */
    size_t delta_sum;
    point_cloud final;
} stream_a;

static void test_chunk0_is_the_plain_pipeline(da3_model *m, const char *dir, stream_a *a) {
    char err[512] = "";
    pipeline_params p = params();
    char paths[4][700];
    const char *ptrs[4];
    for (int i = 0; i < 4; i++) {
        CHECK(session_image_find(paths[i], sizeof paths[i], dir, i) == 0);
        ptrs[i] = paths[i];
    }
    pipeline_result plain;
    CHECK_MSG(pipeline_run_files(m, ptrs, NULL, 4, NULL, &p, NULL, NULL, &plain, err, sizeof err) == 0, "%s", err);
    memcpy(a->extrinsics0, plain.pred.extrinsics, sizeof a->extrinsics0);

    stream_result r;
    double t0 = now_mono();
    CHECK_MSG(run(m, dir, 0, 10, 0, &p, &r, err, sizeof err) == 0, "%s", err);
    printf("chunk 0 (4 views): %.0f ms\n", (now_mono() - t0) * 1e3);
    CHECK(r.chunk == 0 && r.end == 4 && r.state.done == 4 && r.rebuilt == 0 && r.chunks_run == 1);
    CHECK_MSG(same_points(&r.cloud, &plain.cloud), "%zu vs %zu points", r.cloud.n_points, plain.cloud.n_points);
    size_t la, lb;
    unsigned char *ga = glb_of(&r.cloud, &la), *gb = glb_of(&plain.cloud, &lb);
    CHECK(la == lb && !memcmp(ga, gb, la));
    printf("chunk 0 vs plain pipeline: %zu vs %zu points, GLB %zu vs %zu bytes, %s\n", r.cloud.n_points,
           plain.cloud.n_points, la, lb, la == lb && !memcmp(ga, gb, la) ? "identical" : "DIFFERENT");
    free(ga), free(gb);
    CHECK(!memcmp(r.state.frame.alignment, plain.cloud.alignment, sizeof plain.cloud.alignment));
    CHECK(!memcmp(r.state.extrinsics, plain.pred.extrinsics, 4 * 12 * sizeof(float)));
    CHECK(r.state.height == 56 && r.state.width == 70 && r.state.known_cameras == 0);

    /* the metadata: every camera so far, this delta's count, chunk 0 without an alignment */
    char *meta = stream_metadata_json(&r, "demo", 0, 123);
    json_t *j = meta ? json_loads(meta, 0, NULL) : NULL;
    CHECK(j != NULL);
    json_t *s = json_object_get(j, "stream");
    CHECK(json_integer_value(json_object_get(j, "num_frames")) == 4);
    CHECK(json_array_size(json_object_get(j, "extrinsics")) == 4);
    CHECK(json_integer_value(json_object_get(j, "num_points")) == (json_int_t)r.cloud.n_points);
    CHECK(json_integer_value(json_object_get(s, "chunk")) == 0 && json_integer_value(json_object_get(s, "end")) == 4);
    CHECK(json_object_get(s, "alignment") == NULL && json_object_get(s, "sim3") != NULL);
    CHECK(json_object_get(json_object_get(j, "model"), "warning") != NULL);
    json_decref(j);
    free(meta);

    a->delta[0] = r.cloud;
    memset(&r.cloud, 0, sizeof r.cloud);
    a->delta_sum = a->delta[0].n_points;
    stream_result_free(&r);
    pipeline_result_free(&plain);
}

static void test_later_chunks(da3_model *m, const char *dir, stream_a *a) {
    char err[512] = "";
    pipeline_params p = params();
    float cams45[2 * 12] = {0};
    for (int k = 1; k <= 3; k++) {
        stream_result r;
        const int from = 4 + 2 * (k - 1);
        double t0 = now_mono();
        CHECK_MSG(run(m, dir, from, 10, 0, &p, &r, err, sizeof err) == 0, "chunk %d: %s", k, err);
        if (r.state.n_chunks != k + 1) continue;
        const stream_chunk_info *c = &r.state.chunks[k];
        printf("chunk %d: images %d..%d (new from %d): %zu points, sim3 s=%.4f, %ld correspondences, rms %.3g, "
               "inliers %.3f, %d iterations; %.0f ms\n",
               k, c->start, c->end - 1, c->new_start, r.cloud.n_points, c->sim3.s, c->kept, c->rms_residual_rel,
               c->inlier_fraction, c->iterations, (now_mono() - t0) * 1e3);
        /* chunk rule: overlap 2, 2 new images per chunk */
        CHECK(r.chunk == k && c->start == from - 2 && c->new_start == from && c->end == from + 2);
        CHECK(r.end == from + 2 && r.state.done == from + 2 && c->aligned);
        /* earlier cameras never change */
        CHECK(!memcmp(r.state.extrinsics, a->extrinsics0, sizeof a->extrinsics0));
        if (k == 1) memcpy(cams45, r.state.extrinsics + 4 * 12, sizeof cams45);
        else CHECK(!memcmp(r.state.extrinsics + 4 * 12, cams45, sizeof cams45));
        char *meta = stream_metadata_json(&r, "demo", 0, 1);
        json_t *j = meta ? json_loads(meta, 0, NULL) : NULL;
        json_t *s = json_object_get(j, "stream");
        CHECK(json_integer_value(json_object_get(j, "num_frames")) == from + 2);
        CHECK(json_array_size(json_object_get(j, "intrinsics")) == (size_t)(from + 2));
        CHECK(json_integer_value(json_object_get(s, "overlap")) == 2 &&
              json_integer_value(json_object_get(s, "new_start")) == from);
        CHECK(json_object_get(json_object_get(s, "alignment"), "inlier_fraction") != NULL);
        json_decref(j);
        free(meta);
        a->delta[k] = r.cloud;
        memset(&r.cloud, 0, sizeof r.cloud);
        a->delta_sum += a->delta[k].n_points;
        stream_result_free(&r);
    }
}

static void test_retry_and_mismatch(da3_model *m, const char *dir, stream_a *a) {
    char err[512] = "";
    pipeline_params p = params();
    size_t state_len = 0;
    uint8_t *state = slurp(dir, "state.json", &state_len);
    CHECK(state != NULL);

    /* the last job again, as after a worker crash once it had committed: same delta, no network */
    stream_result r;
    double t0 = now_mono();
    CHECK_MSG(run(m, dir, 8, 10, 0, &p, &r, err, sizeof err) == 0, "%s", err);
    printf("retried chunk 3 rebuilt in %.1f ms\n", (now_mono() - t0) * 1e3);
    CHECK(r.rebuilt == 1 && r.chunk == 3 && r.end == 10 && r.chunks_run == 0);
    CHECK(same_points(&r.cloud, &a->delta[3]));
    size_t la, lb;
    unsigned char *ga = glb_of(&r.cloud, &la), *gb = glb_of(&a->delta[3], &lb);
    CHECK(la == lb && !memcmp(ga, gb, la));
    free(ga), free(gb);
    stream_result_free(&r);
    /* ... and when images arrived since (a resubmission after the retry failed too): the same
     * committed chunk, its end reported as it is */
    CHECK_MSG(run(m, dir, 8, 14, 0, &p, &r, err, sizeof err) == 0, "%s", err);
    CHECK(r.rebuilt == 1 && r.chunk == 3 && r.end == 10 && same_points(&r.cloud, &a->delta[3]));
    stream_result_free(&r);

    /* stream_from the state does not have */
    const int wrong[3] = {5, 0, 12};
    for (int i = 0; i < 3; i++) {
        err[0] = 0;
        CHECK(run(m, dir, wrong[i], 12, 0, &p, &r, err, sizeof err) == -1);
        CHECK_MSG(strstr(err, "stream state mismatch") != NULL, "%s", err);
    }
    CHECK(run(m, dir, 12, 10, 1, &p, &r, err, sizeof err) == -1 && strstr(err, "mismatch"));
    /* nothing new to stream */
    CHECK(run(m, dir, 10, 10, 0, &p, &r, err, sizeof err) == -1 && strstr(err, "no new images"));
    /* a bad request */
    stream_request bad = {4, 4, 10, 12, 0};
    CHECK(stream_session_run(m, dir, &bad, &p, NULL, NULL, &r, err, sizeof err) == -1 && strstr(err, "overlap"));
    CHECK(file_equal(dir, "state.json", state, state_len));
    free(state);
}

static void test_finalize(da3_model *m, const char *dir, stream_a *a) {
    char err[512] = "";
    pipeline_params p = params();
    stream_result r;
    CHECK_MSG(run(m, dir, 10, 10, 1, &p, &r, err, sizeof err) == 0, "%s", err);
    printf("finalize: %zu points (deltas: %zu + %zu + %zu + %zu = %zu), %d cameras\n", r.cloud.n_points,
           a->delta[0].n_points, a->delta[1].n_points, a->delta[2].n_points, a->delta[3].n_points, a->delta_sum,
           r.cloud.n_cameras);
    CHECK(r.chunk == -1 && r.end == 10 && r.chunks_run == 0 && r.state.n_chunks == 4);
    CHECK(r.cloud.n_points == a->delta_sum && r.cloud.n_cameras == 10);
    /* chunk 0's points come first, as its delta had them (that delta was not downsampled) */
    CHECK(r.cloud.n_points >= a->delta[0].n_points &&
          !memcmp(r.cloud.xyz, a->delta[0].xyz, a->delta[0].n_points * 12));
    /* and the last chunk's last */
    const size_t tail = r.cloud.n_points - a->delta[3].n_points;
    CHECK(!memcmp(r.cloud.xyz + 3 * tail, a->delta[3].xyz, a->delta[3].n_points * 12));
    char *meta = stream_metadata_json(&r, "demo", 0, 1);
    json_t *j = meta ? json_loads(meta, 0, NULL) : NULL;
    CHECK(json_integer_value(json_object_get(json_object_get(j, "stream"), "chunks")) == 4);
    CHECK(json_integer_value(json_object_get(json_object_get(j, "stream"), "end")) == 10);
    CHECK(json_integer_value(json_object_get(j, "num_frames")) == 10);
    json_decref(j);
    free(meta);
    a->final = r.cloud;
    memset(&r.cloud, 0, sizeof r.cloud);
    stream_result_free(&r);

    /* capped: the usual seeded subsample of the same concatenation */
    p.fusion.num_max_points = 1000;
    CHECK(run(m, dir, 10, 10, 1, &p, &r, err, sizeof err) == 0 && r.cloud.n_points == 1000);
    stream_result_free(&r);
}

static void test_finalize_from_scratch(da3_model *m, const stream_a *a) {
    char dir[700], err[512] = "";
    new_session("b", 10, dir, sizeof dir);
    pipeline_params p = params();
    stream_result r;
    double t0 = now_mono();
    CHECK_MSG(run(m, dir, 0, 10, 1, &p, &r, err, sizeof err) == 0, "%s", err);
    printf("finalize from scratch: %d chunks in %.0f ms, %zu points\n", r.chunks_run, (now_mono() - t0) * 1e3,
           r.cloud.n_points);
    CHECK(r.chunks_run == 4 && r.end == 10 && r.state.n_chunks == 4);
    CHECK(same_points(&r.cloud, &a->final));
    stream_result_free(&r);
}

/* A stream of one chunk covering every image, finalized at once: the plain generate's GLB. */
static void test_one_chunk_finalize_is_plain(da3_model *m, const stream_a *a) {
    char dir[700], err[512] = "";
    new_session("d", 4, dir, sizeof dir);
    pipeline_params p = params();
    stream_result r;
    CHECK_MSG(run(m, dir, 0, 4, 1, &p, &r, err, sizeof err) == 0, "%s", err);
    CHECK(r.chunks_run == 1 && r.state.n_chunks == 1 && r.end == 4);
    size_t la, lb;
    unsigned char *ga = glb_of(&r.cloud, &la), *gb = glb_of(&a->delta[0], &lb); /* delta 0 == plain */
    CHECK(la == lb && !memcmp(ga, gb, la));
    printf("one-chunk finalize vs plain pipeline: GLB %zu vs %zu bytes, %s\n", la, lb,
           la == lb && !memcmp(ga, gb, la) ? "identical" : "DIFFERENT");
    free(ga), free(gb);
    stream_result_free(&r);
}

/* Breaks one file of the stream, expects the next chunk to be refused naming it, restores it. */
static void expect_refused(da3_model *m, const char *dir, const char *file, const uint8_t *bytes, size_t len,
                           const char *want1, const char *want2) {
    char err[512] = "";
    size_t orig_len = 0;
    uint8_t *orig = slurp(dir, file, &orig_len);
    CHECK(orig != NULL);
    spit(dir, file, bytes, len);
    pipeline_params p = params();
    stream_result r;
    CHECK(run(m, dir, 10, 12, 0, &p, &r, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, want1) && strstr(err, want2), "%s: %s", file, err);
    printf("refused (%s): %s\n", file, err);
    spit(dir, file, orig, orig_len);
    free(orig);
}

static void test_corrupt_files(da3_model *m, const char *dir) {
    CHECK(add_image(dir, 10, W, H, 11) == 0 && add_image(dir, 11, W, H, 12) == 0);
    size_t len = 0, state_len = 0;
    uint8_t *chunk = slurp(dir, "chunk_0003.bin", &len), *state = slurp(dir, "state.json", &state_len);
    CHECK(chunk && state && len > 1000);
    if (!chunk || !state) return;
    expect_refused(m, dir, "chunk_0003.bin", chunk, len - 7, "chunk_0003.bin", "truncated");
    expect_refused(m, dir, "chunk_0003.bin", chunk, 40, "chunk_0003.bin", "truncated");
    uint8_t *bad = malloc(len);
    memcpy(bad, chunk, len);
    bad[len / 2] ^= 0x10;
    expect_refused(m, dir, "chunk_0003.bin", bad, len, "chunk_0003.bin", "checksum");
    memcpy(bad, chunk, len);
    memcpy(bad + 16, "\x02\x00\x00\x00", 4); /* the header's chunk index */
    expect_refused(m, dir, "chunk_0003.bin", bad, len, "chunk_0003.bin", "chunk 2");
    memcpy(bad, chunk, len);
    memset(bad + 40, 0xff, 8); /* payload size */
    expect_refused(m, dir, "chunk_0003.bin", bad, len, "chunk_0003.bin", "sizes");
    free(bad);
    expect_refused(m, dir, "state.json", (const uint8_t *)"{\"version\": 1, \"do", 18, "state.json", "not valid JSON");
    /* valid JSON, broken chain: done beyond the last chunk */
    char *text = malloc(state_len + 1);
    memcpy(text, state, state_len);
    text[state_len] = 0;
    char *done = strstr(text, "\"done\":10");
    CHECK(done != NULL);
    if (done) {
        memcpy(done, "\"done\":12", 9);
        expect_refused(m, dir, "state.json", (uint8_t *)text, state_len, "state.json", "invalid");
    }
    free(text);
    CHECK(file_equal(dir, "state.json", state, state_len));

    /* a previous chunk with nothing usable in the overlap (its stored depth invalid, the file
     * itself intact): the fit fails, the job names the images, the state stays */
    char sdir[700], err0[512] = "";
    CHECK(session_stream_dir(sdir, sizeof sdir, dir) == 0);
    stream_state st;
    stream_chunk c;
    CHECK_MSG(stream_state_load(sdir, &st, err0, sizeof err0) == 1, "%s", err0);
    CHECK_MSG(stream_chunk_read(sdir, &st.chunks[3], st.height, st.width, &c, err0, sizeof err0) == 0, "%s", err0);
    for (size_t i = 0; i < (size_t)c.pred.n * c.pred.height * c.pred.width; i++) c.pred.depth[i] = 0.0f;
    CHECK(stream_chunk_write(sdir, &c, err0, sizeof err0) == 0);
    stream_chunk_free(&c);
    stream_state_free(&st);
    {
        char e[512] = "";
        pipeline_params p = params();
        stream_result r;
        CHECK(run(m, dir, 10, 12, 0, &p, &r, e, sizeof e) == -1);
        CHECK_MSG(strstr(e, "images 8..11 could not be aligned to the previous chunk") && strstr(e, "too few"), "%s", e);
        printf("refused: %s\n", e);
    }
    CHECK(file_equal(dir, "state.json", state, state_len));
    spit(dir, "chunk_0003.bin", chunk, len);

    /* restored: the next chunk goes through */
    char err[512] = "";
    pipeline_params p = params();
    stream_result r;
    CHECK_MSG(run(m, dir, 10, 12, 0, &p, &r, err, sizeof err) == 0, "%s", err);
    CHECK(r.chunk == 4 && r.end == 12);
    stream_result_free(&r);
    free(chunk);
    free(state);
}

static void test_other_size_refused(da3_model *m, const char *dir) {
    CHECK(add_image(dir, 12, 96, 60, 13) == 0); /* 70 x 42: the chunk's batch is 70 x 42, the stream 70 x 56 */
    size_t state_len = 0;
    uint8_t *state = slurp(dir, "state.json", &state_len);
    char err[512] = "";
    pipeline_params p = params();
    stream_result r;
    CHECK(run(m, dir, 12, 13, 0, &p, &r, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "processed at 70x42") && strstr(err, "70x56") && strstr(err, "one size"), "%s", err);
    printf("refused: %s\n", err);
    CHECK(state && file_equal(dir, "state.json", state, state_len));
    free(state);
}

/* Known cameras: no alignment, identity links, the client's cameras in the state. */
static void test_known_cameras(da3_model *m) {
    char dir[700], err[512] = "";
    new_session("c", 4, dir, sizeof dir);
    known_camera cams[4];
    for (int i = 0; i < 4; i++) {
        memset(&cams[i], 0, sizeof cams[i]);
        for (int k = 0; k < 3; k++) cams[i].extrinsics[5 * k] = 1;
        cams[i].extrinsics[3] = -0.3 * i;
        cams[i].extrinsics[15] = 1;
        const double k[9] = {80, 0, W / 2.0, 0, 80, H / 2.0, 0, 0, 1};
        memcpy(cams[i].intrinsics, k, sizeof k);
        CHECK(camera_file_write(dir, i, &cams[i], 0) == 0);
    }
    pipeline_params p = params();
    stream_request rq = {3, 1, 0, 4, 0};
    stream_result r;
    CHECK_MSG(stream_session_run(m, dir, &rq, &p, NULL, NULL, &r, err, sizeof err) == 0, "%s", err);
    stream_result_free(&r);
    rq.stream_from = 3;
    CHECK_MSG(stream_session_run(m, dir, &rq, &p, NULL, NULL, &r, err, sizeof err) == 0, "%s", err);
    if (r.state.n_chunks == 2) {
        const stream_chunk_info *c = &r.state.chunks[1];
        CHECK(r.state.known_cameras == 1 && !c->aligned && c->sim3.s == 1.0 && c->start == 2 && c->end == 4);
        for (int j = 0; j < 12; j++) CHECK_NEAR(r.state.extrinsics[12 * 3 + j], cams[3].extrinsics[j], 1e-6);
    }
    stream_result_free(&r);
    /* an image without a camera cannot join a stream of known cameras */
    CHECK(add_image(dir, 4, W, H, 5) == 0);
    rq.stream_from = 4;
    rq.image_count = 5;
    CHECK(stream_session_run(m, dir, &rq, &p, NULL, NULL, &r, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "known cameras"), "%s", err);
}

int main(void) {
    CHECK(mkdtemp(root) != NULL);
    char err[512] = "";
    da3_model *m = da3_model_open("demo", "cpu", err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    if (!m) CHECK_DONE("test_stream_session");
    double t0 = now_mono();
    char dir[700];
    new_session("a", 10, dir, sizeof dir);
    stream_a a;
    memset(&a, 0, sizeof a);
    test_chunk0_is_the_plain_pipeline(m, dir, &a);
    test_later_chunks(m, dir, &a);
    test_retry_and_mismatch(m, dir, &a);
    test_finalize(m, dir, &a);
    test_finalize_from_scratch(m, &a);
    test_one_chunk_finalize_is_plain(m, &a);
    test_corrupt_files(m, dir);
    test_other_size_refused(m, dir);
    test_known_cameras(m);
    printf("all streaming tests: %.1f s\n", now_mono() - t0);
    for (int i = 0; i < 4; i++) point_cloud_free(&a.delta[i]);
    point_cloud_free(&a.final);
    da3_model_close(m);
    remove_tree(root);
    CHECK_DONE("test_stream_session");
}
