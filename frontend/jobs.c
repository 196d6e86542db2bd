#include "frontend/jobs.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/protocol.h"
#include "common/util.h"
#include "frontend/client_send.h"
#include "frontend/messages.h"
#include "frontend/metrics.h"
#include "frontend/server.h"

static const char ALREADY_RUNNING[] = "A reconstruction is already running for this session; wait for its result";

static pthread_t dispatcher;
static int dispatcher_running;
/* Result encoders still running: shutdown waits for them before the arena is unmapped. */
static atomic_int deliveries_in_flight;

/* The last progress value sent per job slot, so what a client sees never goes backwards (a
 * retried job starts its stages again). Written by the dispatcher and, once per job, by
 * jobs_submit; each write keeps the larger value. */
static struct {
    uint64_t job_id;
    double value;
} last_progress[SHMQ_MAX_JOBS];
static pthread_mutex_t progress_lock = PTHREAD_MUTEX_INITIALIZER;

/* Clamps p to what job (slot, job_id) has already shown and records it; returns the value to
 * send. */
static double monotonic_progress(int slot, uint64_t job_id, double p) {
    pthread_mutex_lock(&progress_lock);
    if (last_progress[slot].job_id != job_id) {
        last_progress[slot].job_id = job_id;
        last_progress[slot].value = 0;
    }
    if (p < last_progress[slot].value) p = last_progress[slot].value;
    last_progress[slot].value = p;
    pthread_mutex_unlock(&progress_lock);
    return p;
}

static void send_progress(const char *session_id, const char *stage, double p, const char *message) {
    char *m = msg_progress(stage, p, message);
    if (m) client_send(session_id, m, strlen(m)); /* advisory: a full queue drops it */
    free(m);
}

/* The start of the one log line every job ends with, whatever its outcome:
 *   session <id>: <complete|delta|failed|cancelled> (job N, K images, attempt A; queue Q ms,
 *   decode D, model M, fusion F, glb G, encode E ms[, GLB B B, message L B])
 * followed by ": delivered (...)" / ": NOT delivered (why)" for a result (conn.c), the error for
 * a failure, or the state a cancel found. Stages a job never reached read 0. */
static void job_log_head(char *out, size_t n, const shmq_job *j, const char *outcome, double queue_s,
                         double encode_ms, size_t message_len) {
    int k = snprintf(out, n,
                     "session %s: %s (job %llu, %d images, attempt %u; queue %.0f ms, decode %.0f, model %.0f, "
                     "fusion %.0f, glb %.0f, encode %.0f ms",
                     j->params.session_id, outcome, (unsigned long long)j->job_id, j->params.image_count,
                     j->attempts, queue_s * 1e3, j->decode_ms, j->model_ms, j->fusion_ms, j->glb_ms, encode_ms);
    if (k > 0 && (size_t)k < n && message_len)
        k += snprintf(out + k, n - (size_t)k, ", GLB %llu B, message %zu B", (unsigned long long)j->glb_len,
                      message_len);
    if (k > 0 && (size_t)k < n) snprintf(out + k, n - (size_t)k, ")");
}

static double queue_wait_s(const shmq_job *j) {
    return j->t_claimed > j->t_queued ? j->t_claimed - j->t_queued : 0;
}

