/* The job table: the one record of every reconstruction between submission and the front's
 * release of its result, and of which session it belongs to. There is no separate queue: a
 * worker claims the oldest QUEUED job (smallest job id) by scanning the table, so a cancelled
 * job leaves nothing behind and a requeued job keeps its place. Life cycle and failure handling:
 * docs/architecture.md. */
#ifndef DA3_SHM_JOB_QUEUE_H
#define DA3_SHM_JOB_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#define SHMQ_MAX_JOBS 256
#define SHMQ_MAX_ATTEMPTS 2 /* a job whose worker died is retried once on another worker */

typedef struct shmq shmq;

typedef enum { JOB_FREE = 0, JOB_QUEUED, JOB_CLAIMED, JOB_DONE, JOB_FAILED } shmq_job_state;

/* What a worker needs to run one reconstruction, plus the front's own metadata; filled by the
 * front. */
typedef struct {
    char session_id[40];
    char image_dir[640];     /* images are image_dir/NNNNNN.{jpg,png,heic,webp}, see common/session_files.h */
    int32_t image_count;     /* the first image_count images, frozen at submission */
    int32_t process_res;
    int32_t resize_method;   /* resize_method from worker/preprocess.h */
    int32_t ref_view;        /* ref_view_strategy from worker/model.h */
    double conf_thresh_percentile;
    int64_t num_max_points;
    int32_t show_cameras;
    int32_t finalize, incremental; /* front only: how to report the result (workers ignore them) */
    int32_t auto_generated;        /* front only: started by auto_generate_after, not by the client */
    /* Streaming sessions (worker/stream_session.h): stream_chunk_size > 0 makes this a chunk job
     * (the next chunk after image stream_from; a finalize runs every chunk left, then merges). */
    int32_t stream_chunk_size, stream_overlap;
    int32_t stream_from;           /* images [0, stream_from) were already in the stream when queued */
    uint64_t seed;
} shmq_job_params;

typedef struct {
    uint32_t state;          /* shmq_job_state */
    uint32_t attempts;       /* claims so far */
    uint32_t cancelled;      /* set by the front: result is unwanted */
    uint32_t taken;          /* DONE/FAILED and handed to the front, awaiting shmq_release */
    int32_t owner_pid;       /* worker holding the job (CLAIMED) */
    int32_t owner_worker;
    uint64_t job_id;         /* unique, increasing, also the claim order; 0 for a free slot */
    double t_queued, t_claimed; /* CLOCK_MONOTONIC seconds */
    shmq_job_params params;
    uint64_t result_off;     /* arena data offset: GLB bytes then metadata JSON */
    uint64_t glb_len, meta_len;
    double decode_ms, model_ms, fusion_ms, glb_ms;
    int32_t stream_end;      /* streaming: images [0, stream_end) are in the stream after this job */
    char error[512];
} shmq_job;

/* Front: queues a job; returns its slot (>=0) and sets *job_id, or -1 when the table is full. */
int shmq_submit(shmq *q, const shmq_job_params *p, uint64_t *job_id);

/* Front: as shmq_submit, but atomically refuses (-2) when p->session_id already has a job that
 * is not cancelled and not yet released; -1 table full. */
int shmq_submit_unique(shmq *q, const shmq_job_params *p, uint64_t *job_id);

/* Front: copies the session's live (not cancelled, not released) job into *out; returns its
 * slot, or -1 if it has none. */
int shmq_find_session_job(shmq *q, const char *session_id, shmq_job *out);

/* Front: cancels every live job of the session (as shmq_cancel); returns how many, and copies
 * the (last) cancelled job as it was into *cancelled when that is not NULL. */
int shmq_cancel_session(shmq *q, const char *session_id, shmq_job *cancelled);

/* Worker: claims the oldest queued job for (this pid, worker), waiting up to timeout_s for one.
 * Returns the slot, or -1 on timeout. *params and *job_id receive copies. */
int shmq_claim(shmq *q, int worker, double timeout_s, shmq_job_params *params, uint64_t *job_id);

/* Worker: reports progress for its claimed job (dropped if the event ring is full). */
void shmq_progress(shmq *q, int slot, uint64_t job_id, const char *stage, double progress,
                   const char *message);

/* Worker: reserves `len` arena bytes for its claimed job's result; returns a pointer into the
 * mapping and its offset in *off, or NULL when the arena has no room. */
void *shmq_result_alloc(shmq *q, int slot, uint64_t job_id, size_t len, uint64_t *off);

/* Worker: marks its claimed job done with its result block (from shmq_result_alloc) and timings. */
void shmq_finish(shmq *q, int slot, uint64_t job_id, uint64_t off, size_t glb_len,
                 size_t meta_len, const double stage_ms[4]);

/* Worker: records how far a streaming job took the session's stream (before shmq_finish). */
void shmq_set_stream_end(shmq *q, int slot, uint64_t job_id, int end);

/* Worker: marks its claimed job failed with a message for the client. */
void shmq_fail(shmq *q, int slot, uint64_t job_id, const char *error);

/* Front: finds one DONE or FAILED job, copies it into *out and returns its slot, or -1. The slot
 * stays owned by the front until shmq_release. Cancelled ones are freed on the way. */
int shmq_take_finished(shmq *q, shmq_job *out);

/* Front: frees a slot handed out by shmq_take_finished, with its arena block. */
void shmq_release(shmq *q, int slot);

/* Front: cancels a job: a queued one is freed at once, a running one's result is discarded. */
void shmq_cancel(shmq *q, int slot, uint64_t job_id);

/* Front: after worker process pid died, requeues its claimed jobs (posting an EVENT_REQUEUED
 * each) or fails them after SHMQ_MAX_ATTEMPTS, and frees their arena blocks. Returns the number
 * of jobs affected. */
int shmq_recover_dead_worker(shmq *q, int pid);

/* Queued and claimed job counts. */
void shmq_counts(shmq *q, int *queued, int *running);

/* ---- inside shm/ only ------------------------------------------------------------------- */

typedef struct {
    uint64_t next_job_id;
    shmq_job jobs[SHMQ_MAX_JOBS];
} shm_job_table;

/* Repair after a process died inside the lock (run after the arena's own repair): unknown
 * states freed, id counter past every id, a claim torn before its owner was written requeued,
 * results whose block is gone failed, arena blocks no job owns freed. Returns defects fixed. */
int job_table_repair_locked(shmq *q);

/* Checks the table's invariants and its agreement with the arena; 0, or -1 with err set. */
int job_table_check_locked(shmq *q, char *err, size_t errlen);

#endif
