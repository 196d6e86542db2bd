/* Streaming reconstruction on the worker: state files, chunk files, one chunk, the finalize.
 * See stream_session.h for the model and docs/model.md ("Streaming: chunks on the worker").
 *
 * Why the chunk file holds the session-frame prediction and not the network's raw one: the next
 * chunk aligns against it and the finalize fuses it, both in the session frame, so storing it
 * mapped means neither ever composes Sim(3)s again, and the delta, its rebuild after a crash and
 * the finalize all fuse the very same float arrays (hence the same points, bit for bit). */
#include "worker/stream_session.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/camera_json.h"
#include "common/session_files.h"
#include "common/util.h"
#include "worker/fusion_sample.h"
#include "worker/session_input.h"

static void report(pipeline_progress_fn fn, void *ctx, const char *stage, double progress, const char *message) {
    if (fn) fn(ctx, stage, progress, message);
}

/* ---------- chunk files ----------
 * A 64-byte header, then the payload. Host byte order: x86 and ARM Linux are little-endian, and
 * the byte-order mark refuses a file moved to a host of the other kind rather than misread it.
 *    0 char[8] "DA3CHUNK"   8 u32 version   12 u32 header bytes (64)
 *   16 i32 index  20 i32 start  24 i32 new_start  28 i32 end  32 i32 height  36 i32 width
 *   40 u64 payload bytes  48 u64 payload checksum  56 u32 byte-order mark 0x01020304  60 u32 0
 * payload, F = end - start frames of H x W: depth f32 (F,H,W), confidence f32 (F,H,W),
 * intrinsics f32 (F,3,3), extrinsics f32 (F,3,4) world-to-camera in the session frame,
 * processed RGB u8 (F,H,W,3). Floats first keeps every array aligned (malloc'd block + 64). */
#define CHUNK_MAGIC "DA3CHUNK"
#define CHUNK_HEADER 64
#define CHUNK_BYTE_ORDER 0x01020304u

typedef struct {
    char magic[8];
    uint32_t version, header_bytes;
    int32_t index, start, new_start, end, height, width;
    uint64_t payload_bytes, checksum;
    uint32_t byte_order, zero;
} chunk_header;
_Static_assert(sizeof(chunk_header) == CHUNK_HEADER, "the chunk header is 64 bytes");

/* Payload bytes for frames x height x width within the reading bounds; -1 outside them. */
static int payload_size(int frames, int height, int width, uint64_t *out) {
    if (frames < 1 || frames > STREAM_MAX_FRAMES || height < 1 || height > STREAM_MAX_SIDE || width < 1 ||
        width > STREAM_MAX_SIDE)
        return -1;
    const uint64_t plane = (uint64_t)height * (uint64_t)width;
    const uint64_t n = (uint64_t)frames * (11 * plane + 21 * sizeof(float)); /* at most ~1.2e13 */
    if (n > SIZE_MAX - CHUNK_HEADER) return -1;
    *out = n;
    return 0;
}

/* An FNV-1a-style hash over 8-byte words, with an xorshift after each multiply so that high bits
 * reach the low ones: catches a torn or bit-rotted file at ~1 ns per 8 bytes (a byte-wise FNV
 * would cost more than the write). Not cryptographic: the files are the server's own. */
