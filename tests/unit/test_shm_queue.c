/* The shared-memory queue across real processes: FIFO order, claim/finish/fail, arena blocks,
 * cancellation, a worker killed while holding a job (requeued once, then failed), a worker
 * killed while holding the segment's mutex (robust repair). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/shm_queue.h"
#include "tests/unit/check.h"

static char name[64];

/* Forks a worker process that claims one job, then runs `then` (exit code = result). */
static pid_t fork_worker(int index, int (*then)(shmq *q, int slot, uint64_t id)) {
    pid_t pid = fork();
    if (pid == 0) {
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

static int die_holding_lock(shmq *q, int slot, uint64_t id) {
    (void)slot;
    (void)id;
    shmq_lock(q);
    raise(SIGKILL);
    return 0;
}

static int wait_exit(pid_t pid) {
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

int main(void) {
    snprintf(name, sizeof name, "/da3-test-shmq-%d", (int)getpid());
    char err[256];
    shmq *q = shmq_create(name, 16u << 20, err, sizeof err);
    CHECK_MSG(q != NULL, "%s", err);
    if (!q) CHECK_DONE("test_shm_queue");

    /* FIFO: jobs are claimed in submission order. */
    uint64_t ids[3];
    int slots[3];
    for (int i = 0; i < 3; i++) slots[i] = shmq_submit(q, &(shmq_job_params){.image_count = i + 1}, &ids[i]);
    CHECK(slots[0] >= 0 && ids[0] < ids[1] && ids[1] < ids[2]);
    int queued, running;
    shmq_counts(q, &queued, &running);
    CHECK(queued == 3 && running == 0);
    /* Cancel the middle one while queued: it is skipped by claimers. */
    shmq_cancel(q, slots[1], ids[1]);
    pid_t a = fork_worker(0, finish_with_result);
    CHECK(wait_exit(a) == 0);
    shmq_event ev[8];
    int n = shmq_take_events(q, ev, 8);
    CHECK(n == 1 && ev[0].job_id == ids[0] && !strcmp(ev[0].stage, "inference") && ev[0].progress == 0.3);
    shmq_job j;
    int slot = shmq_take_finished(q, &j);
    CHECK(slot == slots[0] && j.state == JOB_DONE && j.job_id == ids[0] && j.params.image_count == 1);
    const char *res = shmq_arena_ptr(q, j.result_off);
    CHECK(j.glb_len == (3u << 20) - 4 && res[0] == 'g' && !memcmp(res + j.glb_len, "meta", 4));
    CHECK(shmq_take_finished(q, &j) < 0); /* handed out once */
    size_t used, total;
    shmq_arena_usage(q, &used, &total);
    CHECK(used >= (3u << 20) && total >= (16u << 20));
    shmq_release(q, slot);
    shmq_arena_usage(q, &used, &total);
    CHECK(used == 0);

    /* The next claim gets job 3 (job 2 was cancelled); a failure carries its message. */
    pid_t b = fork_worker(1, fail_job);
    CHECK(wait_exit(b) == 0);
    slot = shmq_take_finished(q, &j);
    CHECK(slot == slots[2] && j.state == JOB_FAILED && strstr(j.error, "truncated") != NULL);
    shmq_release(q, slot);

    /* A worker killed while holding a job: requeued once with its arena block freed... */
    uint64_t id;
    int s = shmq_submit(q, &(shmq_job_params){.image_count = 9}, &id);
    pid_t c = fork_worker(2, hang);
    for (int i = 0; i < 200; i++) {
        shmq_counts(q, &queued, &running);
        if (running == 1) break;
        usleep(10000);
    }
    usleep(50000);
    kill(c, SIGKILL);
    CHECK(wait_exit(c) == -SIGKILL);
    CHECK(shmq_recover_dead_worker(q, c) == 1);
    shmq_counts(q, &queued, &running);
    CHECK(queued == 1 && running == 0);
    shmq_arena_usage(q, &used, &total);
    CHECK(used == 0);
    /* ...and failed with a clear error when its second worker dies too. */
    pid_t d = fork_worker(3, hang);
    for (int i = 0; i < 200; i++) {
        shmq_counts(q, &queued, &running);
        if (running == 1) break;
        usleep(10000);
    }
    kill(d, SIGKILL);
    wait_exit(d);
    CHECK(shmq_recover_dead_worker(q, d) == 1);
    slot = shmq_take_finished(q, &j);
    CHECK(slot == s && j.job_id == id && j.state == JOB_FAILED && j.attempts == 2 &&
          strstr(j.error, "worker process died") != NULL);
    shmq_release(q, slot);

    /* A process killed while holding the segment's mutex: the next locker repairs and goes on. */
    s = shmq_submit(q, &(shmq_job_params){.image_count = 4}, &id);
    pid_t e = fork_worker(4, die_holding_lock);
    wait_exit(e);
    shmq_recover_dead_worker(q, e); /* must not deadlock: EOWNERDEAD is handled */
    shmq_counts(q, &queued, &running);
    CHECK(queued == 1 && running == 0);
    pid_t f = fork_worker(5, finish_with_result);
    CHECK(wait_exit(f) == 0);
    slot = shmq_take_finished(q, &j);
    CHECK(slot == s && j.state == JOB_DONE);
    shmq_release(q, slot);

    /* An arena too small for a result: allocation fails cleanly. */
    s = shmq_submit(q, &(shmq_job_params){.image_count = 1}, &id);
    shmq_job_params p;
    uint64_t cid;
    int cs = shmq_claim(q, 6, 1.0, &p, &cid);
    uint64_t off;
    CHECK(cs == s && shmq_result_alloc(q, cs, cid, 64u << 20, &off) == NULL);
    shmq_fail(q, cs, cid, "too big");
    slot = shmq_take_finished(q, &j);
    shmq_release(q, slot);

    /* The table is bounded: submit reports full instead of overwriting. */
    int full = 0;
    for (int i = 0; i < SHMQ_MAX_JOBS + 1; i++)
        if (shmq_submit(q, &(shmq_job_params){.image_count = 1}, &id) < 0) full++;
    CHECK(full == 1);

    shmq_close(q, 1);
    CHECK(shmq_attach(name, err, sizeof err) == NULL); /* unlinked on close */
    CHECK_DONE("test_shm_queue");
}
