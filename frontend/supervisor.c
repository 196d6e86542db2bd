#include "frontend/supervisor.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "frontend/metrics.h"

typedef struct {
    pid_t pid;
    double started;    /* monotonic */
    double restart_at; /* monotonic time of the next start attempt while pid == 0 */
    int quick_deaths;  /* consecutive deaths soon after start: drives the back-off */
    int starts;
} worker_proc;

/* All state below is guarded by `lock`; the supervisor thread sleeps on `wake` between passes. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake;
static supervisor_config cfg;
static worker_proc procs[SHMQ_MAX_WORKERS];
static pthread_t thread;
static int running, stop_requested, started_all;

void supervisor_config_default(supervisor_config *c) {
    memset(c, 0, sizeof *c);
    c->quick_death_s = 10;
    c->backoff_base_s = 1;
    c->backoff_max_s = 60;
    c->stop_grace_s = 5;
}

/* Forks and execs worker i. Runs on the supervisor thread only (see supervisor.h). */
static void spawn(int i) {
    char index[16], front[16];
    snprintf(index, sizeof index, "%d", i);
    snprintf(front, sizeof front, "%d", (int)getpid());
    /* Everything the child needs is built before fork: between fork and exec it may only make
     * async-signal-safe calls (another thread of ours may hold the malloc lock). */
    char *argv[12 + SUPERVISOR_MAX_ARGS];
    int n = 0;
    argv[n++] = (char *)cfg.worker_bin;
    argv[n++] = "--shm";
    argv[n++] = (char *)cfg.shm_name;
    argv[n++] = "--index";
    argv[n++] = index;
    argv[n++] = "--front-pid";
    argv[n++] = front;
    argv[n++] = "--device";
    argv[n++] = cfg.devices[i];
    for (int k = 0; k < SUPERVISOR_MAX_ARGS && cfg.args[k]; k++) argv[n++] = (char *)cfg.args[k];
    argv[n] = NULL;
    static const char failed[] = "da3-server: cannot exec the worker program\n";
    pid_t pid = fork();
    if (pid == 0) {
        execv(cfg.worker_bin, argv);
        ssize_t w = write(2, failed, sizeof failed - 1);
        (void)w;
        _exit(127);
    }
    if (pid < 0) {
        log_error("fork worker %d: %s", i, strerror(errno));
        procs[i].restart_at = now_mono() + 5;
        return;
    }
    procs[i].pid = pid;
    procs[i].started = now_mono();
    procs[i].starts++;
    if (procs[i].starts > 1) metrics_worker_restarted();
    shmq_worker_set_starting(cfg.q, i, (int)pid, cfg.devices[i]);
    log_info("started worker %d (pid %d) on %s", i, (int)pid, cfg.devices[i]);
}

/* Worker i's process has ended with `status`: record why, recover its jobs, schedule a restart. */
static void on_exit_status(int i, int status) {
    pid_t pid = procs[i].pid;
    procs[i].pid = 0;
    double lived = now_mono() - procs[i].started;
    char reason[128];
    if (WIFSIGNALED(status))
        snprintf(reason, sizeof reason, "killed by signal %d after %.1f s", WTERMSIG(status), lived);
    else
        snprintf(reason, sizeof reason, "exited with status %d after %.1f s", WEXITSTATUS(status), lived);
    shmq_worker_mark_dead(cfg.q, i, (int)pid, reason);
    int affected = shmq_recover_dead_worker(cfg.q, (int)pid);
    log_warn("worker %d (pid %d) %s; %d job(s) recovered", i, (int)pid, reason, affected);
    /* Restart at once after a death in service; back off exponentially when it dies right after
     * start (e.g. a model that cannot load), so a broken deployment does not spin. */
    procs[i].quick_deaths = lived < cfg.quick_death_s ? procs[i].quick_deaths + 1 : 0;
    int k = procs[i].quick_deaths < 16 ? procs[i].quick_deaths : 16;
    double delay = k ? cfg.backoff_base_s * (double)(1 << k) : 0;
    if (delay > cfg.backoff_max_s) delay = cfg.backoff_max_s;
    procs[i].restart_at = now_mono() + delay;
}

static void reap_locked(void) {
    for (int i = 0; i < cfg.workers; i++) {
        int status;
        if (procs[i].pid > 0 && waitpid(procs[i].pid, &status, WNOHANG) == procs[i].pid)
            on_exit_status(i, status);
    }
}