static uint64_t payload_checksum(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Creates the stream folder itself, never its parents: if the session folder is gone (deleted
 * while a cancelled job still ran) the write must fail, not bring back a ghost session folder. */
static int ensure_stream_dir(const char *dir) {
    return mkdir(dir, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

/* Points the chunk's arrays into its block (whose header and sizes are already known good). */
static void chunk_attach_arrays(stream_chunk *c) {
    const size_t frames = (size_t)(c->end - c->start), plane = (size_t)c->pred.height * (size_t)c->pred.width;
    float *f = (float *)(c->block + CHUNK_HEADER);
    c->pred.n = (int)frames;
    c->pred.depth = f;
    c->pred.conf = f + frames * plane;
    c->pred.intrinsics = f + 2 * frames * plane;
    c->pred.extrinsics = c->pred.intrinsics + 9 * frames;
    c->rgb = (uint8_t *)(c->pred.extrinsics + 12 * frames);
}

int stream_chunk_path(char *dst, size_t cap, const char *dir, int index) {
    return fmt_path(dst, cap, "%s/chunk_%04d.bin", dir, index);
}

int stream_chunk_alloc(stream_chunk *c, int index, int start, int new_start, int end, int height, int width) {
    memset(c, 0, sizeof *c);
    uint64_t payload;
    if (index < 0 || start < 0 || new_start < start || end <= new_start ||
        payload_size(end - start, height, width, &payload) != 0)
        return -1;
    c->block_len = CHUNK_HEADER + (size_t)payload;
    c->block = malloc(c->block_len);
    if (!c->block) {
        memset(c, 0, sizeof *c);
        return -1;
    }
    c->index = index, c->start = start, c->new_start = new_start, c->end = end;
    c->pred.height = height, c->pred.width = width;
    chunk_attach_arrays(c);
    return 0;
}

int stream_chunk_write(const char *dir, stream_chunk *c, char *err, size_t errlen) {
    chunk_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CHUNK_MAGIC, 8);
    h.version = STREAM_CHUNK_VERSION;
    h.header_bytes = CHUNK_HEADER;
    h.index = c->index, h.start = c->start, h.new_start = c->new_start, h.end = c->end;
    h.height = c->pred.height, h.width = c->pred.width;
    h.payload_bytes = c->block_len - CHUNK_HEADER;
    h.checksum = payload_checksum(c->block + CHUNK_HEADER, c->block_len - CHUNK_HEADER);
    h.byte_order = CHUNK_BYTE_ORDER;
    memcpy(c->block, &h, sizeof h);
    char path[1024];
    if (stream_chunk_path(path, sizeof path, dir, c->index) != 0)
        return fail_msg(err, errlen, "streaming: the stream folder's path is too long");
    if (ensure_stream_dir(dir) != 0 || write_file_atomic(path, c->block, c->block_len) != 0)
        return fail_msg(err, errlen, "streaming: cannot write chunk file chunk_%04d.bin (%zu bytes): %s", c->index,
                    c->block_len, strerror(errno));
    return 0;
}

/* What is wrong with a chunk file's bytes, or NULL when it is what `expect` describes. */
static const char *chunk_defect(const unsigned char *data, size_t len, const stream_chunk_info *expect, int height,
                                int width, char *why, size_t whylen) {
    chunk_header h;
    if (len < CHUNK_HEADER) {
        snprintf(why, whylen, "truncated: %zu bytes, less than its %d-byte header", len, CHUNK_HEADER);
        return why;
    }
    memcpy(&h, data, sizeof h);
    uint64_t payload;
    if (memcmp(h.magic, CHUNK_MAGIC, 8) != 0) return "not a chunk file (bad magic)";
    if (h.byte_order != CHUNK_BYTE_ORDER) return "written on a host of the other byte order";
    if (h.version != STREAM_CHUNK_VERSION) {
        snprintf(why, whylen, "format version %u, this worker reads %d", h.version, STREAM_CHUNK_VERSION);
        return why;
    }
    if (h.header_bytes != CHUNK_HEADER || h.zero != 0 || h.start < 0 || h.new_start < h.start ||
        h.end <= h.new_start || payload_size(h.end - h.start, h.height, h.width, &payload) != 0 ||
        h.payload_bytes != payload)
        return "its header's sizes are invalid or disagree with each other";
    if (len != CHUNK_HEADER + payload) {
        snprintf(why, whylen, "%zu bytes where its header says %llu (truncated or extended)", len,
                 (unsigned long long)(CHUNK_HEADER + payload));
        return why;
    }
    if (payload_checksum(data + CHUNK_HEADER, (size_t)payload) != h.checksum) return "checksum mismatch (corrupted)";
    if (h.index != expect->index || h.start != expect->start || h.new_start != expect->new_start ||
        h.end != expect->end || h.height != height || h.width != width) {
        snprintf(why, whylen,
                 "it holds chunk %d (images %d..%d, new from %d, %dx%d) where the state has chunk %d (images "
                 "%d..%d, new from %d, %dx%d)",
                 h.index, h.start, h.end - 1, h.new_start, h.width, h.height, expect->index, expect->start,
                 expect->end - 1, expect->new_start, width, height);
        return why;
    }
    return NULL;
}

int stream_chunk_read(const char *dir, const stream_chunk_info *expect, int height, int width, stream_chunk *c,
                      char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    char path[1024], why[256];
    if (stream_chunk_path(path, sizeof path, dir, expect->index) != 0)
        return fail_msg(err, errlen, "streaming: the stream folder's path is too long");
    size_t len = 0;
    uint8_t *data = read_file(path, &len);
    if (!data)
        return fail_msg(err, errlen, "streaming: chunk file chunk_%04d.bin cannot be read: %s", expect->index,
                    strerror(errno));
    const char *defect = chunk_defect(data, len, expect, height, width, why, sizeof why);
    if (defect) {
        free(data);
        return fail_msg(err, errlen, "streaming: chunk file chunk_%04d.bin is unusable: %s", expect->index, defect);
    }
    c->block = data;
    c->block_len = len;
    c->index = expect->index, c->start = expect->start, c->new_start = expect->new_start, c->end = expect->end;
    c->pred.height = height, c->pred.width = width;
    chunk_attach_arrays(c);
    return 0;
}

void stream_chunk_free(stream_chunk *c) {
    if (!c) return;
    free(c->block);
    memset(c, 0, sizeof *c);
}

/* ---------- state.json ---------- */

static json_t *json_matrix_f(const float *m, int rows, int cols) {
    double d[16];
    for (int i = 0; i < rows * cols; i++) d[i] = m[i];
    return json_matrix_rows(d, rows, cols);
}

static json_t *json_vector(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

/* An array of n finite numbers into out; 0 or -1. */
static int vector_from_json(const json_t *j, int n, double *out) {
    if (!json_is_array(j) || (int)json_array_size(j) != n) return -1;
    for (int i = 0; i < n; i++) {
        const json_t *v = json_array_get(j, (size_t)i);
        if (!json_is_number(v) || !isfinite(json_number_value(v))) return -1;
        out[i] = json_number_value(v);
    }
    return 0;
}

/* A rows x cols array of finite numbers into out; 0 or -1. */
static int matrix_from_json(const json_t *j, int rows, int cols, double *out) {
    if (!json_is_array(j) || (int)json_array_size(j) != rows) return -1;
    for (int r = 0; r < rows; r++) {
        const json_t *row = json_array_get(j, (size_t)r);
        if (!json_is_array(row) || (int)json_array_size(row) != cols) return -1;
        for (int c = 0; c < cols; c++) {
            const json_t *v = json_array_get(row, (size_t)c);
            if (!json_is_number(v) || !isfinite(json_number_value(v))) return -1;
            out[r * cols + c] = json_number_value(v);
        }
    }
    return 0;
}

/* The same into floats, refusing values a float cannot hold. */
static int matrix_from_json_f(const json_t *j, int rows, int cols, float *out) {
    double d[16];
    if (matrix_from_json(j, rows, cols, d) != 0) return -1;
    for (int i = 0; i < rows * cols; i++) {
        if (fabs(d[i]) > FLT_MAX) return -1;
        out[i] = (float)d[i];
    }
    return 0;
}

static int int_field(const json_t *o, const char *key, long lo, long hi, int *out) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) return -1;
    *out = (int)json_integer_value(v);
    return 0;
}

static int real_field(const json_t *o, const char *key, double *out) {
    const json_t *v = json_object_get(o, key);
    if (!json_is_number(v) || !isfinite(json_number_value(v))) return -1;
    *out = json_number_value(v);
    return 0;
}

static json_t *sim3_to_json(const stream_sim3 *s) {
    json_t *o = json_object();
    json_object_set_new(o, "s", json_real(s->s));
    json_object_set_new(o, "r", json_matrix_rows(s->r, 3, 3));
    json_object_set_new(o, "t", json_vector(s->t, 3));
    return o;
}

static int sim3_from_json(const json_t *o, stream_sim3 *s) {
    if (real_field(o, "s", &s->s) != 0 || !(s->s > 0)) return -1;
    return matrix_from_json(json_object_get(o, "r"), 3, 3, s->r) | vector_from_json(json_object_get(o, "t"), 3, s->t);
}

/* How well a chunk's link was fitted (stream_align_report's figures), for state.json and deltas. */
static json_t *alignment_to_json(const stream_chunk_info *c) {
    json_t *a = json_object();
    json_object_set_new(a, "kept", json_integer(c->kept));
    json_object_set_new(a, "rms_residual_rel", json_real(c->rms_residual_rel));
    json_object_set_new(a, "inlier_fraction", json_real(c->inlier_fraction));
    json_object_set_new(a, "iterations", json_integer(c->iterations));
    return a;
}

static json_t *chunk_to_json(const stream_chunk_info *c, int known_cameras) {
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(c->index));
    json_object_set_new(o, "start", json_integer(c->start));
    json_object_set_new(o, "new_start", json_integer(c->new_start));
    json_object_set_new(o, "end", json_integer(c->end));
    json_object_set_new(o, "sim3", sim3_to_json(&c->sim3));
    if (c->aligned) json_object_set_new(o, "alignment", alignment_to_json(c));
    if (known_cameras) {
        json_object_set_new(o, "pose_scale", json_real(c->pose_scale));
        json_object_set_new(o, "pose_scale_fitted", json_boolean(c->pose_scale_fitted));
    }
    return o;
}

