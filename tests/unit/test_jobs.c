/* Job dispatch in the front (frontend/jobs.c) against a real shared segment, with this test
 * playing both the worker (claim, progress, result, death) and the connection loop (reading the
 * session's outgoing queue with conn_take_out): one job per session, the first progress before
 * any worker event, progress that never goes backwards (also across a retry after a worker
 * died), results and failures reaching the right session, cancellation, a full table. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "common/util.h"
#include "frontend/attach.h"
#include "frontend/conn.h"
#include "frontend/jobs.h"
#include "frontend/server.h"
#include "frontend/session.h"
#include "tests/unit/check.h"

server_state g_server; /* jobs.c reads the queue and options from here (main.c's in the server) */

static char data_dir[256];

/* The messages queued for connection id since the last call, parsed (NULL-terminated array of
 * at most 63), waiting up to timeout_s for at least `want` of them. */
static json_t **drain(uint64_t id, int want, double timeout_s) {
    static json_t *got[64];
    for (int i = 0; got[i]; i++) json_decref(got[i]), got[i] = NULL;
    int n = 0;
    double until = now_mono() + timeout_s;
    do {
        int resume;
        conn_out *o = conn_take_out(id, &resume);
        while (o) {
            conn_out *next = o->next;
            if (n < 63) got[n++] = json_loadb(o->data, o->len, 0, NULL);
            conn_out_done(id, o, 1, NULL);
            o = next;
        }
        if (n >= want) break;
        usleep(10000);
    } while (now_mono() < until);
    got[n] = NULL;
    return got;
}

static const char *type_of(json_t *m) { return json_string_value(json_object_get(m, "type")); }
static double progress_of(json_t *m) { return json_real_value(json_object_get(m, "progress")); }

static session *new_session(uint64_t *conn) {
    session_config cfg;
    session_config_default(&cfg, 10);
    int status;
    char err[256];
    session *s = sessions_create(&cfg, "", "", &status, err, sizeof err);
    CHECK_MSG(s != NULL, "%s", err);
    pthread_mutex_lock(&s->lock);
    /* Two images on record (the fake worker never reads the files). */
    s->images = calloc(2, sizeof *s->images);
    s->image_cap = 2;
    s->image_count = 2;
    pthread_mutex_unlock(&s->lock);
    *conn = conn_open();
    attach_set(s->id, *conn, *conn);
    return s;
}