static jobs_submit_result submit(session *s, int finalize, int incremental, int auto_generated, char *err, size_t errlen) {
    if (s->deleted) {
        snprintf(err, errlen, "Session %s not found", s->id);
        return JOBS_REFUSED;
    }
    if (s->image_count == 0) {
        snprintf(err, errlen, "No images in session");
        return JOBS_REFUSED;
    }
    shmq_job_params p;
    memset(&p, 0, sizeof p);
    snprintf(p.session_id, sizeof p.session_id, "%s", s->id);
    snprintf(p.image_dir, sizeof p.image_dir, "%s", s->image_dir);
    p.image_count = s->image_count;
    p.process_res = s->cfg.process_res;
    p.resize_method = s->cfg.method;
    p.ref_view = PROTOCOL_DEFAULT_REF_VIEW;
    p.conf_thresh_percentile = s->cfg.conf_thresh_percentile;
    p.num_max_points = s->cfg.num_max_points;
    p.show_cameras = s->cfg.show_cameras;
    p.seed = PROTOCOL_SEED; /* fixed: the same images give the same GLB */
    p.finalize = finalize;
    p.incremental = incremental;
    p.auto_generated = auto_generated;
    if (s->cfg.streaming) {
        /* A streaming generate answers with the new chunk's points only, so there must be some. */
        if (!finalize && s->image_count <= s->stream_done) {
            snprintf(err, errlen,
                     "No new images since the last chunk: all %d images are in the stream; send more images, or "
                     "finalize for the whole session",
                     s->image_count);
            return JOBS_REFUSED;
        }
        p.stream_chunk_size = s->cfg.chunk_size;
        p.stream_overlap = s->cfg.overlap;
        p.stream_from = s->stream_done;
        p.incremental = !finalize;
    }
    /* Every submit for a session happens under its lock, so this check cannot race another
     * one; shmq_submit_unique still guards the table itself. */
    if (jobs_session_busy(s->id)) {
        snprintf(err, errlen, "%s", ALREADY_RUNNING);
        return JOBS_REFUSED;
    }
    /* The first progress is queued before the job exists: a worker can claim it and report
     * within microseconds, and its progress must never come first. */
    if (finalize) send_progress(s->id, "finalizing", 0.1, "Generating final 3D model...");
    else send_progress(s->id, "loading_model", 0.1, "Loading model...");
    uint64_t job_id;
    int slot = shmq_submit_unique(g_server.q, &p, &job_id);
    if (slot == -2) {
        snprintf(err, errlen, "%s", ALREADY_RUNNING);
        return JOBS_REFUSED;
    }
    if (slot < 0) {
        metrics_job_rejected();
        int queued, running;
        shmq_counts(g_server.q, &queued, &running);
        snprintf(err, errlen, "server busy: the job queue is full (%d jobs waiting or running); retry in %d s",
                 queued + running, 5 + queued / (g_server.opt.workers > 0 ? g_server.opt.workers : 1));
        return JOBS_FAILED;
    }
    metrics_job_submitted();
    monotonic_progress(slot, job_id, 0.1); /* what the client has seen (the dispatcher may be ahead) */
    s->status = SESSION_PROCESSING;
    session_touch(s);
    session_save(s);
    return JOBS_QUEUED;
}

jobs_submit_result jobs_submit(session *s, int finalize, int incremental, char *err, size_t errlen) {
    return submit(s, finalize, incremental, 0, err, errlen);
}

/* The next chunk of a streaming session, once a chunk's worth of new images waits. */
static int stream_next_chunk(session *s) {
    if (s->image_count - s->stream_done < s->cfg.chunk_size - s->cfg.overlap || jobs_session_busy(s->id)) return 0;
    char err[300], msg[400];
    if (submit(s, 0, 1, 0, err, sizeof err) == JOBS_QUEUED) return 1;
    snprintf(msg, sizeof msg, "Streaming chunk not started: %s (it is tried again at the next image)", err);
    client_send_error(s->id, msg);
    return 0;
}

/* The automatic run auto_generate_after makes due. */
static int auto_generate(session *s) {
    int every = s->cfg.auto_generate_after;
    if (every <= 0 || s->image_count - s->last_auto_count < every || jobs_session_busy(s->id)) return 0;
    char *m = msg_auto_generating(s->image_count);
    if (m) client_send(s->id, m, strlen(m));
    free(m);
    int before = s->last_auto_count;
    s->last_auto_count = s->image_count; /* saved with the status by submit() */
    char err[300], msg[400];
    if (submit(s, 0, 1, 1, err, sizeof err) == JOBS_QUEUED) return 1;
    s->last_auto_count = before; /* due again at the next ack or the next job's end */
    snprintf(msg, sizeof msg, "Auto-generation failed: %s", err);
    client_send_error(s->id, msg);
    return 0;
}

int jobs_start_due(session *s) {
    if (s->deleted) return 0;
    return s->cfg.streaming ? stream_next_chunk(s) : auto_generate(s);
}

/* After a job of the session ended: the job its uploads made due meanwhile. A failed streaming
 * chunk is not retried from here (the same chunk would fail again at once); the next image or
 * generate tries again. */
static void start_due_after_job(const char *session_id, int succeeded) {
    session *s = sessions_get(session_id);
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    if (succeeded || !s->cfg.streaming) jobs_start_due(s);
    pthread_mutex_unlock(&s->lock);
    sessions_put(s);
}