static int chunk_from_json(const json_t *o, int known_cameras, stream_chunk_info *c) {
    memset(c, 0, sizeof *c);
    if (!json_is_object(o) || int_field(o, "index", 0, INT_MAX, &c->index) ||
        int_field(o, "start", 0, INT_MAX, &c->start) || int_field(o, "new_start", 0, INT_MAX, &c->new_start) ||
        int_field(o, "end", 1, INT_MAX, &c->end) || sim3_from_json(json_object_get(o, "sim3"), &c->sim3))
        return -1;
    const json_t *a = json_object_get(o, "alignment");
    if (a) {
        int kept;
        if (int_field(a, "kept", 0, INT_MAX, &kept) || real_field(a, "rms_residual_rel", &c->rms_residual_rel) ||
            real_field(a, "inlier_fraction", &c->inlier_fraction) ||
            int_field(a, "iterations", 0, INT_MAX, &c->iterations))
            return -1;
        c->kept = kept;
        c->aligned = 1;
    }
    c->pose_scale = 1.0;
    if (known_cameras) {
        const json_t *fitted = json_object_get(o, "pose_scale_fitted");
        if (real_field(o, "pose_scale", &c->pose_scale) || !(c->pose_scale > 0) || !json_is_boolean(fitted))
            return -1;
        c->pose_scale_fitted = json_is_true(fitted);
    }
    return 0;
}

static json_t *state_to_json(const stream_state *st) {
    json_t *o = json_object();
    json_object_set_new(o, "version", json_integer(STREAM_STATE_VERSION));
    json_object_set_new(o, "done", json_integer(st->done));
    json_object_set_new(o, "height", json_integer(st->height));
    json_object_set_new(o, "width", json_integer(st->width));
    json_object_set_new(o, "known_cameras", json_boolean(st->known_cameras));
    json_object_set_new(o, "alignment", json_matrix_rows(st->frame.alignment, 4, 4));
    json_t *pl = json_object();
    json_object_set_new(pl, "a0", json_matrix_rows(st->frame.placement.a0, 4, 4));
    json_object_set_new(pl, "centre", json_vector(st->frame.placement.centre, 3));
    json_object_set_new(o, "placement", pl);
    json_object_set_new(o, "camera_depth", json_real(st->frame.camera_depth));
    json_t *chunks = json_array();
    for (int i = 0; i < st->n_chunks; i++) json_array_append_new(chunks, chunk_to_json(&st->chunks[i], st->known_cameras));
    json_object_set_new(o, "chunks", chunks);
    json_t *cams = json_array();
    for (int i = 0; i < st->done; i++) {
        json_t *c = json_object();
        json_object_set_new(c, "intrinsics", json_matrix_f(st->intrinsics + 9 * (size_t)i, 3, 3));
        json_object_set_new(c, "extrinsics", json_matrix_f(st->extrinsics + 12 * (size_t)i, 3, 4));
        json_array_append_new(cams, c);
    }
    json_object_set_new(o, "cameras", cams);
    return o;
}

/* The chain's invariants: chunk i is numbered i, chunk 0 starts the stream with no overlap, each
 * later chunk's new images follow the previous chunk's and its overlap frames are the previous
 * chunk's last ones, and the last chunk ends at done. A state that breaks them was not written
 * by this code, and running on it would misplace every later chunk. */
static const char *chain_defect(const stream_state *st) {
    if ((st->n_chunks == 0) != (st->done == 0)) return "chunk list and image count disagree";
    for (int i = 0; i < st->n_chunks; i++) {
        const stream_chunk_info *c = &st->chunks[i];
        if (c->index != i || c->end <= c->new_start || c->start > c->new_start) return "chunk list out of order";
        if (i == 0 && (c->start != 0 || c->new_start != 0)) return "chunk 0 does not start the stream";
        if (i > 0) {
            const stream_chunk_info *p = &st->chunks[i - 1];
            if (c->new_start != p->end || c->start >= c->new_start || c->start < p->start)
                return "a chunk's overlap does not continue the previous chunk";
        }
    }
    if (st->n_chunks && st->chunks[st->n_chunks - 1].end != st->done) return "the last chunk does not end at done";
    return NULL;
}

