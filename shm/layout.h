/* Inside shm/ only: the segment's header, the process-local handle, and the wake-up helpers
 * the modules share. Every part of the header belongs to one module (job_queue, event_ring,
 * worker_table, arena); segment.c owns the rest: identity, the lock and its repair. */
#ifndef DA3_SHM_LAYOUT_H
#define DA3_SHM_LAYOUT_H

/* A store that makes a slot's other fields count (a job's state, a block's `used`): a release
 * store, so neither the compiler nor the CPU moves the fields written before it after it, and a
 * process killed at any instant leaves either the old or the fully written record. */
#define PUBLISH(field, value) __atomic_store_n(&(field), (value), __ATOMIC_RELEASE)

#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>

#include "shm/arena.h"
#include "shm/event_ring.h"
#include "shm/job_queue.h"
#include "shm/segment.h"
#include "shm/worker_table.h"

#define SHMQ_MAGIC 0x4441335348513035ULL /* "DA3SHQ05": layout 5 (no job ring, 160-byte BLAS text, auto and streaming jobs) */

typedef struct {
    /* Identity first, at fixed offsets: a second front reads owner_pid with pread(). */
    uint64_t magic;
    uint64_t total_size;
    int32_t owner_pid;  /* the front that created the segment and holds its flock */
    uint32_t pad;
    pthread_mutex_t lock; /* process-shared, robust: guards everything below */
    sem_t jobs_sem;       /* hint: "a job was queued" (wakes a worker) */
    sem_t activity_sem;   /* hint: "an event or a finished job" (wakes the front) */
    shm_job_table jobs;
    shm_event_ring events;
    shm_worker_table workers;
    shm_arena arena;      /* the blocks follow the header, page-aligned */
} shmq_header;

struct shmq {
    shmq_header *h;
    size_t size;
    int fd;
    int owner; /* this handle created the segment and holds its flock */
    char name[128];
};

/* Posts n "job queued" wake-ups. */
void segment_post_jobs(shmq *q, int n);

/* Posts one "activity" wake-up for the front. */
void segment_post_activity(shmq *q);

/* Waits up to timeout_s for a "job queued" wake-up. */
void segment_wait_jobs(shmq *q, double timeout_s);

#endif