int jobs_session_busy(const char *session_id) {
    shmq_job j;
    return shmq_find_session_job(g_server.q, session_id, &j) >= 0;
}

void jobs_cancel_session(const char *session_id) {
    shmq_job j;
    int n = shmq_cancel_session(g_server.q, session_id, &j);
    if (n <= 0) return;
    metrics_job_outcome(METRICS_JOB_CANCELLED, (unsigned)n);
    char line[700];
    int queued = j.state == JOB_QUEUED;
    job_log_head(line, sizeof line, &j, "cancelled", queued ? now_mono() - j.t_queued : queue_wait_s(&j), 0, 0);
    log_info("%s: %s", line, queued ? "while queued" : j.state == JOB_CLAIMED ? "while running (its result is discarded)"
                                                                               : "before its result was sent");
}

/* Records the end of the session's job j: status per outcome, persisted; a streaming job's
 * progress through the images. */
static void finish_session(session *s, const shmq_job *j, int ok, const char *error) {
    int finalize = j->params.finalize;
    pthread_mutex_lock(&s->lock);
    if (ok && j->params.stream_chunk_size > 0 && j->stream_end > s->stream_done && j->stream_end <= s->image_count)
        s->stream_done = j->stream_end;
    if (ok) {
        s->status = finalize ? SESSION_COMPLETED : SESSION_ACTIVE;
    } else {
        s->status = SESSION_ERROR;
        free(s->error_message);
        s->error_message = strdup(error);
    }
    session_touch(s);
    session_save(s); /* does nothing for a deleted session */
    pthread_mutex_unlock(&s->lock);
}

typedef struct {
    int slot;
    shmq_job job;
} result_delivery;

/* Encodes one finished GLB straight from the arena into a message and queues it. Runs on its
 * own thread: base64 of a large cloud takes tens of milliseconds, which no other session's
 * progress should wait for. */
static void *deliver_result(void *arg) {
    result_delivery *d = arg;
    const shmq_job *j = &d->job;
    const char *sid = j->params.session_id;
    const char *type = j->params.finalize || !j->params.incremental ? "complete" : "delta";
    double t0 = now_mono();
    const uint8_t *glb = shmq_arena_ptr(g_server.q, j->result_off);
    const char *meta = (const char *)glb + j->glb_len;
    size_t len = 0;
    double extra_ms[2] = {(j->t_claimed - j->t_queued) * 1e3, j->glb_ms};
    char *text = msg_result(type, j->params.image_count, glb, j->glb_len, meta, j->meta_len, sid,
                            extra_ms, j->params.auto_generated, &len);
    shmq_release(g_server.q, d->slot); /* the arena block is no longer needed */
    double t1 = now_mono();
    session *s = sessions_get(sid);
    if (s) {
        /* The job ends before the result goes out: a client may send its next generate the
         * moment it has the result, and that must not find this job still running. */
        finish_session(s, j, text != NULL, "could not encode the result");
        sessions_put(s);
    }
    metrics_queue_wait(queue_wait_s(j));
    if (!text) {
        metrics_job_outcome(METRICS_JOB_FAILED, 1);
        char line[700];
        job_log_head(line, sizeof line, j, "failed", queue_wait_s(j), (t1 - t0) * 1e3, 0);
        log_warn("%s: could not encode the result", line);
        client_send_error(sid, "Failed to generate point cloud: could not encode the result");
    } else {
        metrics_job_outcome(METRICS_JOB_COMPLETED, 1);
        metrics_stage(METRICS_STAGE_DECODE, j->decode_ms / 1e3);
        metrics_stage(METRICS_STAGE_MODEL, j->model_ms / 1e3);
        metrics_stage(METRICS_STAGE_FUSION, j->fusion_ms / 1e3);
        metrics_stage(METRICS_STAGE_GLB, j->glb_ms / 1e3);
        metrics_stage(METRICS_STAGE_ENCODE, t1 - t0);
        /* The connection loop ends this job's log line once the last byte is written (or lost),
         * and times the send stage. */
        char *note = malloc(700);
        if (note) job_log_head(note, 700, j, type, queue_wait_s(j), (t1 - t0) * 1e3, len);
        client_send_owned(sid, text, len, note);
    }
    /* A streaming job that did not move the stream on would be started again at once, forever. */
    int advanced = j->params.stream_chunk_size == 0 || j->stream_end > j->params.stream_from;
    if (text && !advanced) log_warn("session %s: streaming job %llu did not advance the stream (at %d)", sid,
                                    (unsigned long long)j->job_id, j->params.stream_from);
    start_due_after_job(sid, text != NULL && advanced);
    free(d);
    atomic_fetch_sub(&deliveries_in_flight, 1);
    return NULL;
}