static const char *state_from_json(const json_t *o, stream_state *st) {
    int version;
    if (!json_is_object(o) || int_field(o, "version", 0, INT_MAX, &version)) return "no version";
    if (version != STREAM_STATE_VERSION) return "unknown version";
    const json_t *known = json_object_get(o, "known_cameras");
    if (int_field(o, "done", 0, INT_MAX, &st->done) || int_field(o, "height", 1, STREAM_MAX_SIDE, &st->height) ||
        int_field(o, "width", 1, STREAM_MAX_SIDE, &st->width) || !json_is_boolean(known))
        return "missing or invalid done, height, width or known_cameras";
    st->known_cameras = json_is_true(known);
    const json_t *pl = json_object_get(o, "placement");
    if (matrix_from_json(json_object_get(o, "alignment"), 4, 4, st->frame.alignment) || !json_is_object(pl) ||
        matrix_from_json(json_object_get(pl, "a0"), 4, 4, st->frame.placement.a0) ||
        vector_from_json(json_object_get(pl, "centre"), 3, st->frame.placement.centre) ||
        real_field(o, "camera_depth", &st->frame.camera_depth) || !(st->frame.camera_depth > 0))
        return "missing or invalid alignment, placement or camera_depth";
    const json_t *chunks = json_object_get(o, "chunks"), *cams = json_object_get(o, "cameras");
    if (!json_is_array(chunks) || !json_is_array(cams) || json_array_size(chunks) > (size_t)st->done + 1 ||
        json_array_size(cams) != (size_t)st->done)
        return "chunks or cameras missing, or their counts disagree with done";
    st->n_chunks = (int)json_array_size(chunks);
    st->chunks = calloc((size_t)st->n_chunks + 1, sizeof *st->chunks);
    st->intrinsics = malloc(((size_t)st->done + 1) * 9 * sizeof(float));
    st->extrinsics = malloc(((size_t)st->done + 1) * 12 * sizeof(float));
    if (!st->chunks || !st->intrinsics || !st->extrinsics) return "out of memory";
    for (int i = 0; i < st->n_chunks; i++)
        if (chunk_from_json(json_array_get(chunks, (size_t)i), st->known_cameras, &st->chunks[i]) != 0)
            return "a chunk entry is invalid";
    for (int i = 0; i < st->done; i++) {
        const json_t *c = json_array_get(cams, (size_t)i);
        if (!json_is_object(c) ||
            matrix_from_json_f(json_object_get(c, "intrinsics"), 3, 3, st->intrinsics + 9 * (size_t)i) ||
            matrix_from_json_f(json_object_get(c, "extrinsics"), 3, 4, st->extrinsics + 12 * (size_t)i))
            return "a camera entry is invalid";
    }
    return chain_defect(st);
}

