/* Streaming reconstruction, the worker's side (issue 10): a session is reconstructed in chunks of
 * consecutive images, one forward pass per chunk, each chunk's prediction mapped into one session
 * frame (chunk 0's own gauge) by the Sim(3) that worker/stream_align.h fits on the frames it
 * shares with the previous chunk. A chunk job returns a delta (the points and cameras of the
 * chunk's new images only, in the glTF frame fixed by chunk 0); a finalize runs the chunks left
 * and returns the whole session's cloud.
 *
 * Chunk rule: with `done` images in the stream, the next chunk's new images are
 * [done, min(image_count, done + chunk_size - ov)), ov = min(overlap, previous chunk's frame count)
 * (0 for the first chunk); its frames are the previous chunk's last ov frames, then the new images.
 *
 * State, in <session>/stream/ (common/session_files.h session_stream_dir), every file written
 * atomically (temp + fsync + rename), the chunk file before state.json, so a crash leaves the old
 * or the new state:
 *   state.json        version, done, processed size, known_cameras, the glTF frame (A, its
 *                     factors, frustum depth) from chunk 0, per chunk {index, start, new_start,
 *                     end, sim3 to the session frame, alignment figures}, and every view's camera
 *                     (session frame; fixed by the chunk that added the view);
 *   chunk_NNNN.bin    one chunk's frames in the session frame: depth, confidence, intrinsics,
 *                     extrinsics, processed RGB (layout in stream_session.c).
 * Per chunk the worker reads state.json and the previous chunk's file only, so a chunk costs the
 * same however long the stream is; only the finalize reads every chunk file. */
#ifndef DA3_STREAM_SESSION_H
#define DA3_STREAM_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "worker/fusion.h"
#include "worker/model.h"
#include "worker/pipeline.h"
#include "worker/stream_align.h"

#define STREAM_STATE_VERSION 1
#define STREAM_CHUNK_VERSION 1
#define STREAM_MAX_FRAMES 4096  /* frames in one chunk file (a bound for reading, not a policy) */
#define STREAM_MAX_SIDE 16384   /* processed height or width in one chunk file */

/* One committed chunk, as state.json records it. */
typedef struct {
    int index;
    int start, new_start, end; /* frames are images [start, end); the new ones [new_start, end) */
    stream_sim3 sim3;          /* the chunk's own gauge -> the session frame */
    int aligned;               /* 1: sim3 fitted on the overlap (figures below); 0: chunk 0, known cameras */
    long kept;                 /* the fit's correspondences */
    double rms_residual_rel, inlier_fraction;
    int iterations;
    double pose_scale;         /* known cameras: network units per client unit of this chunk */
    int pose_scale_fitted;
} stream_chunk_info;

/* The session's glTF frame, fixed by chunk 0 (what the plain pipeline computes for its images). */
typedef struct {
    double alignment[16];       /* A = T_center * M * w2c0, row-major */
    fusion_placement placement; /* A's factors, so later fusions round exactly as chunk 0's */
    double camera_depth;        /* frustum depth */
} stream_frame;

typedef struct {
    int done;                  /* images [0, done) are in the stream */
    int height, width;         /* the processed size every chunk must have */
    int known_cameras;         /* 1: the client's cameras: every link is the identity */
    stream_frame frame;
    int n_chunks;
    stream_chunk_info *chunks; /* n_chunks, in order */
    float *intrinsics;         /* (done,3,3) */
    float *extrinsics;         /* (done,3,4) world-to-camera, session frame */
} stream_state;

/* One chunk's frames in the session frame; the arrays point into block, which is the chunk
 * file's bytes (header + payload), so writing and reading copy nothing. */
typedef struct {
    int index, start, new_start, end;
    da3_prediction pred;       /* end - start frames; do not da3_prediction_free it */
    uint8_t *rgb;              /* (frames,H,W,3) processed colours */
    unsigned char *block;
    size_t block_len;
} stream_chunk;

