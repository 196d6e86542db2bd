#include "frontend/jobs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "frontend/messages.h"
#include "frontend/server.h"
#include "frontend/ws.h"

/* Which session owns each job slot. The entry holds a session reference until the job ends. */
static struct {
    pthread_mutex_t lock;
    session *owner[SHMQ_MAX_JOBS];
    uint64_t job_id[SHMQ_MAX_JOBS];
} slots = {.lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_t dispatcher;
/* Result senders still running: shutdown waits for them before the arena is unmapped. */
static atomic_int deliveries_in_flight;
static int dispatcher_running;

int jobs_submit(session *s, int finalize, int incremental, char *err, size_t errlen) {
    if (s->image_count == 0) {
        snprintf(err, errlen, "No images in session");
        return -1;
    }
    if (s->job_slot >= 0) {
        snprintf(err, errlen,
                 "A reconstruction is already running for this session; wait for its result");
        return -1;
    }
    shmq_job_params p;
    memset(&p, 0, sizeof p);
    snprintf(p.session_id, sizeof p.session_id, "%s", s->id);
    snprintf(p.image_dir, sizeof p.image_dir, "%s", s->image_dir);
    p.image_count = s->image_count;
    p.process_res = s->cfg.process_res;
    p.resize_method = s->cfg.method;
    p.ref_view = 0; /* saddle_balanced, DA3's default */
    p.conf_thresh_percentile = s->cfg.conf_thresh_percentile;
    p.num_max_points = s->cfg.num_max_points;
    p.show_cameras = s->cfg.show_cameras;
    p.seed = 42; /* fixed: the same images give the same GLB */
    uint64_t job_id;
    int slot = shmq_submit(g_server.q, &p, &job_id);
    if (slot < 0) {
        snprintf(err, errlen, "The server's job queue is full (%d jobs); try again shortly",
                 SHMQ_MAX_JOBS);
        return -1;
    }
    pthread_mutex_lock(&slots.lock);
    slots.owner[slot] = sessions_get(s->id);
    slots.job_id[slot] = job_id;
    pthread_mutex_unlock(&slots.lock);
    s->job_slot = slot;
    s->job_id = job_id;
    s->job_finalize = finalize;
    s->job_incremental = incremental;
    s->job_images = s->image_count;
    s->job_submitted = now_mono();
    s->status = SESSION_PROCESSING;
    session_touch(s);
    session_save(s);
    return 0;
}

/* Takes the owner of a slot out of the table (returns its reference), if job_id matches. */
static session *slot_take(int slot, uint64_t job_id) {
    session *s = NULL;
    pthread_mutex_lock(&slots.lock);
    if (slots.owner[slot] && slots.job_id[slot] == job_id) {
        s = slots.owner[slot];
        slots.owner[slot] = NULL;
    }
    pthread_mutex_unlock(&slots.lock);
    return s;
}

static session *slot_peek(int slot, uint64_t job_id) {
    session *s = NULL;
    pthread_mutex_lock(&slots.lock);
    if (slots.owner[slot] && slots.job_id[slot] == job_id) s = sessions_get(slots.owner[slot]->id);
    pthread_mutex_unlock(&slots.lock);
    return s;
}

void jobs_cancel(session *s) {
    if (s->job_slot < 0) return;
    shmq_cancel(g_server.q, s->job_slot, s->job_id);
    session *owner = slot_take(s->job_slot, s->job_id);
    if (owner) sessions_put(owner);
    s->job_slot = -1;
    s->job_id = 0;
    if (s->status == SESSION_PROCESSING) s->status = SESSION_ACTIVE;
}

/* Ends the session's job: status per outcome, persisted. */
static void finish_session_job(session *s, uint64_t job_id, int ok, const char *error) {
    pthread_mutex_lock(&s->lock);
    if (s->job_id == job_id) {
        s->job_slot = -1;
        s->job_id = 0;
        if (ok) {
            s->status = s->job_finalize ? SESSION_COMPLETED : SESSION_ACTIVE;
        } else {
            s->status = SESSION_ERROR;
            free(s->error_message);
            s->error_message = strdup(error);
        }
        session_touch(s);
        if (!s->deleted) session_save(s);
    }
    pthread_mutex_unlock(&s->lock);
}

typedef struct {
    session *s;
    int slot;
    shmq_job job;
} result_delivery;

/* Encodes one finished GLB straight from the arena into a message and sends it. Runs on its own
 * thread so one slow client never delays other sessions' progress or results. */
static void *deliver_result(void *arg) {
    result_delivery *d = arg;
    session *s = d->s;
    const shmq_job *j = &d->job;
    double t0 = now_mono();
    const uint8_t *glb = shmq_arena_ptr(g_server.q, j->result_off);
    const char *meta = (const char *)glb + j->glb_len;
    pthread_mutex_lock(&s->lock);
    const char *type = s->job_finalize || !s->job_incremental ? "complete" : "delta";
    pthread_mutex_unlock(&s->lock);
    size_t len = 0;
    double extra_ms[2] = {(j->t_claimed - j->t_queued) * 1e3, j->glb_ms};
    char *text = msg_result(type, j->params.image_count, glb, j->glb_len, meta, j->meta_len, s->id,
                            extra_ms, &len);
    shmq_release(g_server.q, d->slot); /* the arena block is no longer needed */
    double t1 = now_mono();
    if (!text) {
        finish_session_job(s, j->job_id, 0, "could not encode the result");
        char *e = msg_error("Failed to generate point cloud: could not encode the result");
        ws_send_to_session(s, e, strlen(e));
        free(e);
    } else {
        /* The job ends before the result goes out: a client may send its next generate the
         * moment it has the result, and that must not find this job still running. */
        finish_session_job(s, j->job_id, 1, NULL);
        int sent = ws_send_to_session(s, text, len) == 0;
        log_info("session %s: %s sent (%d images, GLB %llu B, message %zu B): queue %.0f ms, "
                 "decode %.0f, model %.0f, fusion %.0f, glb %.0f, encode %.0f, send %.0f ms%s",
                 s->id, type, j->params.image_count, (unsigned long long)j->glb_len, len,
                 (j->t_claimed - j->t_queued) * 1e3, j->decode_ms, j->model_ms, j->fusion_ms,
                 j->glb_ms, (t1 - t0) * 1e3, (now_mono() - t1) * 1e3,
                 sent ? "" : " (no socket attached: result dropped, generate again after reconnecting)");
    }
    free(text);
    sessions_put(s);
    free(d);
    atomic_fetch_sub(&deliveries_in_flight, 1);
    return NULL;
}

static void handle_finished(int slot, const shmq_job *j) {
    session *s = slot_take(slot, j->job_id);
    if (!s) { /* cancelled or deleted meanwhile */
        shmq_release(g_server.q, slot);
        return;
    }
    if (j->state == JOB_FAILED) {
        pthread_mutex_lock(&s->lock);
        int finalize = s->job_finalize;
        pthread_mutex_unlock(&s->lock);
        char msg[700];
        snprintf(msg, sizeof msg, "%s: %s",
                 finalize ? "Failed to finalize" : "Failed to generate point cloud", j->error);
        shmq_release(g_server.q, slot);
        finish_session_job(s, j->job_id, 0, j->error);
        char *e = msg_error(msg);
        ws_send_to_session(s, e, strlen(e));
        free(e);
        log_warn("session %s: job %llu failed: %s", s->id, (unsigned long long)j->job_id, j->error);
        sessions_put(s);
        return;
    }
    result_delivery *d = malloc(sizeof *d);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    d->s = s;
    d->slot = slot;
    d->job = *j;
    atomic_fetch_add(&deliveries_in_flight, 1);
    if (pthread_create(&t, &attr, deliver_result, d)) deliver_result(d);
    pthread_attr_destroy(&attr);
}

static void *dispatch_loop(void *arg) {
    (void)arg;
    shmq_event ev[64];
    while (!g_server.stopping) {
        shmq_wait_activity(g_server.q, 0.25);
        int n;
        while ((n = shmq_take_events(g_server.q, ev, 64)) > 0) {
            for (int i = 0; i < n; i++) {
                session *s = slot_peek((int)ev[i].slot, ev[i].job_id);
                if (!s) continue;
                pthread_mutex_lock(&s->lock);
                int finalize = s->job_finalize;
                pthread_mutex_unlock(&s->lock);
                /* A finalize reports under the reference's single stage name. */
                char *m = msg_progress(finalize ? "finalizing" : ev[i].stage, ev[i].progress, ev[i].message);
                ws_send_to_session(s, m, strlen(m));
                free(m);
                sessions_put(s);
            }
        }
        shmq_job j;
        int slot;
        while ((slot = shmq_take_finished(g_server.q, &j)) >= 0) handle_finished(slot, &j);
    }
    return NULL;
}

int jobs_start_dispatcher(void) {
    if (pthread_create(&dispatcher, NULL, dispatch_loop, NULL)) return -1;
    dispatcher_running = 1;
    return 0;
}

void jobs_stop_dispatcher(void) {
    if (!dispatcher_running) return;
    pthread_join(dispatcher, NULL);
    dispatcher_running = 0;
    for (int i = 0; i < 500 && atomic_load(&deliveries_in_flight) > 0; i++) usleep(10000);
}
