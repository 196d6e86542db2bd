/* The shared-memory queue across real processes: claim order (oldest first, a requeued job keeps
 * its place), claim/finish/fail, arena blocks, cancellation (hundreds of cancelled queued jobs
 * strand nothing), the per-session job API, a worker killed while holding a job (requeued once
 * with an EVENT_REQUEUED, then failed), a process killed while holding the segment's mutex in
 * the middle of torn updates (the repair must restore a working, consistent segment), and the
 * segment's single-owner rule (a second creator is refused, a dead owner's segment replaced),
 * and an unrecoverable mutex stopping the process with a message.
 * Every phase ends with shmq_validate. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/layout.h" /* the repair test tears the segment's internals on purpose */
#include "shm/shm_queue.h"
#include "tests/unit/check.h"

static char name[64];

#define VALID(q)                                                        \
    do {                                                                \
        char verr[256] = "";                                            \
        CHECK_MSG(shmq_validate(q, verr, sizeof verr) == 0, "%s", verr); \
    } while (0)

/* Forks a worker process that claims one job, then runs `then` (exit code = result). */
static pid_t fork_worker(int index, int (*then)(shmq *q, int slot, uint64_t id)) {
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        char err[256];
        shmq *q = shmq_attach(name, err, sizeof err);
        if (!q) _exit(90);
        shmq_job_params p;
        uint64_t id;
        int slot = shmq_claim(q, index, 5.0, &p, &id);
        if (slot < 0) _exit(91);
        _exit(then(q, slot, id));
    }
    return pid;
}

static int finish_with_result(shmq *q, int slot, uint64_t id) {
    shmq_progress(q, slot, id, "inference", 0.3, "working");
    uint64_t off;
    char *dst = shmq_result_alloc(q, slot, id, 3 << 20, &off);
    if (!dst) return 92;
    memset(dst, (int)0x67, 3 << 20); /* "g" */
    memcpy(dst + (3 << 20) - 4, "meta", 4);
    double ms[4] = {1, 2, 3, 4};
    shmq_finish(q, slot, id, off, (3 << 20) - 4, 4, ms);
    return 0;
}

static int hang(shmq *q, int slot, uint64_t id) {
    uint64_t off;
    shmq_result_alloc(q, slot, id, 1 << 20, &off); /* holds an arena block when killed */
    pause();
    return 0;
}

static int fail_job(shmq *q, int slot, uint64_t id) {
    shmq_fail(q, slot, id, "image 2 (x.jpg): truncated or corrupt JPEG");
    return 0;
}

/* Dies inside the lock with three updates cut short, each a state no complete operation
 * leaves: the arena block after its result has a torn header, the event ring's tail ran past
 * its capacity, and another queued job was marked claimed before its owner was written. */
static int die_holding_lock(shmq *q, int slot, uint64_t id) {
    (void)slot;
    uint64_t off;
    if (!shmq_result_alloc(q, slot, id, 1 << 20, &off)) return 93;
    shmq_lock(q);
    shmq_header *h = q->h;
    uint64_t rest = h->arena.off + (((64 + (1u << 20)) + 63) & ~(uint64_t)63);
    *(uint64_t *)((char *)h + rest) = 0x10; /* the next block's size: unaligned, walks nowhere */
    h->events.tail = h->events.head + 5000;
    for (int i = 0; i < SHMQ_MAX_JOBS; i++)
        if (h->jobs.jobs[i].state == JOB_QUEUED) {
            h->jobs.jobs[i].state = JOB_CLAIMED;
            h->jobs.jobs[i].owner_pid = 0;
            break;
        }
    raise(SIGKILL);
    return 0;
}