static void handle_finished(int slot, const shmq_job *j) {
    const char *sid = j->params.session_id;
    if (j->state == JOB_FAILED) {
        char msg[700];
        snprintf(msg, sizeof msg, "%s: %s",
                 j->params.auto_generated ? "Auto-generation failed"
                 : j->params.finalize     ? "Failed to finalize"
                                          : "Failed to generate point cloud",
                 j->error);
        shmq_release(g_server.q, slot);
        session *s = sessions_get(sid);
        char line[1300];
        if (!s) {
            /* Deleted or expired while the job ran: its files went first (session_close.c), so
             * the worker may fail on them before the cancel reaches it. Nobody is waiting. */
            metrics_job_outcome(METRICS_JOB_CANCELLED, 1);
            job_log_head(line, sizeof line, j, "cancelled", queue_wait_s(j), 0, 0);
            log_info("%s: its session was removed while it ran (%s)", line, j->error);
            return;
        }
        /* A failed automatic run leaves the session usable, as the reference does: the
         * client did not ask for it, and its next images try again. */
        finish_session(s, j, j->params.auto_generated, j->error);
        sessions_put(s);
        client_send_error(sid, msg);
        metrics_job_outcome(METRICS_JOB_FAILED, 1);
        if (j->t_claimed > 0) metrics_queue_wait(queue_wait_s(j));
        job_log_head(line, sizeof line, j, "failed", queue_wait_s(j), 0, 0);
        log_warn("%s: %s", line, j->error);
        start_due_after_job(sid, 0);
        return;
    }
    result_delivery *d = malloc(sizeof *d);
    if (!d) {
        metrics_job_outcome(METRICS_JOB_FAILED, 1);
        char line[700];
        job_log_head(line, sizeof line, j, "failed", queue_wait_s(j), 0, 0);
        log_warn("%s: out of memory in the front", line);
        shmq_release(g_server.q, slot);
        client_send_error(sid, "Failed to generate point cloud: out of memory in the front");
        return;
    }
    d->slot = slot;
    d->job = *j;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 << 10); /* encoding works on the heap */
    atomic_fetch_add(&deliveries_in_flight, 1);
    if (pthread_create(&t, &attr, deliver_result, d)) deliver_result(d);
    pthread_attr_destroy(&attr);
}

static void handle_event(const shmq_event *e) {
    if (e->slot >= SHMQ_MAX_JOBS) return;
    shmq_job j;
    /* Only events of the session's live job count: a cancelled job's late reports are dropped. */
    if (shmq_find_session_job(g_server.q, e->session_id, &j) != (int)e->slot || j.job_id != e->job_id) return;
    double p = monotonic_progress((int)e->slot, e->job_id, e->kind == EVENT_REQUEUED ? 0 : e->progress);
    if (e->kind == EVENT_REQUEUED) {
        char text[200];
        snprintf(text, sizeof text, "The worker processing this request stopped; retrying (attempt %u of %d)",
                 e->attempt, SHMQ_MAX_ATTEMPTS);
        log_warn("session %s: job %llu requeued after its worker died (attempt %u)", e->session_id,
                 (unsigned long long)e->job_id, e->attempt);
        send_progress(e->session_id, j.params.finalize ? "finalizing" : "retrying", p, text);
        return;
    }
    /* A finalize reports under the reference's single stage name. */
    send_progress(e->session_id, j.params.finalize ? "finalizing" : e->stage, p, e->message);
}

static void *dispatch_loop(void *arg) {
    (void)arg;
    shmq_event ev[64];
    while (!g_server.stopping) {
        shmq_wait_activity(g_server.q, 0.25);
        int n;
        while ((n = shmq_take_events(g_server.q, ev, 64)) > 0)
            for (int i = 0; i < n; i++) handle_event(&ev[i]);
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
