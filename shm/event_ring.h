/* Progress events, worker → front: a bounded ring in the shared segment. Events are advisory
 * (the job table is the truth), so a full ring drops new events rather than blocking a worker.
 * The caller of every *_locked function holds the segment lock. */
#ifndef DA3_SHM_EVENT_RING_H
#define DA3_SHM_EVENT_RING_H

#include <stddef.h>
#include <stdint.h>

#define SHMQ_EVENT_CAP 1024

typedef struct shmq shmq;

typedef enum {
    EVENT_PROGRESS = 1, /* a worker's stage/progress report */
    EVENT_REQUEUED = 2, /* the job's worker died; the job is queued again for `attempt` */
} shmq_event_kind;

typedef struct {
    uint32_t kind;       /* shmq_event_kind */
    uint32_t slot;
    uint64_t job_id;
    uint32_t attempt;    /* the attempt this event belongs to (1 = first claim) */
    uint32_t pad;
    double progress;     /* EVENT_PROGRESS: 0..1 */
    char session_id[40]; /* the job's session, so the front needs no slot->session map */
    char stage[24];
    char message[200];
} shmq_event;

/* Front: copies out up to max pending events, oldest first; returns how many. */
int shmq_take_events(shmq *q, shmq_event *out, int max);

/* ---- inside shm/ only ------------------------------------------------------------------- */

typedef struct {
    uint64_t head, tail; /* tail - head events are pending, 0 <= tail - head <= SHMQ_EVENT_CAP */
    shmq_event ev[SHMQ_EVENT_CAP];
} shm_event_ring;

/* Appends a copy of *e; returns 0, or -1 when the ring is full (the event is dropped). */
int event_ring_push_locked(shm_event_ring *r, const shmq_event *e);

/* Repair after a process died inside the lock: clamps the indices to a sane window.
 * Returns 1 if they had to be changed. */
int event_ring_repair_locked(shm_event_ring *r);

/* Checks the indices; returns 0, or -1 with err set. */
int event_ring_check_locked(const shm_event_ring *r, char *err, size_t errlen);

#endif
