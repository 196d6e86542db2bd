#include "frontend/supervisor.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "frontend/server.h"

typedef struct {
    pid_t pid;
    double started;      /* monotonic */
    double restart_at;   /* monotonic time of the next start attempt while pid == 0 */
    int quick_deaths;    /* consecutive deaths soon after start: drives the back-off */
} worker_proc;

static worker_proc procs[SHMQ_MAX_WORKERS];
static pthread_mutex_t procs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t watcher;
static volatile int watching;
static char worker_bin[PATH_MAX + 16];

static void resolve_worker_bin(void) {
    if (g_server.opt.worker_bin) {
        snprintf(worker_bin, sizeof worker_bin, "%s", g_server.opt.worker_bin);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n >= (ssize_t)sizeof self - 16) n = 0;
    self[n > 0 ? n : 0] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    snprintf(worker_bin, sizeof worker_bin, "%s/da3-worker", n > 0 ? self : ".");
}

static void spawn(int i) {
    char device[32], index[16], threads[16];
    options_worker_device(&g_server.opt, i, device, sizeof device);
    snprintf(index, sizeof index, "%d", i);
    /* By default the cores are shared out between the workers: libtorch alone would pick one
     * thread per process on some machines and all cores per process on others. */
    int nthreads = g_server.opt.worker_threads;
    if (nthreads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cores > g_server.opt.workers ? (int)(cores / g_server.opt.workers) : 1;
    }
    snprintf(threads, sizeof threads, "%d", nthreads);
    shmq_worker *w = shmq_worker_slot(g_server.q, i);
    shmq_lock(g_server.q);
    w->state = WORKER_STARTING;
    w->started = now_mono();
    snprintf(w->device, sizeof w->device, "%s", device);
    shmq_unlock(g_server.q);
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {worker_bin, "--shm", g_server.shm_name, "--index", index,
                        "--model", (char *)g_server.opt.model, "--device", device, "--threads",
                        threads, "--precision", (char *)g_server.opt.precision, "--log-level", (char *)g_server.opt.log_level, NULL};
        execv(worker_bin, argv);
        fprintf(stderr, "da3-server: cannot exec %s: %s\n", worker_bin, strerror(errno));
        _exit(127);
    }
    if (pid < 0) {
        log_error("fork worker %d: %s", i, strerror(errno));
        procs[i].restart_at = now_mono() + 5;
        return;
    }
    shmq_lock(g_server.q);
    w->pid = pid;
    shmq_unlock(g_server.q);
    procs[i].pid = pid;
    procs[i].started = now_mono();
    log_info("started worker %d (pid %d) on %s", i, (int)pid, device);
}

static void on_worker_exit(pid_t pid, int status) {
    for (int i = 0; i < g_server.opt.workers; i++) {
        if (procs[i].pid != pid) continue;
        procs[i].pid = 0;
        int affected = shmq_recover_dead_worker(g_server.q, pid);
        double lived = now_mono() - procs[i].started;
        if (WIFSIGNALED(status))
            log_warn("worker %d (pid %d) killed by signal %d after %.1f s; %d job(s) recovered", i,
                     (int)pid, WTERMSIG(status), lived, affected);
        else
            log_warn("worker %d (pid %d) exited with status %d after %.1f s; %d job(s) recovered", i,
                     (int)pid, WEXITSTATUS(status), lived, affected);
        /* Restart at once after a crash in service; back off exponentially (to 60 s) when it
         * dies right after start, e.g. a model that cannot load, so we do not spin. */
        procs[i].quick_deaths = lived < 10 ? procs[i].quick_deaths + 1 : 0;
        double delay = procs[i].quick_deaths ? (1 << (procs[i].quick_deaths < 6 ? procs[i].quick_deaths : 6)) : 0;
        if (delay > 60) delay = 60;
        procs[i].restart_at = now_mono() + delay;
        return;
    }
}

static void *watch_loop(void *arg) {
    (void)arg;
    while (watching) {
        int status;
        pid_t pid;
        pthread_mutex_lock(&procs_lock);
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) on_worker_exit(pid, status);
        if (!g_server.stopping)
            for (int i = 0; i < g_server.opt.workers; i++)
                if (procs[i].pid == 0 && now_mono() >= procs[i].restart_at) spawn(i);
        pthread_mutex_unlock(&procs_lock);
        usleep(50 * 1000);
    }
    return NULL;
}

int supervisor_start(void) {
    resolve_worker_bin();
    if (access(worker_bin, X_OK)) {
        log_error("worker program %s is not executable: %s (see --worker-bin)", worker_bin, strerror(errno));
        return -1;
    }
    pthread_mutex_lock(&procs_lock);
    for (int i = 0; i < g_server.opt.workers; i++) spawn(i);
    pthread_mutex_unlock(&procs_lock);
    watching = 1;
    if (pthread_create(&watcher, NULL, watch_loop, NULL)) {
        watching = 0;
        return -1;
    }
    return 0;
}

int supervisor_alive(void) {
    int n = 0;
    pthread_mutex_lock(&procs_lock);
    for (int i = 0; i < g_server.opt.workers; i++) n += procs[i].pid > 0;
    pthread_mutex_unlock(&procs_lock);
    return n;
}

void supervisor_stop(void) {
    if (watching) {
        watching = 0;
        pthread_join(watcher, NULL);
    }
    for (int i = 0; i < g_server.opt.workers; i++)
        if (procs[i].pid > 0) kill(procs[i].pid, SIGTERM);
    double deadline = now_mono() + 5;
    for (;;) {
        int left = 0;
        for (int i = 0; i < g_server.opt.workers; i++) {
            if (procs[i].pid <= 0) continue;
            int status;
            if (waitpid(procs[i].pid, &status, WNOHANG) == procs[i].pid) procs[i].pid = 0;
            else left++;
        }
        if (!left) break;
        if (now_mono() > deadline) {
            for (int i = 0; i < g_server.opt.workers; i++)
                if (procs[i].pid > 0) {
                    kill(procs[i].pid, SIGKILL);
                    waitpid(procs[i].pid, NULL, 0);
                    procs[i].pid = 0;
                }
            break;
        }
        usleep(20 * 1000);
    }
}