int stream_state_load(const char *dir, stream_state *st, char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    char path[1024];
    if (fmt_path(path, sizeof path, "%s/state.json", dir) != 0)
        return fail_msg(err, errlen, "streaming: the stream folder's path is too long");
    size_t len = 0;
    uint8_t *data = read_file(path, &len);
    if (!data) {
        if (errno == ENOENT) return 0;
        return fail_msg(err, errlen, "streaming: the stream state (state.json) cannot be read: %s", strerror(errno));
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    free(data);
    if (!root)
        return fail_msg(err, errlen, "streaming: the stream state (state.json) is not valid JSON (line %d: %s)", jerr.line,
                    jerr.text);
    const char *defect = state_from_json(root, st);
    json_decref(root);
    if (defect) {
        stream_state_free(st);
        return fail_msg(err, errlen, "streaming: the stream state (state.json) is invalid: %s", defect);
    }
    return 1;
}

int stream_state_save(const char *dir, const stream_state *st, char *err, size_t errlen) {
    char path[1024];
    if (fmt_path(path, sizeof path, "%s/state.json", dir) != 0)
        return fail_msg(err, errlen, "streaming: the stream folder's path is too long");
    json_t *root = state_to_json(st);
    /* 17 digits: every double (and every float) reads back as exactly the value written */
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(root);
    if (!text) return fail_msg(err, errlen, "streaming: out of memory for the stream state");
    int rc = ensure_stream_dir(dir) == 0 && write_file_atomic(path, text, strlen(text)) == 0 ? 0 : -1;
    free(text);
    if (rc) return fail_msg(err, errlen, "streaming: cannot write the stream state (state.json): %s", strerror(errno));
    return 0;
}

void stream_state_free(stream_state *st) {
    if (!st) return;
    free(st->chunks);
    free(st->intrinsics);
    free(st->extrinsics);
    memset(st, 0, sizeof *st);
}

/* Appends chunk `info` and the cameras of c's new views to st (in memory; see commit_chunk). */
static int state_append(stream_state *st, const stream_chunk *c, const stream_chunk_info *info) {
    stream_chunk_info *chunks = realloc(st->chunks, ((size_t)st->n_chunks + 1) * sizeof *chunks);
    if (!chunks) return -1;
    st->chunks = chunks;
    float *k = realloc(st->intrinsics, (size_t)c->end * 9 * sizeof *k);
    if (!k) return -1;
    st->intrinsics = k;
    float *e = realloc(st->extrinsics, (size_t)c->end * 12 * sizeof *e);
    if (!e) return -1;
    st->extrinsics = e;
    const int ov = c->new_start - c->start, fresh = c->end - c->new_start;
    memcpy(st->intrinsics + 9 * (size_t)c->new_start, c->pred.intrinsics + 9 * (size_t)ov, (size_t)fresh * 9 * sizeof(float));
    memcpy(st->extrinsics + 12 * (size_t)c->new_start, c->pred.extrinsics + 12 * (size_t)ov,
           (size_t)fresh * 12 * sizeof(float));
    st->chunks[st->n_chunks++] = *info;
    st->done = c->end;
    return 0;
}

/* ---------- planning ---------- */

typedef struct {
    int start, new_start, end;
} chunk_plan;

/* The chunk that follows a stream of `done` images whose last chunk had prev_frames frames (0: no
 * chunk yet), by the chunk rule in stream_session.h. Returns 0, or -1 when no image is new. */
static int plan_chunk(int done, int prev_frames, const stream_request *rq, chunk_plan *out) {
    const int ov = rq->overlap < prev_frames ? rq->overlap : prev_frames;
    const long end = (long)done + rq->chunk_size - ov;
    out->new_start = done;
    out->start = done - ov;
    out->end = end < rq->image_count ? (int)end : rq->image_count;
    return out->end > out->new_start ? 0 : -1;
}

static int last_frames(const stream_state *st) {
    return st->n_chunks ? st->chunks[st->n_chunks - 1].end - st->chunks[st->n_chunks - 1].start : 0;
}

/* 1 when st's last chunk is the one this request asks for: a job retried after its worker died
 * once the chunk was committed (same new_start and overlap by the chunk rule). Its end may be
 * short of what the request would plan when images arrived since (the front resubmitting after
 * the retry failed too): the stored chunk is still the chunk from stream_from, and the reported
 * end tells the front where the stream is. */
static int committed_retry(const stream_state *st, const stream_request *rq) {
    if (st->n_chunks == 0) return 0;
    const stream_chunk_info *last = &st->chunks[st->n_chunks - 1];
    const int before = st->n_chunks >= 2 ? st->chunks[st->n_chunks - 2].end - st->chunks[st->n_chunks - 2].start : 0;
    chunk_plan plan;
    return last->new_start == rq->stream_from && plan_chunk(last->new_start, before, rq, &plan) == 0 &&
           plan.start == last->start && last->end <= plan.end;
}

static int mismatch(const stream_state *st, const stream_request *rq, char *err, size_t errlen) {
    return fail_msg(err, errlen,
                "streaming: stream state mismatch: the stream holds %d image(s) in %d chunk(s), but this job "
                "expected %d (with %d in the session)",
                st->done, st->n_chunks, rq->stream_from, rq->image_count);
}

/* ---------- one chunk ---------- */

/* Copies the network's prediction into c, mapped into the session frame by sim when map is set:
 * extrinsics through stream_sim3_apply_extrinsics, depth times s (camera-frame distances scale
 * by s); intrinsics, confidence and colours as they are. */
static void map_into_session(const pipeline_result *res, const stream_sim3 *sim, int map, stream_chunk *c) {
    const int frames = res->pred.n;
    const size_t px = (size_t)frames * (size_t)res->pred.height * (size_t)res->pred.width;
    memcpy(c->pred.conf, res->pred.conf, px * sizeof(float));
    memcpy(c->pred.intrinsics, res->pred.intrinsics, (size_t)frames * 9 * sizeof(float));
    memcpy(c->rgb, res->rgb, px * 3);
    if (!map) {
        memcpy(c->pred.depth, res->pred.depth, px * sizeof(float));
        memcpy(c->pred.extrinsics, res->pred.extrinsics, (size_t)frames * 12 * sizeof(float));
        return;
    }
    for (size_t i = 0; i < px; i++) c->pred.depth[i] = (float)(res->pred.depth[i] * sim->s);
    for (int f = 0; f < frames; f++) {
        double w2c[12], out[12];
        for (int j = 0; j < 12; j++) w2c[j] = res->pred.extrinsics[12 * f + j];
        stream_sim3_apply_extrinsics(sim, w2c, out);
        for (int j = 0; j < 12; j++) c->pred.extrinsics[12 * f + j] = (float)out[j];
    }
}

/* The Sim(3) placing the new chunk (res, own gauge) in the session frame: fitted between its
 * first ov frames and the previous chunk's last ov frames as stored. */
static int align_to_previous(const stream_chunk *prev, const pipeline_result *res, const chunk_plan *plan,
                             stream_chunk_info *info, char *err, size_t errlen) {
    const int ov = plan->new_start - plan->start;
    stream_overlap before, after;
    if (stream_overlap_from_prediction(&prev->pred, prev->pred.n - ov, ov, &before) != 0 ||
        stream_overlap_from_prediction(&res->pred, 0, ov, &after) != 0)
        return fail_msg(err, errlen, "streaming: internal error: overlap of %d frames out of range", ov);
    stream_align_report rep;
    int status = stream_align_overlap(&before, &after, ov, res->pred.height, res->pred.width, NULL, &info->sim3, &rep);
    if (status != STREAM_ALIGN_OK)
        return fail_msg(err, errlen,
                    "streaming: images %d..%d could not be aligned to the previous chunk: %s (%ld of %ld overlap "
                    "pixels usable); consecutive images must show much of the same scene",
                    plan->start, plan->end - 1, stream_align_status_text(status), rep.n_kept, rep.n_pixels);
    info->aligned = 1;
    info->kept = rep.n_kept;
    info->rms_residual_rel = rep.rms_residual_rel;
    info->inlier_fraction = rep.inlier_fraction;
    info->iterations = rep.iterations;
    return 0;
}

/* A chunk must be of the stream's kind: all known cameras or none, as chunk 0 was. */
static int check_cameras(const stream_state *st, const chunk_plan *plan, int known, char *err, size_t errlen) {
    if (st->n_chunks == 0 || known == st->known_cameras) return 0;
    return fail_msg(err, errlen, "streaming: images %d..%d %s known cameras but the stream's earlier images %s",
                plan->start, plan->end - 1, known ? "have" : "have no", known ? "have none" : "have them");
}

/* A chunk must have the stream's processed size: pixel (u,v) of an overlap image is then the same
 * pixel in both chunks (each view's crop depends on its own size and the batch's only). */
static int check_size(const stream_state *st, const chunk_plan *plan, const da3_prediction *pred, char *err,
                      size_t errlen) {
    if (st->n_chunks == 0 || (pred->height == st->height && pred->width == st->width)) return 0;
    return fail_msg(err, errlen,
                "streaming: images %d..%d were processed at %dx%d but the stream's earlier images at %dx%d: a "
                "streaming session needs images of one size (and one process_res)",
                plan->start, plan->end - 1, pred->width, pred->height, st->width, st->height);
}

/* Runs the network on the planned chunk's images and maps its prediction into the session frame
 * (*c, with *info describing the link). prev: the previous chunk as stored (not used for chunk 0
 * nor with known cameras, which need no alignment). Nothing is written. Timings add into *times. */
static int predict_chunk(da3_model *m, const char *image_dir, const stream_state *st, const stream_chunk *prev,
                         const chunk_plan *plan, const pipeline_params *p, pipeline_progress_fn progress, void *ctx,
                         stream_chunk *c, stream_chunk_info *info, int *known, stream_result *times, char *err,
                         size_t errlen) {
    memset(c, 0, sizeof *c);
    memset(info, 0, sizeof *info);
    session_input in;
    if (session_input_load(&in, image_dir, plan->start, plan->end - plan->start, err, errlen) != 0) return -1;
    *known = in.cams != NULL;
    pipeline_result res;
    int rc = check_cameras(st, plan, *known, err, errlen);
    if (rc == 0) rc = pipeline_predict_files(m, in.path_ptrs, in.names, in.n, in.cams, p, progress, ctx, &res, err, errlen);
    session_input_free(&in);
    if (rc) return -1;
    times->decode_ms += res.decode_ms;
    times->model_ms += res.model_ms;
    info->index = st->n_chunks;
    info->start = plan->start, info->new_start = plan->new_start, info->end = plan->end;
    info->sim3 = stream_sim3_identity();
    info->pose_scale = res.pose_scale;
    info->pose_scale_fitted = res.pose_scale_fitted;
    rc = check_size(st, plan, &res.pred, err, errlen);
    /* chunk 0 is the session frame; known cameras put every chunk in the client's frame already */
    const int align = rc == 0 && st->n_chunks > 0 && !*known;
    if (align) {
        report(progress, ctx, "exporting", 0.6, "Aligning the chunk to the stream...");
        rc = align_to_previous(prev, &res, plan, info, err, errlen);
    }
    if (rc == 0 && stream_chunk_alloc(c, info->index, plan->start, plan->new_start, plan->end, res.pred.height,
                                      res.pred.width) != 0)
        rc = fail_msg(err, errlen, "streaming: out of memory for a chunk of %d views", res.pred.n);
    if (rc == 0) map_into_session(&res, &info->sim3, align, c);
    pipeline_result_free(&res);
    if (rc) stream_chunk_free(c);
    return rc;
}

/* Commits a predicted chunk: its file first, then the state that names it, so a crash between the
 * two leaves the old state (the orphan file is rewritten by the retry). Chunk 0 also fixes the
 * stream's size, kind of cameras and glTF frame (frame0). On failure the on-disk state is the old
 * one and *st must be discarded. */
static int commit_chunk(const char *dir, stream_state *st, stream_chunk *c, const stream_chunk_info *info, int known,
                        const stream_frame *frame0, char *err, size_t errlen) {
    if (stream_chunk_write(dir, c, err, errlen) != 0) return -1;
    if (st->n_chunks == 0) {
        st->height = c->pred.height;
        st->width = c->pred.width;
        st->known_cameras = known;
        st->frame = *frame0;
    }
    if (state_append(st, c, info) != 0) return fail_msg(err, errlen, "streaming: out of memory for the stream state");
    return stream_state_save(dir, st, err, errlen);
}

/* ---------- deltas and the merge ---------- */

/* Fixed-frame fusion of c's new frames, frustums coloured as views new_start.. of colour_total. */
static int fuse_new_frames(const stream_frame *frame, const stream_chunk *c, const fusion_params *p, int colour_total,
                           point_cloud *out, char *err, size_t errlen) {
    const int ov = c->new_start - c->start;
    const size_t plane = (size_t)c->pred.height * (size_t)c->pred.width;
    da3_prediction fresh = c->pred; /* the new frames are the chunk's last ones: a view, no copy */
    fresh.n = c->end - c->new_start;
    fresh.depth += plane * (size_t)ov;
    fresh.conf += plane * (size_t)ov;
    fresh.intrinsics += 9 * (size_t)ov;
    fresh.extrinsics += 12 * (size_t)ov;
    fusion_fixed fixed = {frame->placement, frame->camera_depth, c->new_start, colour_total};
    return fuse_point_cloud_fixed(&fresh, c->rgb + 3 * plane * (size_t)ov, p, &fixed, out, err, errlen);
}

int stream_chunk_delta(const stream_state *st, const stream_chunk *c, const fusion_params *p, point_cloud *out,
                       stream_frame *frame0, char *err, size_t errlen) {
    if (c->index > 0) return fuse_new_frames(&st->frame, c, p, c->end, out, err, errlen);
    /* Chunk 0 is fused as the plain pipeline fuses the same images (its frames are all new and its
     * gauge is the session frame), which is what defines the stream's glTF frame. */
    if (fuse_point_cloud(&c->pred, c->rgb, p, out, err, errlen) != 0) return -1;
    if (!frame0) return 0;
    memcpy(frame0->alignment, out->alignment, sizeof out->alignment);
    frame0->placement = out->placement;
    frame0->camera_depth = out->camera_depth;
    /* without frustums the cloud measured none; later jobs may ask for them */
    if (!p->show_cameras && fusion_camera_depth(out, &frame0->camera_depth) != 0) {
        point_cloud_free(out);
        return fail_msg(err, errlen, "streaming: out of memory");
    }
    return 0;
}

/* Appends part's points and frustums to all (capacities *pts_cap, *cam_cap grown geometrically). */
static int cloud_append(point_cloud *all, size_t *pts_cap, size_t *cam_cap, const point_cloud *part) {
    if (all->n_points + part->n_points > *pts_cap) {
        size_t cap = *pts_cap ? *pts_cap : 1;
        while (cap < all->n_points + part->n_points) cap *= 2;
        float *x = realloc(all->xyz, cap * 3 * sizeof(float));
        if (x) all->xyz = x;
        uint8_t *c = realloc(all->rgba, cap * 4);
        if (c) all->rgba = c;
        if (!x || !c) return -1;
        *pts_cap = cap;
    }
    if ((size_t)all->n_cameras + (size_t)part->n_cameras > *cam_cap) {
        size_t cap = *cam_cap ? *cam_cap : 16;
        while (cap < (size_t)all->n_cameras + (size_t)part->n_cameras) cap *= 2;
        float *l = realloc(all->camera_lines, cap * 48 * sizeof(float));
        if (l) all->camera_lines = l;
        uint8_t *c = realloc(all->camera_rgba, cap * 4);
        if (c) all->camera_rgba = c;
        if (!l || !c) return -1;
        *cam_cap = cap;
    }
    if (part->n_points) {
        memcpy(all->xyz + 3 * all->n_points, part->xyz, part->n_points * 3 * sizeof(float));
        memcpy(all->rgba + 4 * all->n_points, part->rgba, part->n_points * 4);
    }
    if (part->n_cameras) {
        memcpy(all->camera_lines + 48 * (size_t)all->n_cameras, part->camera_lines,
               (size_t)part->n_cameras * 48 * sizeof(float));
        memcpy(all->camera_rgba + 4 * (size_t)all->n_cameras, part->camera_rgba, (size_t)part->n_cameras * 4);
    }
    all->n_points += part->n_points;
    all->n_cameras += part->n_cameras;
    return 0;
}

/* The whole session's cloud: every chunk's new frames with that chunk's own threshold (its delta
 * before downsampling), concatenated in view order, then downsampled once with the usual seeded
 * rule. Reads every chunk file, one at a time. */
static int merge_stream(const char *dir, const stream_state *st, const fusion_params *p, point_cloud *out, char *err,
                        size_t errlen) {
    memset(out, 0, sizeof *out);
    fusion_params all_points = *p;
    all_points.num_max_points = LONG_MAX;
    size_t pts_cap = 0, cam_cap = 0;
    for (int i = 0; i < st->n_chunks; i++) {
        stream_chunk c;
        point_cloud part;
        if (stream_chunk_read(dir, &st->chunks[i], st->height, st->width, &c, err, errlen) != 0) goto error;
        int rc = fuse_new_frames(&st->frame, &c, &all_points, st->done, &part, err, errlen);
        stream_chunk_free(&c);
        if (rc) goto error;
        rc = cloud_append(out, &pts_cap, &cam_cap, &part);
        point_cloud_free(&part);
        if (rc) {
            fail_msg(err, errlen, "streaming: out of memory merging %d chunks (%zu points so far)", st->n_chunks,
                 out->n_points);
            goto error;
        }
    }
    out->n_points = subsample_points(out->xyz, out->rgba, out->n_points, (size_t)p->num_max_points, p->seed);
    memcpy(out->alignment, st->frame.alignment, sizeof out->alignment);
    out->placement = st->frame.placement;
    out->camera_depth = p->show_cameras ? st->frame.camera_depth : 0.0;
    return 0;

error:
    point_cloud_free(out);
    return -1;
}

/* ---------- jobs ---------- */

/* A chunk job whose chunk is already committed: its delta again, from its file (no network). */
static int rebuild_delta(const char *dir, const pipeline_params *p, stream_result *out, char *err, size_t errlen) {
    stream_state *st = &out->state;
    const stream_chunk_info *last = &st->chunks[st->n_chunks - 1];
    stream_chunk c;
    if (stream_chunk_read(dir, last, st->height, st->width, &c, err, errlen) != 0) return -1;
    double t0 = now_mono();
    int rc = stream_chunk_delta(st, &c, &p->fusion, &out->cloud, NULL, err, errlen);
    out->fusion_ms = (now_mono() - t0) * 1e3;
    stream_chunk_free(&c);
    out->chunk = st->n_chunks - 1;
    out->rebuilt = 1;
    out->end = last->end;
    return rc;
}

/* One chunk: plan it from the state, predict and align it, fuse its delta, then commit. */
static int run_chunk_job(da3_model *m, const char *image_dir, const char *dir, const stream_request *rq,
                         const pipeline_params *p, pipeline_progress_fn progress, void *ctx, stream_result *out,
                         char *err, size_t errlen) {
    stream_state *st = &out->state;
    if (st->done != rq->stream_from) {
        if (committed_retry(st, rq)) return rebuild_delta(dir, p, out, err, errlen);
        return mismatch(st, rq, err, errlen);
    }
    chunk_plan plan;
    if (plan_chunk(st->done, last_frames(st), rq, &plan) != 0)
        return fail_msg(err, errlen, "streaming: no new images: the stream already holds the session's %d image(s)",
                    st->done);
    stream_chunk prev = {0}, c;
    stream_chunk_info info;
    stream_frame frame0;
    int known = 0, rc = 0;
    /* only the previous chunk is read: a chunk costs the same however long the stream is */
    if (st->n_chunks > 0 && !st->known_cameras)
        rc = stream_chunk_read(dir, &st->chunks[st->n_chunks - 1], st->height, st->width, &prev, err, errlen);
    if (rc == 0)
        rc = predict_chunk(m, image_dir, st, &prev, &plan, p, progress, ctx, &c, &info, &known, out, err, errlen);
    stream_chunk_free(&prev);
    if (rc) return -1;
    report(progress, ctx, "exporting", 0.7, "Generating 3D model...");
    double t0 = now_mono();
    rc = stream_chunk_delta(st, &c, &p->fusion, &out->cloud, &frame0, err, errlen);
    out->fusion_ms = (now_mono() - t0) * 1e3;
    if (rc == 0) {
        report(progress, ctx, "exporting", 0.8, "Saving the stream...");
        rc = commit_chunk(dir, st, &c, &info, known, &frame0, err, errlen);
    }
    stream_chunk_free(&c);
    if (rc) return -1;
    out->chunk = st->n_chunks - 1;
    out->chunks_run = 1;
    out->end = st->done;
    return 0;
}

/* Progress of chunk `index` of `count` in a finalize: the pipeline's 0.3..0.4 becomes that
 * chunk's share of 0.05..0.80, with the chunk named in the message. */
typedef struct {
    pipeline_progress_fn fn;
    void *ctx;
    int index, count;
} chunk_progress;

static void chunk_progress_report(void *ctx, const char *stage, double progress, const char *message) {
    const chunk_progress *cp = ctx;
    double f = (progress - 0.3) / 0.1;
    f = f < 0 ? 0 : f > 1 ? 1 : f;
    char msg[256];
    snprintf(msg, sizeof msg, "Chunk %d of %d: %s", cp->index + 1, cp->count, message);
    report(cp->fn, cp->ctx, stage, 0.05 + 0.75 * (cp->index + f) / cp->count, msg);
}

/* Chunks a finalize still has to run from st. */
static int chunks_left(const stream_state *st, const stream_request *rq) {
    int done = st->done, frames = last_frames(st), count = 0;
    chunk_plan plan;
    while (plan_chunk(done, frames, rq, &plan) == 0) {
        done = plan.end;
        frames = plan.end - plan.start;
        count++;
    }
    return count;
}

/* Every chunk left (each committed as it completes, so a crash keeps the progress), then the
 * merge. The previous chunk stays in memory from one iteration to the next. */
static int run_finalize(da3_model *m, const char *image_dir, const char *dir, const stream_request *rq,
                        const pipeline_params *p, pipeline_progress_fn progress, void *ctx, stream_result *out,
                        char *err, size_t errlen) {
    stream_state *st = &out->state;
    if (rq->image_count < 1) return fail_msg(err, errlen, "No images in session");
    if (st->done < rq->stream_from || st->done > rq->image_count) return mismatch(st, rq, err, errlen);
    const int count = chunks_left(st, rq);
    stream_chunk prev = {0};
    int rc = 0;
    if (count > 0 && st->n_chunks > 0 && !st->known_cameras)
        rc = stream_chunk_read(dir, &st->chunks[st->n_chunks - 1], st->height, st->width, &prev, err, errlen);
    for (int j = 0; rc == 0 && j < count; j++) {
        chunk_plan plan;
        plan_chunk(st->done, last_frames(st), rq, &plan);
        chunk_progress cp = {progress, ctx, j, count};
        stream_chunk c;
        stream_chunk_info info;
        stream_frame frame0;
        int known = 0;
        rc = predict_chunk(m, image_dir, st, &prev, &plan, p, chunk_progress_report, &cp, &c, &info, &known, out, err,
                           errlen);
        if (rc == 0 && st->n_chunks == 0) { /* chunk 0 fixes the frame: its delta's fusion, discarded */
            point_cloud first;
            double t0 = now_mono();
            rc = stream_chunk_delta(st, &c, &p->fusion, &first, &frame0, err, errlen);
            out->fusion_ms += (now_mono() - t0) * 1e3;
            point_cloud_free(&first);
        }
        if (rc == 0) rc = commit_chunk(dir, st, &c, &info, known, &frame0, err, errlen);
        stream_chunk_free(&prev);
        prev = c; /* ownership moves; freed after the loop or on the next turn */
        out->chunks_run += rc == 0;
    }
    stream_chunk_free(&prev);
    if (rc) return -1;
    char msg[128];
    snprintf(msg, sizeof msg, "Merging %d chunk(s) of %d images...", st->n_chunks, st->done);
    report(progress, ctx, "exporting", 0.85, msg);
    double t0 = now_mono();
    rc = merge_stream(dir, st, &p->fusion, &out->cloud, err, errlen);
    out->fusion_ms += (now_mono() - t0) * 1e3;
    out->end = st->done;
    return rc;
}

int stream_session_run(da3_model *m, const char *image_dir, const stream_request *rq, const pipeline_params *p,
                       pipeline_progress_fn progress, void *ctx, stream_result *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->chunk = -1;
    if (rq->chunk_size < 2 || rq->overlap < 1 || rq->overlap >= rq->chunk_size || rq->stream_from < 0 ||
        rq->image_count < 0)
        return fail_msg(err, errlen,
                    "streaming: chunk_size must be at least 2 and overlap between 1 and chunk_size - 1 (got %d and "
                    "%d, from image %d of %d)",
                    rq->chunk_size, rq->overlap, rq->stream_from, rq->image_count);
    char dir[1024];
    if (session_stream_dir(dir, sizeof dir, image_dir) != 0)
        return fail_msg(err, errlen, "streaming: the stream folder's path is too long");
    if (stream_state_load(dir, &out->state, err, errlen) < 0) return -1;
    int rc = rq->finalize ? run_finalize(m, image_dir, dir, rq, p, progress, ctx, out, err, errlen)
                          : run_chunk_job(m, image_dir, dir, rq, p, progress, ctx, out, err, errlen);
    if (rc) stream_result_free(out);
    return rc;
}

/* ---------- metadata ---------- */

static json_t *chunk_meta(const stream_result *r, const stream_chunk_info *c) {
    json_t *s = json_object();
    json_object_set_new(s, "chunk", json_integer(c->index));
    json_object_set_new(s, "start", json_integer(c->start));
    json_object_set_new(s, "new_start", json_integer(c->new_start));
    json_object_set_new(s, "end", json_integer(c->end));
    json_object_set_new(s, "overlap", json_integer(c->new_start - c->start));
    json_object_set_new(s, "sim3", sim3_to_json(&c->sim3));
    if (c->aligned) json_object_set_new(s, "alignment", alignment_to_json(c));
    json_object_set_new(s, "rebuilt", json_boolean(r->rebuilt));
    return s;
}

char *stream_metadata_json(const stream_result *r, const char *model_name, int model_trained, size_t glb_bytes) {
    const stream_state *st = &r->state;
    const stream_chunk_info *c = r->chunk >= 0 && r->chunk < st->n_chunks ? &st->chunks[r->chunk] : NULL;
    pipeline_meta f = {r->end, st->height, st->width, st->intrinsics, st->extrinsics, r->cloud.n_points,
                       st->frame.alignment, st->known_cameras, c ? c->pose_scale : 1.0, c ? c->pose_scale_fitted : 0,
                       r->decode_ms, r->model_ms, r->fusion_ms};
    json_t *meta = pipeline_metadata_object(&f, model_name, model_trained, glb_bytes);
    if (!meta) return NULL;
    json_t *s;
    if (c) {
        s = chunk_meta(r, c);
    } else {
        /* a merge spans chunks of different pose scales: each chunk's is in the state, not here */
        json_object_del(meta, "pose_scale");
        json_object_del(meta, "pose_scale_fitted");
        s = json_object();
        json_object_set_new(s, "chunks", json_integer(st->n_chunks));
        json_object_set_new(s, "end", json_integer(st->done));
        json_object_set_new(s, "chunks_run", json_integer(r->chunks_run));
    }
    json_object_set_new(meta, "stream", s);
    return pipeline_metadata_dump(meta);
}

void stream_result_free(stream_result *r) {
    if (!r) return;
    point_cloud_free(&r->cloud);
    stream_state_free(&r->state);
    r->chunk = -1;
}