static jobs_submit_result submit(session *s, int finalize, char *err, size_t errlen) {
    pthread_mutex_lock(&s->lock);
    jobs_submit_result r = jobs_submit(s, finalize, 0, err, errlen);
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* Worker side: finishes the claimed job with a tiny "GLB" and metadata. */
static void finish(int slot, uint64_t job_id) {
    static const char glb[] = "glTF-bytes", meta[] = "{\"timing\":{}}";
    uint64_t off;
    char *p = shmq_result_alloc(g_server.q, slot, job_id, sizeof glb + sizeof meta, &off);
    CHECK(p != NULL);
    if (!p) return;
    memcpy(p, glb, sizeof glb - 1);
    memcpy(p + sizeof glb - 1, meta, sizeof meta - 1);
    double ms[4] = {1, 2, 3, 4};
    shmq_finish(g_server.q, slot, job_id, off, sizeof glb - 1, sizeof meta - 1, ms);
}

static void test_generate_round_trip(void) {
    uint64_t conn;
    session *s = new_session(&conn);
    char err[300];
    CHECK(submit(s, 0, err, sizeof err) == JOBS_QUEUED);
    CHECK(jobs_session_busy(s->id));
    /* A second generate while one runs is refused, without a second job. */
    CHECK(submit(s, 0, err, sizeof err) == JOBS_REFUSED);
    CHECK(strstr(err, "already running") != NULL);
    json_t **m = drain(conn, 1, 2);
    CHECK(m[0] && !strcmp(type_of(m[0]), "progress") && progress_of(m[0]) == 0.1);
    CHECK(m[1] == NULL);

    shmq_job_params p;
    uint64_t job_id;
    int slot = shmq_claim(g_server.q, 0, 1.0, &p, &job_id);
    CHECK(slot >= 0 && !strcmp(p.session_id, s->id) && p.image_count == 2 && p.finalize == 0);
    shmq_progress(g_server.q, slot, job_id, "inference", 0.3, "Processing 2 images...");
    shmq_progress(g_server.q, slot, job_id, "inference", 0.2, "a lower value");
    shmq_progress(g_server.q, slot, job_id, "exporting", 0.7, "Exporting...");
    finish(slot, job_id);
    m = drain(conn, 4, 5);
    int n = 0;
    double last = 0.1;
    for (; m[n]; n++) {
        if (strcmp(type_of(m[n]), "progress")) break;
        CHECK_MSG(progress_of(m[n]) >= last, "progress went back: %g after %g", progress_of(m[n]), last);
        last = progress_of(m[n]);
    }
    CHECK_MSG(n == 3, "%d progress messages", n);
    CHECK(m[n] && !strcmp(type_of(m[n]), "complete"));
    CHECK(m[n] && json_object_get(m[n], "glb_base64") != NULL);
    /* The job ended before its result was queued: the session may generate again at once. */
    CHECK(!jobs_session_busy(s->id));
    pthread_mutex_lock(&s->lock);
    CHECK(s->status == SESSION_ACTIVE);
    pthread_mutex_unlock(&s->lock);
    sessions_put(s);
}

static void test_failure_and_finalize(void) {
    uint64_t conn;
    session *s = new_session(&conn);
    char err[300];
    CHECK(submit(s, 1, err, sizeof err) == JOBS_QUEUED);
    shmq_job_params p;
    uint64_t job_id;
    int slot = shmq_claim(g_server.q, 0, 1.0, &p, &job_id);
    CHECK(slot >= 0 && p.finalize == 1);
    shmq_fail(g_server.q, slot, job_id, "the model said no");
    json_t **m = drain(conn, 2, 5);
    CHECK(m[0] && !strcmp(json_string_value(json_object_get(m[0], "stage")), "finalizing"));
    CHECK(m[1] && !strcmp(type_of(m[1]), "error"));
    CHECK(m[1] && !strcmp(json_string_value(json_object_get(m[1], "message")), "Failed to finalize: the model said no"));
    pthread_mutex_lock(&s->lock);
    CHECK(s->status == SESSION_ERROR && s->error_message && !strcmp(s->error_message, "the model said no"));
    pthread_mutex_unlock(&s->lock);
    sessions_put(s);
}

/* A worker process dies holding the job: the retry is announced at the progress already shown,
 * and the new attempt's lower values do not make it go backwards. */
static void test_retry_keeps_progress_monotonic(void) {
    uint64_t conn;
    session *s = new_session(&conn);
    char err[300];
    CHECK(submit(s, 0, err, sizeof err) == JOBS_QUEUED);
    drain(conn, 1, 2);
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char e[200];
        shmq *q = shmq_attach(g_server.shm_name, e, sizeof e);
        shmq_job_params p;
        uint64_t id;
        int slot = q ? shmq_claim(q, 1, 2.0, &p, &id) : -1;
        if (slot >= 0) shmq_progress(q, slot, id, "inference", 0.5, "half way");
        char ok = slot >= 0 ? 'y' : 'n';
        if (write(pipefd[1], &ok, 1) != 1) _exit(2);
        pause(); /* killed below, holding the job */
        _exit(0);
    }
    char ok = 0;
    CHECK(read(pipefd[0], &ok, 1) == 1 && ok == 'y');
    json_t **m = drain(conn, 1, 5);
    CHECK(m[0] && progress_of(m[0]) == 0.5);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    CHECK(shmq_recover_dead_worker(g_server.q, pid) == 1);
    m = drain(conn, 1, 5);
    CHECK(m[0] && !strcmp(type_of(m[0]), "progress") && progress_of(m[0]) == 0.5);
    CHECK(m[0] && strstr(json_string_value(json_object_get(m[0], "message")), "retrying") != NULL);
    shmq_job_params p;
    uint64_t job_id;
    int slot = shmq_claim(g_server.q, 0, 1.0, &p, &job_id);
    CHECK(slot >= 0);
    shmq_progress(g_server.q, slot, job_id, "inference", 0.3, "attempt 2 starts over");
    finish(slot, job_id);
    m = drain(conn, 2, 5);
    CHECK(m[0] && !strcmp(type_of(m[0]), "progress") && progress_of(m[0]) == 0.5);
    CHECK(m[1] && !strcmp(type_of(m[1]), "complete"));
    close(pipefd[0]);
    close(pipefd[1]);
    sessions_put(s);
}

