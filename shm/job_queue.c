#include "shm/job_queue.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/fault.h"
#include "common/util.h"
#include "shm/layout.h"

static shm_job_table *table(shmq *q) { return &q->h->jobs; }

/* A job that still belongs to its session: not released, not cancelled. */
static int live_for(const shmq_job *j, const char *session_id) {
    return j->state != JOB_FREE && !j->cancelled &&
           strncmp(j->params.session_id, session_id, sizeof j->params.session_id) == 0;
}

static int submit_locked(shmq *q, const shmq_job_params *p, uint64_t *job_id) {
    shm_job_table *t = table(q);
    for (int i = 0; i < SHMQ_MAX_JOBS; i++) {
        shmq_job *j = &t->jobs[i];
        if (j->state != JOB_FREE) continue;
        memset(j, 0, sizeof *j);
        j->params = *p;
        j->params.session_id[sizeof j->params.session_id - 1] = 0;
        j->params.image_dir[sizeof j->params.image_dir - 1] = 0;
        j->job_id = t->next_job_id++;
        j->t_queued = now_mono();
        PUBLISH(j->state, JOB_QUEUED); /* last: a half-written slot is still FREE to a repairer */
        *job_id = j->job_id;
        return i;
    }
    return -1;
}

int shmq_submit(shmq *q, const shmq_job_params *p, uint64_t *job_id) {
    shmq_lock(q);
    int slot = submit_locked(q, p, job_id);
    shmq_unlock(q);
    if (slot >= 0) segment_post_jobs(q, 1);
    return slot;
}

int shmq_submit_unique(shmq *q, const shmq_job_params *p, uint64_t *job_id) {
    shm_job_table *t = table(q);
    int slot = -1, busy = 0;
    shmq_lock(q);
    for (int i = 0; i < SHMQ_MAX_JOBS && !busy; i++) busy = live_for(&t->jobs[i], p->session_id);
    if (!busy) slot = submit_locked(q, p, job_id);
    shmq_unlock(q);
    if (busy) return -2;
    if (slot >= 0) segment_post_jobs(q, 1);
    return slot;
}

int shmq_find_session_job(shmq *q, const char *session_id, shmq_job *out) {
    shm_job_table *t = table(q);
    int found = -1;
    shmq_lock(q);
    for (int i = 0; i < SHMQ_MAX_JOBS; i++)
        if (live_for(&t->jobs[i], session_id) && (found < 0 || t->jobs[i].job_id > t->jobs[found].job_id))
            found = i;
    if (found >= 0) *out = t->jobs[found];
    shmq_unlock(q);
    return found;
}

/* Oldest queued job (smallest id), or -1. Linear in the table, which is small (256). */
static int oldest_queued_locked(shm_job_table *t) {
    int best = -1;
    for (int i = 0; i < SHMQ_MAX_JOBS; i++)
        if (t->jobs[i].state == JOB_QUEUED && (best < 0 || t->jobs[i].job_id < t->jobs[best].job_id))
            best = i;
    return best;
}

static int claim_locked(shmq *q, int worker, shmq_job_params *params, uint64_t *job_id) {
    shm_job_table *t = table(q);
    int s = oldest_queued_locked(t);
    if (s < 0) return -1;
    shmq_job *j = &t->jobs[s];
    /* Owner first, state last: a claim torn by a death is still QUEUED, or CLAIMED by a pid
     * the supervisor will reap. */
    j->owner_pid = getpid();
    j->owner_worker = worker;
    j->t_claimed = now_mono();
    j->attempts++;
    PUBLISH(j->state, JOB_CLAIMED);
    *params = j->params;
    *job_id = j->job_id;
    return s;
}

int shmq_claim(shmq *q, int worker, double timeout_s, shmq_job_params *params, uint64_t *job_id) {
    /* The semaphore is only a wake-up hint: the table is scanned before and after each wait,
     * so a token lost with a dead worker, or one left by a cancelled job, costs at most one
     * timeout or one empty pass, never a stranded job. */
    shmq_lock(q);
    int slot = claim_locked(q, worker, params, job_id);
    shmq_unlock(q);
    if (slot >= 0) return slot;
    segment_wait_jobs(q, timeout_s);
    shmq_lock(q);
    slot = claim_locked(q, worker, params, job_id);
    shmq_unlock(q);
    return slot;
}

