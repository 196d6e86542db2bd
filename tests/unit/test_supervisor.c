/* The worker supervisor driven against real processes (tests/tools/fake_worker, which behaves
 * like da3-worker towards the segment and the front): workers restarted after a crash, the jobs
 * of a dead worker requeued then failed, exponential back-off when a worker keeps dying at
 * start (and recovery when it stops), stop terminating every worker (SIGKILL for one that
 * ignores SIGTERM), and workers dying with a front killed by SIGKILL, including a worker the
 * supervisor restarted later (PR_SET_PDEATHSIG follows the forking thread). */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "frontend/supervisor.h"
#include "shm/shm_queue.h"
#include "tests/unit/check.h"

static char name[64], bin[PATH_MAX + 32], diefile[128];
static shmq *q;
/* Seconds a fake worker takes from fork to ready: measured, since it links libtorch and takes
 * seconds to start under the sanitizers. Every timing below is built on it. */
static double boot_s = 0.1;

static int ready_pids(int n, int *pids) {
    shmq_worker w[SHMQ_MAX_WORKERS];
    shmq_worker_snapshot(q, w, n);
    int ready = 0;
    for (int i = 0; i < n; i++) {
        if (pids) pids[i] = w[i].state == WORKER_READY ? w[i].pid : 0;
        ready += w[i].state == WORKER_READY;
    }
    return ready;
}

/* Waits until n workers are ready; returns 1, or 0 after timeout_s. */
static int wait_ready(int n, double timeout_s) {
    double end = now_mono() + timeout_s;
    while (now_mono() < end) {
        if (ready_pids(n, NULL) == n) return 1;
        usleep(10000);
    }
    return 0;
}

static int wait_finished(shmq_job *j, double timeout_s) {
    double end = now_mono() + timeout_s;
    while (now_mono() < end) {
        int slot = shmq_take_finished(q, j);
        if (slot >= 0) return slot;
        usleep(10000);
    }
    return -1;
}

static int gone(int pid) { return kill(pid, 0) == -1 && errno == ESRCH; }

static void base_config(supervisor_config *c, int workers) {
    supervisor_config_default(c);
    c->worker_bin = bin;
    c->shm_name = name;
    c->q = q;
    c->workers = workers;
    for (int i = 0; i < workers; i++) snprintf(c->devices[i], sizeof c->devices[i], "cpu");
    c->quick_death_s = 0.5 + 2 * boot_s; /* a worker that dies at start is always "quick" */
    c->backoff_base_s = 0.2;             /* quick deaths wait 0.4, 0.8 (cap) ... */
    c->backoff_max_s = 0.8;
    c->stop_grace_s = 1.0 + boot_s;
}

static void sleep_s(double s) { usleep((useconds_t)(s * 1e6)); }

/* Measures boot_s with one worker. */
static void calibrate(void) {
    supervisor_config c;
    base_config(&c, 1);
    double t0 = now_mono();
    CHECK(supervisor_start_with(&c) == 0);
    CHECK(wait_ready(1, 60));
    boot_s = now_mono() - t0;
    supervisor_stop();
    printf("test_supervisor: a fake worker starts in %.2f s\n", boot_s);
}

static void test_crash_restart_backoff_stop(void) {
    supervisor_config c;
    base_config(&c, 2);
    c.args[0] = "--die-if";
    c.args[1] = diefile;
    CHECK(supervisor_start_with(&c) == 0);
    CHECK(wait_ready(2, 10 + 10 * boot_s));
    CHECK(supervisor_alive() == 2);
    int first[2];
    ready_pids(2, first);
    sleep_s(c.quick_death_s + 0.1); /* the next deaths are deaths in service */

    /* A job whose worker dies twice: requeued once (the front is told), then failed. */
    uint64_t id;
    CHECK(shmq_submit(q, &(shmq_job_params){.session_id = "crash-1", .image_count = 1}, &id) >= 0);
    shmq_job j;
    int slot = wait_finished(&j, 10 + 10 * boot_s);
    CHECK(slot >= 0 && j.job_id == id && j.state == JOB_FAILED && j.attempts == 2 &&
          strstr(j.error, "worker process died") != NULL);
    if (slot >= 0) shmq_release(q, slot);
    shmq_event ev[16];
    int n = shmq_take_events(q, ev, 16), requeued = 0;
    for (int i = 0; i < n; i++)
        requeued += ev[i].kind == EVENT_REQUEUED && ev[i].job_id == id && ev[i].attempt == 2 &&
                    !strcmp(ev[i].session_id, "crash-1");
    CHECK(requeued == 1);

    /* Both crashed workers are restarted and the pool works again. */
    CHECK(wait_ready(2, 10 + 10 * boot_s));
    int now[2];
    ready_pids(2, now);
    CHECK(now[0] != first[0] || now[1] != first[1]);
    CHECK(gone(first[0]) || gone(first[1]));
    CHECK(shmq_submit(q, &(shmq_job_params){.session_id = "ok-1", .image_count = 1}, &id) >= 0);
    slot = wait_finished(&j, 10 + 10 * boot_s);
    CHECK(slot >= 0 && j.job_id == id && j.state == JOB_DONE && j.glb_len == 4);
    if (slot >= 0) shmq_release(q, slot);

    /* Back-off: worker 0 now dies at every start (think: a model that cannot load). The gap
     * between each death and the next start is measured: none after the death in service,
     * then 0.4 and 0.8 s after the first and second quick deaths. */
    sleep_s(c.quick_death_s + 0.1);
    FILE *f = fopen(diefile, "w");
    if (f) fclose(f);
    supervisor_worker_info info;
    ready_pids(2, now);
    kill(now[0], SIGKILL);
    double gap[3] = {-1, -1, -1}, down_since = -1, end = now_mono() + 30 + 10 * boot_s;
    int starts = 0, prev = now[0];
    while (starts < 3 && now_mono() < end) {
        supervisor_info(0, &info);
        if (info.pid == 0 && down_since < 0) down_since = now_mono();
        if (info.pid > 0 && info.pid != prev) { /* a restart seen without a gap was immediate */
            gap[starts++] = down_since < 0 ? 0 : now_mono() - down_since;
            prev = info.pid;
            down_since = -1;
        }
        usleep(2000);
    }
    CHECK_MSG(starts == 3 && gap[0] < 0.2 && gap[1] > 0.3 && gap[1] < 0.6 && gap[2] > 0.7 && gap[2] < 1.1,
              "restart gaps %.2f %.2f %.2f s", gap[0], gap[1], gap[2]);
    while (info.pid > 0 && now_mono() < end) { /* the third start dies too */
        usleep(2000);
        supervisor_info(0, &info);
    }
    CHECK(info.quick_deaths >= 3 && info.restart_in_s > 0.5);
    shmq_worker w[2];
    shmq_worker_snapshot(q, w, 2);
    CHECK_MSG(w[0].state != WORKER_READY && strstr(w[0].error, "status 3") != NULL, "%s", w[0].error);
    CHECK(w[1].state == WORKER_READY); /* the other worker is unaffected */
    /* It comes back by itself once starting works again, within the back-off cap. */
    unlink(diefile);
    CHECK(wait_ready(2, 3 + 3 * boot_s));

    /* Stop: every worker is terminated and reaped. */
    ready_pids(2, now);
    supervisor_stop();
    CHECK(supervisor_alive() == 0);
    CHECK(now[0] > 0 && gone(now[0]) && now[1] > 0 && gone(now[1]));
    shmq_worker_snapshot(q, w, 2);
    CHECK(w[0].state == WORKER_DEAD && w[1].state == WORKER_DEAD);
    supervisor_stop(); /* twice is harmless */
}

