/* Per-worker status in the shared segment: written only through these functions (the front's
 * supervisor at fork and death, the worker when its model is loaded or fails), read by the
 * front as a snapshot for /status. */
#ifndef DA3_SHM_WORKER_TABLE_H
#define DA3_SHM_WORKER_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define SHMQ_MAX_WORKERS 64

typedef struct shmq shmq;

typedef enum { WORKER_EMPTY = 0, WORKER_STARTING, WORKER_READY, WORKER_DEAD } shmq_worker_state;

typedef struct {
    uint32_t state;          /* shmq_worker_state */
    int32_t pid;
    double started;          /* CLOCK_MONOTONIC, set at fork */
    uint64_t jobs_done, jobs_failed;
    int32_t model_trained;
    char device[32];
    char model_name[160];
    char blas[160];           /* the BLAS kernels in use, e.g. "Zen (OpenBLAS's choice)"; "" unknown */
    char error[256];         /* why it failed or exited; cleared at each start */
} shmq_worker;

/* Name of a shmq_worker_state for logs and /status ("empty", "starting", "ready", "dead"). */
const char *shmq_worker_state_name(uint32_t state);

/* Supervisor, after fork: worker i is process pid on device, loading its model. Does not undo a
 * READY already set by that same pid (a fast worker may get there first). */
void shmq_worker_set_starting(shmq *q, int i, int pid, const char *device);

/* Worker: its model is loaded; it takes jobs from now on. */
void shmq_worker_set_ready(shmq *q, int i, int pid, const char *model_name, int trained,
                           const char *device);

/* Worker: the BLAS kernels it runs (worker/blas_kernels.h's description); kept until the slot
 * is given to another pid. */
void shmq_worker_set_blas(shmq *q, int i, int pid, const char *blas);

/* Worker: records why it is about to exit (e.g. the model did not load). */
void shmq_worker_set_error(shmq *q, int i, const char *error);

/* Supervisor: worker i (process pid) has exited for `reason`; ignored if the slot has since
 * been given to another pid. */
void shmq_worker_mark_dead(shmq *q, int i, int pid, const char *reason);

/* Copies the first n worker slots (n <= SHMQ_MAX_WORKERS) consistently; returns how many. */
int shmq_worker_snapshot(shmq *q, shmq_worker *out, int n);

/* ---- inside shm/ only ------------------------------------------------------------------- */

typedef struct {
    shmq_worker w[SHMQ_MAX_WORKERS];
} shm_worker_table;

/* Counts one finished (ok) or failed job for worker i (no-op for an out-of-range index). */
void worker_table_count_locked(shm_worker_table *t, int i, int ok);

/* Repair after a process died inside the lock: unknown states become DEAD, strings are
 * terminated. Returns the number of slots changed. */
int worker_table_repair_locked(shm_worker_table *t);

#endif