static shmq_job *owned(shmq *q, int slot, uint64_t job_id) {
    if (slot < 0 || slot >= SHMQ_MAX_JOBS) return NULL;
    shmq_job *j = &table(q)->jobs[slot];
    return j->job_id == job_id && j->state == JOB_CLAIMED && j->owner_pid == getpid() ? j : NULL;
}

void shmq_progress(shmq *q, int slot, uint64_t job_id, const char *stage, double progress,
                   const char *message) {
    shmq_lock(q);
    shmq_job *j = owned(q, slot, job_id);
    int ok = 0;
    if (j) {
        shmq_event e;
        memset(&e, 0, sizeof e);
        e.kind = EVENT_PROGRESS;
        e.slot = (uint32_t)slot;
        e.job_id = job_id;
        e.attempt = j->attempts;
        e.progress = progress;
        snprintf(e.session_id, sizeof e.session_id, "%s", j->params.session_id);
        snprintf(e.stage, sizeof e.stage, "%s", stage);
        snprintf(e.message, sizeof e.message, "%s", message);
        ok = event_ring_push_locked(&q->h->events, &e) == 0;
    }
    shmq_unlock(q);
    if (ok) segment_post_activity(q);
}

void *shmq_result_alloc(shmq *q, int slot, uint64_t job_id, size_t len, uint64_t *off) {
    void *ptr = NULL;
    shmq_lock(q);
    if (owned(q, slot, job_id)) {
        arena_free_tag_locked(&q->h->arena, (char *)q->h, job_id); /* left by an earlier try */
        uint64_t o = arena_alloc_locked(&q->h->arena, (char *)q->h, job_id, len);
        if (o) {
            *off = o;
            ptr = (char *)q->h + o;
        }
    }
    shmq_unlock(q);
    return ptr;
}

void shmq_finish(shmq *q, int slot, uint64_t job_id, uint64_t off, size_t glb_len,
                 size_t meta_len, const double stage_ms[4]) {
    shmq_lock(q);
    shmq_job *j = owned(q, slot, job_id);
    if (j) {
        j->result_off = off;
        j->glb_len = glb_len;
        j->meta_len = meta_len;
        j->decode_ms = stage_ms[0];
        j->model_ms = stage_ms[1];
        j->fusion_ms = stage_ms[2];
        j->glb_ms = stage_ms[3];
        /* A test kills us here: the result is recorded but the job is not DONE, and we hold the lock. */
        fault_point("worker_holding_lock");
        PUBLISH(j->state, JOB_DONE);
        worker_table_count_locked(&q->h->workers, j->owner_worker, 1);
    }
    shmq_unlock(q);
    if (j) segment_post_activity(q);
}

void shmq_set_stream_end(shmq *q, int slot, uint64_t job_id, int end) {
    shmq_lock(q);
    shmq_job *j = owned(q, slot, job_id);
    if (j) j->stream_end = end;
    shmq_unlock(q);
}

void shmq_fail(shmq *q, int slot, uint64_t job_id, const char *error) {
    shmq_lock(q);
    shmq_job *j = owned(q, slot, job_id);
    if (j) {
        arena_free_tag_locked(&q->h->arena, (char *)q->h, job_id);
        snprintf(j->error, sizeof j->error, "%s", error);
        j->state = JOB_FAILED;
        worker_table_count_locked(&q->h->workers, j->owner_worker, 0);
    }
    shmq_unlock(q);
    if (j) segment_post_activity(q);
}

static void release_locked(shmq *q, int slot) {
    shmq_job *j = &table(q)->jobs[slot];
    arena_free_tag_locked(&q->h->arena, (char *)q->h, j->job_id);
    j->state = JOB_FREE;
    j->taken = 0;
    j->cancelled = 0;
    j->job_id = 0;
}

int shmq_take_finished(shmq *q, shmq_job *out) {
    shm_job_table *t = table(q);
    int found = -1;
    shmq_lock(q);
    for (int i = 0; i < SHMQ_MAX_JOBS && found < 0; i++) {
        shmq_job *j = &t->jobs[i];
        if ((j->state != JOB_DONE && j->state != JOB_FAILED) || j->taken) continue;
        if (j->cancelled) {
            release_locked(q, i);
            continue;
        }
        j->taken = 1;
        *out = *j;
        found = i;
    }
    shmq_unlock(q);
    return found;
}

