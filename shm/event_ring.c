#include "shm/event_ring.h"

#include <stdio.h>

#include "shm/layout.h"

int event_ring_push_locked(shm_event_ring *r, const shmq_event *e) {
    if (r->tail - r->head >= SHMQ_EVENT_CAP) return -1;
    r->ev[r->tail % SHMQ_EVENT_CAP] = *e;
    r->tail++; /* after the copy: a reader never sees a half-written event */
    return 0;
}

int event_ring_repair_locked(shm_event_ring *r) {
    /* Only the indices can be torn (each is one store); an overfull or reversed window would
     * make the front replay stale events forever, so the pending events are dropped. */
    if (r->tail - r->head <= SHMQ_EVENT_CAP) return 0;
    r->head = r->tail;
    return 1;
}

int event_ring_check_locked(const shm_event_ring *r, char *err, size_t errlen) {
    if (r->tail - r->head > SHMQ_EVENT_CAP) {
        snprintf(err, errlen, "event ring indices out of range (head %llu, tail %llu)",
                 (unsigned long long)r->head, (unsigned long long)r->tail);
        return -1;
    }
    return 0;
}

int shmq_take_events(shmq *q, shmq_event *out, int max) {
    shm_event_ring *r = &q->h->events;
    int n = 0;
    shmq_lock(q);
    while (n < max && r->head != r->tail) out[n++] = r->ev[r->head++ % SHMQ_EVENT_CAP];
    shmq_unlock(q);
    return n;
}
