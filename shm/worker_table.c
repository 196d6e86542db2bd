#include "shm/worker_table.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "shm/layout.h"

static shmq_worker *slot(shmq *q, int i) {
    return i >= 0 && i < SHMQ_MAX_WORKERS ? &q->h->workers.w[i] : NULL;
}

const char *shmq_worker_state_name(uint32_t state) {
    static const char *names[] = {"empty", "starting", "ready", "dead"};
    return state < 4 ? names[state] : "unknown";
}

void shmq_worker_set_starting(shmq *q, int i, int pid, const char *device) {
    shmq_worker *w = slot(q, i);
    if (!w) return;
    shmq_lock(q);
    if (!(w->pid == pid && w->state == WORKER_READY)) {
        if (w->pid != pid) w->blas[0] = 0; /* the same pid may have written it already */
        w->pid = pid;
        w->started = now_mono();
        w->model_name[0] = 0;
        w->error[0] = 0; /* from here on: this process's own story */
        snprintf(w->device, sizeof w->device, "%s", device);
        w->state = WORKER_STARTING;
    }
    shmq_unlock(q);
}

void shmq_worker_set_ready(shmq *q, int i, int pid, const char *model_name, int trained,
                           const char *device) {
    shmq_worker *w = slot(q, i);
    if (!w) return;
    shmq_lock(q);
    w->pid = pid;
    w->model_trained = trained;
    snprintf(w->model_name, sizeof w->model_name, "%s", model_name);
    snprintf(w->device, sizeof w->device, "%s", device);
    w->error[0] = 0;
    w->state = WORKER_READY;
    shmq_unlock(q);
}

void shmq_worker_set_blas(shmq *q, int i, int pid, const char *blas) {
    shmq_worker *w = slot(q, i);
    if (!w) return;
    shmq_lock(q);
    if (w->pid != pid) w->blas[0] = 0;
    w->pid = pid;
    snprintf(w->blas, sizeof w->blas, "%s", blas);
    shmq_unlock(q);
}

void shmq_worker_set_error(shmq *q, int i, const char *error) {
    shmq_worker *w = slot(q, i);
    if (!w) return;
    shmq_lock(q);
    snprintf(w->error, sizeof w->error, "%s", error);
    shmq_unlock(q);
}

void shmq_worker_mark_dead(shmq *q, int i, int pid, const char *reason) {
    shmq_worker *w = slot(q, i);
    if (!w) return;
    shmq_lock(q);
    if (w->pid == pid) {
        /* A failure the worker recorded (e.g. its model did not load) says more than its exit
         * status: keep it in front. */
        char own[sizeof w->error];
        snprintf(own, sizeof own, "%s", w->error);
        if (own[0]) snprintf(w->error, sizeof w->error, "%.180s (%s)", own, reason);
        else snprintf(w->error, sizeof w->error, "%s", reason);
        w->state = WORKER_DEAD;
    }
    shmq_unlock(q);
}

int shmq_worker_snapshot(shmq *q, shmq_worker *out, int n) {
    if (n > SHMQ_MAX_WORKERS) n = SHMQ_MAX_WORKERS;
    if (n < 0) n = 0;
    shmq_lock(q);
    memcpy(out, q->h->workers.w, (size_t)n * sizeof *out);
    shmq_unlock(q);
    return n;
}

void worker_table_count_locked(shm_worker_table *t, int i, int ok) {
    if (i < 0 || i >= SHMQ_MAX_WORKERS) return;
    if (ok) t->w[i].jobs_done++;
    else t->w[i].jobs_failed++;
}

int worker_table_repair_locked(shm_worker_table *t) {
    int changed = 0;
    for (int i = 0; i < SHMQ_MAX_WORKERS; i++) {
        shmq_worker *w = &t->w[i];
        if (w->state > WORKER_DEAD) {
            w->state = WORKER_DEAD;
            changed++;
        }
        w->device[sizeof w->device - 1] = 0;
        w->model_name[sizeof w->model_name - 1] = 0;
        w->blas[sizeof w->blas - 1] = 0;
        w->error[sizeof w->error - 1] = 0;
    }
    return changed;
}