void shmq_release(shmq *q, int slot) {
    if (slot < 0 || slot >= SHMQ_MAX_JOBS) return;
    shmq_lock(q);
    /* Only a slot the front took: a late or repeated release must not free a reused slot. */
    if (table(q)->jobs[slot].taken) release_locked(q, slot);
    shmq_unlock(q);
}

/* Returns 1 if the job was live and is now cancelled (or freed). */
static int cancel_locked(shmq *q, int slot) {
    shmq_job *j = &table(q)->jobs[slot];
    if (j->state == JOB_FREE || j->cancelled) return 0;
    if (j->state == JOB_QUEUED || ((j->state == JOB_DONE || j->state == JOB_FAILED) && !j->taken))
        release_locked(q, slot); /* nothing else refers to it: claimers scan the table */
    else
        j->cancelled = 1; /* running, or being delivered: its owner frees it */
    return 1;
}

void shmq_cancel(shmq *q, int slot, uint64_t job_id) {
    if (slot < 0 || slot >= SHMQ_MAX_JOBS) return;
    shmq_lock(q);
    if (table(q)->jobs[slot].job_id == job_id) cancel_locked(q, slot);
    shmq_unlock(q);
}

int shmq_cancel_session(shmq *q, const char *session_id, shmq_job *cancelled) {
    int n = 0;
    shmq_lock(q);
    for (int i = 0; i < SHMQ_MAX_JOBS; i++)
        if (live_for(&table(q)->jobs[i], session_id)) {
            if (cancelled) *cancelled = table(q)->jobs[i]; /* as it was, for the caller's log */
            n += cancel_locked(q, i);
        }
    shmq_unlock(q);
    return n;
}

int shmq_recover_dead_worker(shmq *q, int pid) {
    shm_job_table *t = table(q);
    int affected = 0, requeued = 0;
    shmq_lock(q);
    for (int i = 0; i < SHMQ_MAX_JOBS; i++) {
        shmq_job *j = &t->jobs[i];
        if (j->state != JOB_CLAIMED || j->owner_pid != pid) continue;
        affected++;
        arena_free_tag_locked(&q->h->arena, (char *)q->h, j->job_id);
        if (j->cancelled) {
            release_locked(q, i);
        } else if (j->attempts < SHMQ_MAX_ATTEMPTS) {
            j->owner_pid = 0;
            PUBLISH(j->state, JOB_QUEUED); /* keeps its id, so it is claimed before newer jobs */
            requeued++;
            shmq_event e;
            memset(&e, 0, sizeof e);
            e.kind = EVENT_REQUEUED;
            e.slot = (uint32_t)i;
            e.job_id = j->job_id;
            e.attempt = j->attempts + 1;
            snprintf(e.session_id, sizeof e.session_id, "%s", j->params.session_id);
            snprintf(e.stage, sizeof e.stage, "queued");
            snprintf(e.message, sizeof e.message,
                     "The worker process died; retrying (attempt %u of %d)", j->attempts + 1,
                     SHMQ_MAX_ATTEMPTS);
            event_ring_push_locked(&q->h->events, &e);
        } else {
            snprintf(j->error, sizeof j->error,
                     "the worker process died while processing this request (%u attempts); "
                     "the session and its images are kept, you can generate again",
                     j->attempts);
            j->state = JOB_FAILED;
        }
    }
    shmq_unlock(q);
    if (requeued) segment_post_jobs(q, requeued);
    if (affected) segment_post_activity(q);
    return affected;
}

void shmq_counts(shmq *q, int *queued, int *running) {
    shm_job_table *t = table(q);
    int qd = 0, rn = 0;
    shmq_lock(q);
    for (int i = 0; i < SHMQ_MAX_JOBS; i++) {
        qd += t->jobs[i].state == JOB_QUEUED;
        rn += t->jobs[i].state == JOB_CLAIMED;
    }
    shmq_unlock(q);
    *queued = qd;
    *running = rn;
}