static void test_stop_escalates(void) {
    supervisor_config c;
    base_config(&c, 1);
    c.args[0] = "--ignore-term";
    c.stop_grace_s = 0.3;
    CHECK(supervisor_start_with(&c) == 0);
    CHECK(wait_ready(1, 10 + 10 * boot_s));
    int pid[1];
    ready_pids(1, pid);
    double t0 = now_mono();
    supervisor_stop();
    double took = now_mono() - t0;
    CHECK_MSG(took >= 0.3 && took < 3 + boot_s, "stop took %.2f s", took);
    CHECK(pid[0] > 0 && gone(pid[0]));
}

/* A front killed by SIGKILL takes its workers with it: the "front" is a child of this test that
 * runs a supervisor; this test is the subreaper that inherits the orphaned worker. */
static void test_workers_die_with_front(void) {
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t front = fork();
    if (front == 0) {
        alarm(60);
        supervisor_config c;
        base_config(&c, 1);
        if (supervisor_start_with(&c) || !wait_ready(1, 10 + 10 * boot_s)) _exit(1);
        int pid[1];
        ready_pids(1, pid);
        /* Restarted by the supervisor thread long after start: must live as long as the front. */
        sleep_s(c.quick_death_s + 0.1);
        kill(pid[0], SIGKILL);
        double end = now_mono() + 10 + 10 * boot_s;
        int again[1] = {0};
        while (now_mono() < end && (ready_pids(1, again) != 1 || again[0] == pid[0])) usleep(10000);
        usleep(500 * 1000);
        if (kill(again[0], 0)) _exit(2);
        if (write(fds[1], &again[0], sizeof again[0]) != sizeof again[0]) _exit(3);
        for (;;) pause();
    }
    int worker = 0;
    CHECK(read(fds[0], &worker, sizeof worker) == sizeof worker && worker > 0);
    CHECK(worker > 0 && kill(worker, 0) == 0); /* alive while its front lives */
    kill(front, SIGKILL);
    waitpid(front, NULL, 0);
    double t0 = now_mono();
    int status = 0, reaped = 0;
    while (!reaped && now_mono() - t0 < 2.0) {
        reaped = waitpid(worker, &status, WNOHANG) == worker;
        if (!reaped) usleep(10000);
    }
    CHECK_MSG(reaped && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "worker %d after its front died: reaped %d, status %d", worker, reaped, status);
    if (!reaped && worker > 0) {
        kill(worker, SIGKILL);
        waitpid(worker, NULL, 0);
    }
    close(fds[0]);
    close(fds[1]);
}

int main(void) {
    alarm(300);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    snprintf(bin, sizeof bin, "%s/../tools/fake_worker", self);
    snprintf(name, sizeof name, "/da3-test-sup-%d", (int)getpid());
    snprintf(diefile, sizeof diefile, "/tmp/da3-test-sup-die-%d", (int)getpid());
    unlink(diefile);
    char err[256];
    q = shmq_create(name, 4u << 20, err, sizeof err);
    CHECK_MSG(q != NULL, "%s", err);
    CHECK_MSG(access(bin, X_OK) == 0, "%s is missing (make builds it with the tests)", bin);
    if (!q || access(bin, X_OK)) CHECK_DONE("test_supervisor");
    calibrate();
    test_crash_restart_backoff_stop();
    test_stop_escalates();
    test_workers_die_with_front();
    char verr[256] = "";
    CHECK_MSG(shmq_validate(q, verr, sizeof verr) == 0, "%s", verr);
    shmq_close(q, 1);
    unlink(diefile);
    CHECK_DONE("test_supervisor");
}