static void test_cancel_and_no_images(void) {
    uint64_t conn;
    session *s = new_session(&conn);
    char err[300];
    CHECK(submit(s, 0, err, sizeof err) == JOBS_QUEUED);
    jobs_cancel_session(s->id);
    CHECK(!jobs_session_busy(s->id));
    int queued, running;
    shmq_counts(g_server.q, &queued, &running);
    CHECK(queued == 0 && running == 0);
    /* Nothing is left for a worker to claim. */
    shmq_job_params p;
    uint64_t job_id;
    CHECK(shmq_claim(g_server.q, 0, 0.1, &p, &job_id) < 0);
    pthread_mutex_lock(&s->lock);
    s->image_count = 0;
    pthread_mutex_unlock(&s->lock);
    CHECK(submit(s, 0, err, sizeof err) == JOBS_REFUSED && !strcmp(err, "No images in session"));
    sessions_put(s);
}

/* A full job table is a clear "server busy, retry" failure, not a silent drop. */
static void test_full_table(void) {
    session *all[SHMQ_MAX_JOBS + 1];
    uint64_t conn;
    char err[300];
    int queued = 0;
    for (int i = 0; i <= SHMQ_MAX_JOBS; i++) {
        all[i] = new_session(&conn);
        jobs_submit_result r = submit(all[i], 0, err, sizeof err);
        if (r == JOBS_QUEUED) queued++;
        if (i == SHMQ_MAX_JOBS) {
            CHECK(r == JOBS_FAILED);
            CHECK_MSG(strstr(err, "server busy") && strstr(err, "retry in"), "%s", err);
        }
    }
    CHECK(queued == SHMQ_MAX_JOBS);
    for (int i = 0; i <= SHMQ_MAX_JOBS; i++) {
        jobs_cancel_session(all[i]->id);
        sessions_put(all[i]);
    }
}

int main(void) {
    log_init("test_jobs", LOG_ERROR);
    snprintf(data_dir, sizeof data_dir, "/tmp/da3-test-jobs-%d", (int)getpid());
    snprintf(g_server.shm_name, sizeof g_server.shm_name, "/da3-test-jobs-%d", (int)getpid());
    options_default(&g_server.opt);
    char err[256];
    g_server.q = shmq_create(g_server.shm_name, 16 << 20, err, sizeof err);
    CHECK_MSG(g_server.q != NULL, "%s", err);
    CHECK(sessions_init(data_dir, 400, 10, 0) == 0);
    CHECK(conn_table_init(400, 1 << 20) == 0);
    CHECK(jobs_start_dispatcher() == 0);
    if (g_server.q) {
        test_generate_round_trip();
        test_failure_and_finalize();
        test_retry_keeps_progress_monotonic();
        test_cancel_and_no_images();
        test_full_table();
    }
    g_server.stopping = 1;
    jobs_stop_dispatcher();
    drain(0, 0, 0);
    conn_table_free();
    sessions_shutdown();
    shmq_close(g_server.q, 1);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", data_dir);
    if (system(cmd)) {
    }
    CHECK_DONE("test_jobs");
}