/* Arena blocks are kept only for jobs that can still use them. */
static int job_keeps_block(uint64_t tag, void *ctx) {
    shm_job_table *t = ctx;
    for (int i = 0; i < SHMQ_MAX_JOBS; i++)
        if (t->jobs[i].job_id == tag && (t->jobs[i].state == JOB_CLAIMED || t->jobs[i].state == JOB_DONE))
            return 1;
    return 0;
}

int job_table_repair_locked(shmq *q) {
    shm_job_table *t = table(q);
    int fixed = 0;
    for (int i = 0; i < SHMQ_MAX_JOBS; i++) {
        shmq_job *j = &t->jobs[i];
        if (j->state > JOB_FAILED || (j->state != JOB_FREE && j->job_id == 0)) {
            memset(j, 0, sizeof *j);
            fixed++;
            continue;
        }
        if (j->state == JOB_FREE) {
            if (j->job_id || j->taken || j->cancelled) fixed++;
            j->job_id = 0;
            j->taken = j->cancelled = 0;
            continue;
        }
        if (j->job_id >= t->next_job_id) {
            t->next_job_id = j->job_id + 1;
            fixed++;
        }
        if (j->taken && j->state != JOB_DONE && j->state != JOB_FAILED) {
            j->taken = 0;
            fixed++;
        }
        if (j->state == JOB_CLAIMED && j->owner_pid <= 0) {
            j->state = JOB_QUEUED; /* nobody will ever finish or recover it */
            fixed++;
        }
        j->params.session_id[sizeof j->params.session_id - 1] = 0;
        j->params.image_dir[sizeof j->params.image_dir - 1] = 0;
        j->error[sizeof j->error - 1] = 0;
    }
    if (t->next_job_id == 0) t->next_job_id = 1;
    /* Results and blocks must agree: a DONE job whose block went with a torn arena header is
     * failed with a message (the client can generate again), a block no job can use is freed. */
    for (int i = 0; i < SHMQ_MAX_JOBS; i++) {
        shmq_job *j = &t->jobs[i];
        if (j->state != JOB_DONE ||
            arena_holds_locked(&q->h->arena, (char *)q->h, j->result_off, j->job_id, j->glb_len + j->meta_len))
            continue;
        snprintf(j->error, sizeof j->error,
                 "the result was lost when a process died inside the shared queue; generate again");
        j->state = JOB_FAILED;
        fixed++;
    }
    fixed += arena_free_unless_locked(&q->h->arena, (char *)q->h, job_keeps_block, t);
    return fixed;
}

int job_table_check_locked(shmq *q, char *err, size_t errlen) {
    shm_job_table *t = table(q);
    for (int i = 0; i < SHMQ_MAX_JOBS; i++) {
        const shmq_job *j = &t->jobs[i];
        const char *bad = NULL;
        if (j->state > JOB_FAILED) bad = "unknown state";
        else if (j->state == JOB_FREE && j->job_id) bad = "free slot with a job id";
        else if (j->state != JOB_FREE && (j->job_id == 0 || j->job_id >= t->next_job_id))
            bad = "job id out of range";
        else if (j->taken && j->state != JOB_DONE && j->state != JOB_FAILED) bad = "taken while unfinished";
        else if (j->state == JOB_CLAIMED && j->owner_pid <= 0) bad = "claimed without an owner";
        else if (j->state == JOB_DONE &&
                 !arena_holds_locked(&q->h->arena, (char *)q->h, j->result_off, j->job_id, j->glb_len + j->meta_len))
            bad = "done without its result block";
        for (int k = i + 1; !bad && j->state != JOB_FREE && k < SHMQ_MAX_JOBS; k++)
            if (t->jobs[k].state != JOB_FREE && t->jobs[k].job_id == j->job_id) bad = "duplicate job id";
        if (bad) {
            snprintf(err, errlen, "job slot %d (id %llu, state %u): %s", i,
                     (unsigned long long)j->job_id, j->state, bad);
            return -1;
        }
    }
    /* Every used block belongs to a job that can still use it (a leak otherwise). */
    int orphans = arena_count_unless_locked(&q->h->arena, (char *)q->h, job_keeps_block, t);
    if (orphans) {
        snprintf(err, errlen, "%d arena block(s) owned by no running or finished job", orphans);
        return -1;
    }
    return 0;
}
