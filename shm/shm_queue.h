/* The shared-memory segment between the front and its GPU/CPU workers: a bounded ring of job
 * slots, the job table, an event ring for progress, per-worker status and a blob arena that
 * holds finished GLBs (addressed by offset: each process maps the segment at its own address).
 *
 * One process-shared robust mutex guards all of it. Every operation under it is a few loads and
 * stores, so contention is negligible at inference rates; robustness matters more: if a worker
 * dies holding the lock, the next locker repairs derived state (the ring is rebuilt from the job
 * table) and carries on. Layout and protocol: docs/architecture.md. */
#ifndef DA3_SHM_QUEUE_H
#define DA3_SHM_QUEUE_H

#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>

#define SHMQ_MAGIC 0x4441335348513031ULL /* "DA3SHQ01" */
#define SHMQ_MAX_JOBS 256
#define SHMQ_MAX_WORKERS 64
#define SHMQ_EVENT_CAP 1024
#define SHMQ_MAX_ATTEMPTS 2 /* a job whose worker died is retried once on another worker */

typedef enum { JOB_FREE = 0, JOB_QUEUED, JOB_CLAIMED, JOB_DONE, JOB_FAILED } shmq_job_state;
typedef enum { WORKER_EMPTY = 0, WORKER_STARTING, WORKER_READY, WORKER_DEAD } shmq_worker_state;

/* What a worker needs to run one reconstruction; filled by the front. */
typedef struct {
    char session_id[40];
    char image_dir[640];     /* images are image_dir/NNNNNN.{jpg,png}, see common/session_files.h */
    int32_t image_count;     /* the first image_count images, frozen at submission */
    int32_t process_res;
    int32_t resize_method;   /* resize_method from worker/preprocess.h */
    int32_t ref_view;        /* ref_view_strategy from worker/model.h */
    double conf_thresh_percentile;
    int64_t num_max_points;
    int32_t show_cameras;
    uint64_t seed;
} shmq_job_params;

typedef struct {
    uint32_t state;          /* shmq_job_state */
    uint32_t attempts;       /* claims so far */
    uint32_t cancelled;      /* set by the front: result is unwanted */
    int32_t owner_pid;       /* worker holding the job (CLAIMED) */
    int32_t owner_worker;
    uint64_t job_id;         /* unique, increasing; 0 for a free slot */
    double t_queued, t_claimed, t_finished; /* CLOCK_MONOTONIC seconds */
    shmq_job_params params;
    uint64_t result_off;     /* arena block: GLB bytes then metadata JSON */
    uint64_t glb_len, meta_len;
    double decode_ms, model_ms, fusion_ms, glb_ms;
    char error[512];
} shmq_job;

typedef enum { EVENT_PROGRESS = 1 } shmq_event_kind;

typedef struct {
    uint32_t kind;
    uint32_t slot;
    uint64_t job_id;
    double progress;
    char stage[24];
    char message[200];
} shmq_event;

typedef struct {
    uint32_t state;          /* shmq_worker_state */
    int32_t pid;
    double started, heartbeat; /* CLOCK_MONOTONIC */
    uint64_t jobs_done, jobs_failed;
    int32_t model_trained;
    char device[32];
    char model_name[160];
    char error[256];
} shmq_worker;

typedef struct shmq shmq; /* a process's handle: mapping + fd */

/* Creates (front) the segment `name` with an arena of arena_bytes, removing a stale one left by a
 * crash. Returns NULL with err set. */
shmq *shmq_create(const char *name, size_t arena_bytes, char *err, size_t errlen);

/* Maps (worker) an existing segment. Returns NULL with err set. */
shmq *shmq_attach(const char *name, char *err, size_t errlen);

/* Unmaps; when `unlink_it`, also removes the name (the front on clean shutdown). */
void shmq_close(shmq *q, int unlink_it);

/* Queues a job; returns its slot (>=0) and sets *job_id, or -1 when the table is full. */
int shmq_submit(shmq *q, const shmq_job_params *p, uint64_t *job_id);

/* Worker: waits up to timeout_s for a queued job, claims it for (pid, worker). Returns the slot,
 * or -1 on timeout. *params and *job_id receive copies. */
int shmq_claim(shmq *q, int worker, double timeout_s, shmq_job_params *params, uint64_t *job_id);

/* Worker: reports progress for a claimed job (dropped silently if the event ring is full). */
void shmq_progress(shmq *q, int slot, uint64_t job_id, const char *stage, double progress,
                   const char *message);

/* Worker: reserves `len` arena bytes for the result of a claimed job; returns a pointer into
 * the mapping and its offset in *off, or NULL when the arena has no room. */
void *shmq_result_alloc(shmq *q, int slot, uint64_t job_id, size_t len, uint64_t *off);

/* Worker: marks a claimed job done with its result block (from shmq_result_alloc) and timings. */
void shmq_finish(shmq *q, int slot, uint64_t job_id, uint64_t off, size_t glb_len,
                 size_t meta_len, const double stage_ms[4]);

/* Worker: marks a claimed job failed with a message for the client. */
void shmq_fail(shmq *q, int slot, uint64_t job_id, const char *error);

/* Front: waits up to timeout_s for events/finished jobs. Returns after any activity or timeout. */
void shmq_wait_activity(shmq *q, double timeout_s);

/* Front: copies out up to max pending progress events; returns how many. */
int shmq_take_events(shmq *q, shmq_event *out, int max);

/* Front: finds one DONE or FAILED job, copies it into *out and returns its slot, or -1. The slot
 * stays owned by the front until shmq_release. */
int shmq_take_finished(shmq *q, shmq_job *out);

/* Front: frees a finished job's slot and its arena block. */
void shmq_release(shmq *q, int slot);

/* Front: cancels a job: a queued one is freed at once, a running one's result is discarded. */
void shmq_cancel(shmq *q, int slot, uint64_t job_id);

/* Front: after worker `pid` died, requeues its claimed jobs (or fails them after
 * SHMQ_MAX_ATTEMPTS) and frees their arena blocks. Returns the number of jobs affected. */
int shmq_recover_dead_worker(shmq *q, int pid);

/* Address of an arena offset in this process's mapping. */
const void *shmq_arena_ptr(shmq *q, uint64_t off);

/* Worker status slot `i` (front writes pid/state at fork, the worker fills the rest). */
shmq_worker *shmq_worker_slot(shmq *q, int i);

/* Locks/unlocks the segment for a consistent multi-field read (e.g. /status); keep it short. */
void shmq_lock(shmq *q);
void shmq_unlock(shmq *q);

/* Counts (under the lock): queued and claimed jobs. */
void shmq_counts(shmq *q, int *queued, int *running);

/* Arena usage in bytes (under the lock). */
void shmq_arena_usage(shmq *q, size_t *used, size_t *total);

/* Wakes every worker blocked in shmq_claim (used at shutdown). */
void shmq_wake_workers(shmq *q, int n);

#endif