/* A streaming job's parameters (shmq_job_params' stream fields). */
typedef struct {
    int chunk_size;   /* >= 2 */
    int overlap;      /* in [1, chunk_size - 1] */
    int stream_from;  /* images the front believes are already in the stream */
    int image_count;  /* images available in the session when the job was queued */
    int finalize;     /* 0: one chunk, its delta; 1: every chunk left, then the whole session */
} stream_request;

typedef struct {
    point_cloud cloud;   /* the delta (one chunk) or the whole session (finalize) */
    stream_state state;  /* the stream after the job */
    int chunk;           /* the delta's chunk (index into state.chunks); -1 for a finalize */
    int rebuilt;         /* 1: the chunk had been committed already (a retry): rebuilt from its file */
    int chunks_run;      /* forward passes this job ran */
    int end;             /* images in the stream now: what the job reports as stream_end */
    double decode_ms, model_ms, fusion_ms;
} stream_result;

/* Loads <dir>/state.json into *st. Returns 1 when loaded, 0 when there is none (*st empty: a new
 * stream), -1 with err set when it is unreadable or invalid (*st empty). */
int stream_state_load(const char *dir, stream_state *st, char *err, size_t errlen);

/* Writes *st as <dir>/state.json atomically (creating dir, not its parents). Returns 0, or -1
 * with err set. */
int stream_state_save(const char *dir, const stream_state *st, char *err, size_t errlen);

/* Frees the state's arrays and zeroes it; safe on a zeroed struct. */
void stream_state_free(stream_state *st);

/* Writes "<dir>/chunk_<index:04d>.bin" into dst; 0, or -1 if it does not fit. */
int stream_chunk_path(char *dst, size_t cap, const char *dir, int index);

/* Allocates c for frames [start, end) of height x width (contents uninitialised). 0 or -1. */
int stream_chunk_alloc(stream_chunk *c, int index, int start, int new_start, int end, int height, int width);

/* Fills c's header (sizes, checksum) and writes the block as its chunk file atomically, creating
 * dir (not its parents). Returns 0, or -1 with err set. */
int stream_chunk_write(const char *dir, stream_chunk *c, char *err, size_t errlen);

/* Reads chunk `expect->index` and checks it: magic, version, byte order, sizes against the file's
 * length, checksum, and index/start/new_start/end/size against expect, height and width.
 * Returns 0, or -1 with err naming the file and the defect (*c then empty). */
int stream_chunk_read(const char *dir, const stream_chunk_info *expect, int height, int width, stream_chunk *c,
                      char *err, size_t errlen);

/* Frees the chunk's block and zeroes it; safe on a zeroed struct. */
void stream_chunk_free(stream_chunk *c);

/* The delta of chunk c: its new frames fused into the session's glTF frame, downsampled to
 * p->num_max_points, frustums of the new views coloured as views new_start.. of end. Chunk 0
 * defines that frame: it is fused exactly as the plain pipeline fuses its images, and *frame0
 * (may be NULL) receives the frame; later chunks use st->frame. Returns 0, or -1 with err set. */
int stream_chunk_delta(const stream_state *st, const stream_chunk *c, const fusion_params *p, point_cloud *out,
                       stream_frame *frame0, char *err, size_t errlen);

/* Runs one streaming job (one chunk, a committed chunk's rebuild, or a finalize) on the session
 * whose images are in image_dir. Returns 0 with *out filled, or -1 with a message for the client in
 * err (the stream's state on disk is then unchanged by the failed chunk). */
int stream_session_run(da3_model *m, const char *image_dir, const stream_request *rq, const pipeline_params *p,
                       pipeline_progress_fn progress, void *ctx, stream_result *out, char *err, size_t errlen);

/* The result's metadata JSON (malloc'd; NULL when out of memory): pipeline_metadata_json's fields
 * for every view in the stream plus "stream" (see docs/model.md). */
char *stream_metadata_json(const stream_result *r, const char *model_name, int model_trained, size_t glb_bytes);

/* Frees the result; safe on a zeroed struct. */
void stream_result_free(stream_result *r);

#endif