static int alive_locked(void) {
    int n = 0;
    for (int i = 0; i < cfg.workers; i++) n += procs[i].pid > 0;
    return n;
}

/* Sleeps on `wake` for up to s seconds (lock held around it). */
static void nap_locked(double s) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long ns = ts.tv_nsec + (long)(s * 1e9);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(&wake, &lock, &ts);
}

/* SIGTERM (a worker finishes or abandons its job cleanly), SIGKILL after the grace period, and
 * every child reaped before the thread may exit. */
static void terminate_all_locked(void) {
    for (int i = 0; i < cfg.workers; i++)
        if (procs[i].pid > 0) kill(procs[i].pid, SIGTERM);
    double deadline = now_mono() + cfg.stop_grace_s;
    for (;;) {
        for (int i = 0; i < cfg.workers; i++) {
            int status;
            if (procs[i].pid > 0 && waitpid(procs[i].pid, &status, WNOHANG) == procs[i].pid) {
                shmq_worker_mark_dead(cfg.q, i, procs[i].pid, "stopped with the server");
                procs[i].pid = 0;
            }
        }
        if (!alive_locked()) return;
        if (now_mono() > deadline) break;
        nap_locked(0.02);
    }
    for (int i = 0; i < cfg.workers; i++) {
        if (procs[i].pid <= 0) continue;
        log_warn("worker %d (pid %d) did not stop within %.1f s: killing it", i, (int)procs[i].pid,
                 cfg.stop_grace_s);
        kill(procs[i].pid, SIGKILL);
        waitpid(procs[i].pid, NULL, 0);
        shmq_worker_mark_dead(cfg.q, i, procs[i].pid, "killed at shutdown");
        procs[i].pid = 0;
    }
}

static void *supervise(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < cfg.workers; i++) spawn(i);
    started_all = 1;
    pthread_cond_broadcast(&wake);
    while (!stop_requested) {
        reap_locked();
        for (int i = 0; i < cfg.workers && !stop_requested; i++)
            if (procs[i].pid == 0 && now_mono() >= procs[i].restart_at) spawn(i);
        nap_locked(0.025);
    }
    terminate_all_locked();
    pthread_mutex_unlock(&lock);
    return NULL;
}

int supervisor_start_with(const supervisor_config *c) {
    if (c->workers < 1 || c->workers > SHMQ_MAX_WORKERS || !c->q || !c->worker_bin || !c->shm_name) {
        log_error("supervisor: bad configuration (%d workers)", c->workers);
        return -1;
    }
    if (access(c->worker_bin, X_OK)) {
        log_error("worker program %s is not executable: %s (see --worker-bin)", c->worker_bin,
                  strerror(errno));
        return -1;
    }
    pthread_mutex_lock(&lock);
    if (running) {
        pthread_mutex_unlock(&lock);
        log_error("supervisor: already running");
        return -1;
    }
    cfg = *c;
    memset(procs, 0, sizeof procs);
    stop_requested = started_all = 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&thread, NULL, supervise, NULL)) {
        pthread_mutex_unlock(&lock);
        log_error("supervisor: cannot start its thread");
        return -1;
    }
    running = 1;
    while (!started_all) pthread_cond_wait(&wake, &lock);
    pthread_mutex_unlock(&lock);
    return 0;
}

void supervisor_stop(void) {
    pthread_mutex_lock(&lock);
    int was_running = running;
    stop_requested = 1;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    if (!was_running) return;
    pthread_join(thread, NULL);
    pthread_mutex_lock(&lock);
    running = 0;
    pthread_mutex_unlock(&lock);
}

int supervisor_alive(void) {
    pthread_mutex_lock(&lock);
    int n = running ? alive_locked() : 0;
    pthread_mutex_unlock(&lock);
    return n;
}

int supervisor_info(int i, supervisor_worker_info *out) {
    pthread_mutex_lock(&lock);
    int ok = i >= 0 && i < cfg.workers;
    if (ok) {
        out->pid = procs[i].pid;
        out->starts = procs[i].starts;
        out->quick_deaths = procs[i].quick_deaths;
        double left = procs[i].restart_at - now_mono();
        out->restart_in_s = procs[i].pid == 0 && left > 0 ? left : 0;
    }
    pthread_mutex_unlock(&lock);
    return ok ? 0 : -1;
}