static int wait_exit(pid_t pid) {
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static void wait_running(shmq *q, int n) {
    int queued, running;
    for (int i = 0; i < 500; i++) {
        shmq_counts(q, &queued, &running);
        if (running == n) return;
        usleep(10000);
    }
}

/* Claims in this process and finishes with an empty result; returns the job id or 0. */
static uint64_t claim_and_finish(shmq *q, int *slot_out) {
    shmq_job_params p;
    uint64_t id;
    int s = shmq_claim(q, 7, 1.0, &p, &id);
    if (s < 0) return 0;
    uint64_t off;
    if (!shmq_result_alloc(q, s, id, 16, &off)) return 0;
    double ms[4] = {0};
    shmq_finish(q, s, id, off, 16, 0, ms);
    if (slot_out) *slot_out = s;
    return id;
}

static void test_order_and_results(shmq *q) {
    /* Oldest first: jobs are claimed in submission order. */
    uint64_t ids[3];
    int slots[3];
    for (int i = 0; i < 3; i++) {
        shmq_job_params p = {.image_count = i + 1};
        snprintf(p.session_id, sizeof p.session_id, "sess-%d", i);
        slots[i] = shmq_submit(q, &p, &ids[i]);
    }
    CHECK(slots[0] >= 0 && ids[0] < ids[1] && ids[1] < ids[2]);
    int queued, running;
    shmq_counts(q, &queued, &running);
    CHECK(queued == 3 && running == 0);
    /* Cancel the middle one while queued: it is simply gone. */
    shmq_cancel(q, slots[1], ids[1]);
    pid_t a = fork_worker(0, finish_with_result);
    CHECK(wait_exit(a) == 0);
    shmq_event ev[8];
    int n = shmq_take_events(q, ev, 8);
    CHECK(n == 1 && ev[0].kind == EVENT_PROGRESS && ev[0].job_id == ids[0] &&
          !strcmp(ev[0].stage, "inference") && ev[0].progress == 0.3 && ev[0].attempt == 1 &&
          !strcmp(ev[0].session_id, "sess-0"));
    shmq_job j;
    int slot = shmq_take_finished(q, &j);
    CHECK(slot == slots[0] && j.state == JOB_DONE && j.job_id == ids[0] && j.params.image_count == 1);
    const char *res = shmq_arena_ptr(q, j.result_off);
    CHECK(j.glb_len == (3u << 20) - 4 && res[0] == 'g' && !memcmp(res + j.glb_len, "meta", 4));
    CHECK(shmq_take_finished(q, &j) < 0); /* handed out once */
    size_t used, total;
    shmq_arena_usage(q, &used, &total);
    CHECK(used >= (3u << 20) && total >= (16u << 20));
    VALID(q);
    shmq_release(q, slot);
    shmq_release(q, slot); /* a repeated release is harmless */
    shmq_arena_usage(q, &used, &total);
    CHECK(used == 0);

    /* The next claim gets job 3 (job 2 was cancelled); a failure carries its message. */
    pid_t b = fork_worker(1, fail_job);
    CHECK(wait_exit(b) == 0);
    slot = shmq_take_finished(q, &j);
    CHECK(slot == slots[2] && j.state == JOB_FAILED && strstr(j.error, "truncated") != NULL);
    shmq_release(q, slot);
    VALID(q);
}

/* Item 4 of issue 7: with the old job ring, a few hundred queued-then-cancelled jobs pushed a
 * live queued job's ring entry out and it was never claimed. */
static void test_cancelled_jobs_strand_nothing(shmq *q) {
    uint64_t live, later, id;
    int live_slot = shmq_submit(q, &(shmq_job_params){.session_id = "live", .image_count = 1}, &live);
    for (int i = 0; i < 600; i++) {
        int s = shmq_submit(q, &(shmq_job_params){.session_id = "gone", .image_count = 1}, &id);
        CHECK(s >= 0);
        shmq_cancel(q, s, id);
    }
    CHECK(shmq_submit(q, &(shmq_job_params){.session_id = "later", .image_count = 1}, &later) >= 0);
    int queued, running;
    shmq_counts(q, &queued, &running);
    CHECK(queued == 2);
    int slot = -1;
    CHECK(claim_and_finish(q, &slot) == live && slot == live_slot);
    shmq_job j;
    CHECK(shmq_take_finished(q, &j) == live_slot);
    shmq_release(q, live_slot);
    CHECK(claim_and_finish(q, &slot) == later);
    CHECK(shmq_take_finished(q, &j) == slot);
    shmq_release(q, slot);
    VALID(q);
}

static void test_session_api(shmq *q) {
    shmq_job_params p = {.image_count = 2, .finalize = 1, .incremental = 0};
    snprintf(p.session_id, sizeof p.session_id, "s-unique");
    uint64_t id, id2;
    int s = shmq_submit_unique(q, &p, &id);
    CHECK(s >= 0);
    CHECK(shmq_submit_unique(q, &p, &id2) == -2); /* one live job per session */
    shmq_job j;
    CHECK(shmq_find_session_job(q, "s-unique", &j) == s && j.job_id == id && j.params.finalize == 1 &&
          j.state == JOB_QUEUED);
    CHECK(shmq_find_session_job(q, "s-other", &j) == -1);
    /* Still the session's job while claimed, finished and handed out; gone once released. */
    int slot;
    CHECK(claim_and_finish(q, &slot) == id);
    CHECK(shmq_submit_unique(q, &p, &id2) == -2);
    CHECK(shmq_take_finished(q, &j) == s && j.params.finalize == 1);
    CHECK(shmq_find_session_job(q, "s-unique", &j) == s && j.state == JOB_DONE);
    shmq_release(q, s);
    CHECK(shmq_find_session_job(q, "s-unique", &j) == -1);
    /* cancel_session: a queued job is freed at once, and the session can submit again. */
    CHECK(shmq_submit_unique(q, &p, &id) >= 0);
    CHECK(shmq_cancel_session(q, "s-unique", NULL) == 1);
    CHECK(shmq_cancel_session(q, "s-unique", NULL) == 0);
    CHECK(shmq_find_session_job(q, "s-unique", &j) == -1);
    int queued, running;
    shmq_counts(q, &queued, &running);
    CHECK(queued == 0 && running == 0);
    /* A claimed job that is cancelled: its result is discarded by take_finished. */
    s = shmq_submit_unique(q, &p, &id);
    shmq_job_params cp;
    uint64_t cid;
    int cs = shmq_claim(q, 7, 1.0, &cp, &cid);
    CHECK(cs == s && cid == id);
    CHECK(shmq_cancel_session(q, "s-unique", NULL) == 1);
    CHECK(shmq_submit_unique(q, &p, &id2) >= 0); /* a cancelled job no longer blocks the session */
    CHECK(shmq_cancel_session(q, "s-unique", NULL) == 1);
    uint64_t off;
    CHECK(shmq_result_alloc(q, cs, cid, 100, &off) != NULL);
    double ms[4] = {0};
    shmq_finish(q, cs, cid, off, 100, 0, ms);
    CHECK(shmq_take_finished(q, &j) < 0);
    size_t used, total;
    shmq_arena_usage(q, &used, &total);
    CHECK(used == 0);
    VALID(q);
}

static void test_dead_worker(shmq *q) {
    /* A worker killed while holding a job: requeued once with its arena block freed, an
     * EVENT_REQUEUED for the front, and it keeps its place ahead of a newer job... */
    uint64_t id, newer;
    int s = shmq_submit(q, &(shmq_job_params){.session_id = "retry", .image_count = 9}, &id);
    pid_t c = fork_worker(2, hang);
    wait_running(q, 1);
    usleep(50000);
    int ns = shmq_submit(q, &(shmq_job_params){.session_id = "newer", .image_count = 1}, &newer);
    kill(c, SIGKILL);
    CHECK(wait_exit(c) == -SIGKILL);
    CHECK(shmq_recover_dead_worker(q, c) == 1);
    int queued, running;
    shmq_counts(q, &queued, &running);
    CHECK(queued == 2 && running == 0);
    size_t used, total;
    shmq_arena_usage(q, &used, &total);
    CHECK(used == 0);
    shmq_event ev[8];
    int n = shmq_take_events(q, ev, 8);
    CHECK(n == 1 && ev[0].kind == EVENT_REQUEUED && ev[0].job_id == id && ev[0].attempt == 2 &&
          !strcmp(ev[0].session_id, "retry") && strstr(ev[0].message, "retrying") != NULL);
    VALID(q);
    /* ...and failed with a clear error when its second worker dies too. */
    pid_t d = fork_worker(3, hang);
    wait_running(q, 1);
    shmq_job j;
    CHECK(shmq_find_session_job(q, "retry", &j) == s && j.state == JOB_CLAIMED && j.attempts == 2);
    kill(d, SIGKILL);
    wait_exit(d);
    CHECK(shmq_recover_dead_worker(q, d) == 1);
    int slot = shmq_take_finished(q, &j);
    CHECK(slot == s && j.job_id == id && j.state == JOB_FAILED && j.attempts == 2 &&
          strstr(j.error, "worker process died") != NULL);
    shmq_release(q, slot);
    CHECK(claim_and_finish(q, &slot) == newer && slot == ns);
    CHECK(shmq_take_finished(q, &j) == ns);
    shmq_release(q, ns);
    shmq_take_events(q, ev, 8);
    VALID(q);
}

/* Issue 7 item 4: this must fail if the repair after EOWNERDEAD is disabled. */
static void test_death_inside_the_lock(shmq *q) {
    uint64_t id, other;
    int s = shmq_submit(q, &(shmq_job_params){.session_id = "torn", .image_count = 4}, &id);
    int os = shmq_submit(q, &(shmq_job_params){.session_id = "other", .image_count = 1}, &other);
    int before = shmq_repairs();
    pid_t e = fork_worker(4, die_holding_lock);
    CHECK(wait_exit(e) == -SIGKILL);
    /* The supervisor's call is the next locker: it must neither deadlock nor abort. */
    CHECK(shmq_recover_dead_worker(q, e) == 1);
    CHECK(shmq_repairs() == before + 1);
    VALID(q);
    int queued, running;
    shmq_counts(q, &queued, &running);
    CHECK(queued == 2 && running == 0); /* the torn claim is queued again */
    size_t used, total;
    shmq_arena_usage(q, &used, &total);
    CHECK(used == 0);
    shmq_event ev[SHMQ_EVENT_CAP];
    int n = shmq_take_events(q, ev, SHMQ_EVENT_CAP);
    CHECK(n <= 1); /* at most the requeue event, never a replay of stale slots */
    /* Everything works afterwards: submit, claim in order, big results, finish, release. */
    pid_t f = fork_worker(5, finish_with_result);
    CHECK(wait_exit(f) == 0);
    pid_t g = fork_worker(6, finish_with_result);
    CHECK(wait_exit(g) == 0);
    shmq_job j;
    int got = 0;
    int slot;
    while ((slot = shmq_take_finished(q, &j)) >= 0) {
        CHECK((slot == s || slot == os) && j.state == JOB_DONE && j.glb_len == (3u << 20) - 4);
        got++;
        shmq_release(q, slot);
    }
    CHECK(got == 2);
    uint64_t fresh;
    CHECK(shmq_submit(q, &(shmq_job_params){.image_count = 1}, &fresh) >= 0 && fresh > other);
    CHECK(claim_and_finish(q, &slot) == fresh);
    CHECK(shmq_take_finished(q, &j) == slot);
    shmq_release(q, slot);
    shmq_arena_usage(q, &used, &total);
    CHECK(used == 0);
    shmq_take_events(q, ev, SHMQ_EVENT_CAP);
    VALID(q);
}

static void test_limits(shmq *q) {
    /* An arena too small for a result: allocation fails cleanly. */
    uint64_t id;
    int s = shmq_submit(q, &(shmq_job_params){.image_count = 1}, &id);
    shmq_job_params p;
    uint64_t cid;
    int cs = shmq_claim(q, 6, 1.0, &p, &cid);
    uint64_t off;
    CHECK(cs == s && shmq_result_alloc(q, cs, cid, 64u << 20, &off) == NULL);
    shmq_fail(q, cs, cid, "too big");
    shmq_job j;
    int slot = shmq_take_finished(q, &j);
    shmq_release(q, slot);

    /* The table is bounded: submit reports full instead of overwriting. */
    int full = 0;
    for (int i = 0; i < SHMQ_MAX_JOBS + 1; i++)
        if (shmq_submit(q, &(shmq_job_params){.image_count = 1}, &id) < 0) full++;
    CHECK(full == 1);
    CHECK(shmq_submit_unique(q, &(shmq_job_params){.session_id = "x"}, &id) == -1);
    VALID(q);
}

/* Issue 7 item 5: a second creator never removes a live front's segment. */
static void test_single_owner(shmq *q) {
    char err[256] = "";
    CHECK(shmq_create(name, 1u << 20, err, sizeof err) == NULL);
    char want[32];
    snprintf(want, sizeof want, "pid %d", (int)getpid());
    CHECK_MSG(strstr(err, want) != NULL && strstr(err, "running") != NULL, "%s", err);
    /* The owner's segment is intact and in use. */
    uint64_t id;
    int slot;
    CHECK(shmq_submit(q, &(shmq_job_params){.image_count = 1}, &id) >= 0);
    CHECK(claim_and_finish(q, &slot) == id);
    shmq_job j;
    CHECK(shmq_take_finished(q, &j) == slot);
    shmq_release(q, slot);
    VALID(q);

    /* A front that dies (kill -9) leaves a segment nobody holds: the next create replaces it. */
    char stale[64];
    snprintf(stale, sizeof stale, "/da3-test-stale-%d", (int)getpid());
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    pid_t front = fork();
    if (front == 0) {
        char e2[256];
        shmq *s = shmq_create(stale, 1u << 20, e2, sizeof e2);
        char ok = s ? 'y' : 'n';
        if (write(pipefd[1], &ok, 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    char ok = 0;
    CHECK(read(pipefd[0], &ok, 1) == 1 && ok == 'y');
    CHECK(shmq_create(stale, 1u << 20, err, sizeof err) == NULL); /* alive: refused */
    kill(front, SIGKILL);
    wait_exit(front);
    shmq *again = shmq_create(stale, 1u << 20, err, sizeof err);
    CHECK_MSG(again != NULL, "%s", err);
    if (again) {
        VALID(again);
        shmq_close(again, 1);
    }
    close(pipefd[0]);
    close(pipefd[1]);
}

/* A mutex left inconsistent (a holder died, the next one released it without repairing) can
 * never be locked again: shmq_lock must stop the process loudly, not hang or carry on. */
static void test_unrecoverable(void) {
    char uname[64], err[256];
    snprintf(uname, sizeof uname, "/da3-test-unrec-%d", (int)getpid());
    shmq *u = shmq_create(uname, 1u << 20, err, sizeof err);
    CHECK_MSG(u != NULL, "%s", err);
    if (!u) return;
    pid_t a = fork();
    if (a == 0) {
        pthread_mutex_lock(&u->h->lock);
        raise(SIGKILL);
    }
    wait_exit(a);
    pid_t b = fork();
    if (b == 0) { /* gets EOWNERDEAD and releases without pthread_mutex_consistent */
        int rc = pthread_mutex_lock(&u->h->lock);
        pthread_mutex_unlock(&u->h->lock);
        _exit(rc == EOWNERDEAD ? 0 : 1);
    }
    CHECK(wait_exit(b) == 0);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t c = fork();
    if (c == 0) {
        alarm(10);
        dup2(fds[1], 2);
        shmq_lock(u);
        _exit(0);
    }
    close(fds[1]);
    char out[1024] = "";
    ssize_t n, got = 0;
    while (got < (ssize_t)sizeof out - 1 && (n = read(fds[0], out + got, sizeof out - 1 - (size_t)got)) > 0) got += n;
    close(fds[0]);
    CHECK(wait_exit(c) == -SIGABRT);
    CHECK_MSG(strstr(out, "not recoverable") != NULL && strstr(out, uname) != NULL, "%s", out);
    shmq_close(u, 1);
}

int main(void) {
    alarm(120); /* a broken repair hangs in a block walk: fail instead of blocking CI */
    snprintf(name, sizeof name, "/da3-test-shmq-%d", (int)getpid());
    char err[256];
    shmq *q = shmq_create(name, 16u << 20, err, sizeof err);
    CHECK_MSG(q != NULL, "%s", err);
    if (!q) CHECK_DONE("test_shm_queue");
    VALID(q);
    test_order_and_results(q);
    test_cancelled_jobs_strand_nothing(q);
    test_session_api(q);
    test_dead_worker(q);
    test_death_inside_the_lock(q);
    test_single_owner(q);
    test_limits(q);
    test_unrecoverable();
    shmq_close(q, 1);
    CHECK(shmq_attach(name, err, sizeof err) == NULL); /* unlinked on close */
    CHECK_DONE("test_shm_queue");
}
