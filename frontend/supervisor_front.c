/* The front's supervisor configuration: da3-worker next to da3-server (or --worker-bin), one
 * device per worker from --device, the model and thread options. Kept apart from
 * frontend/supervisor.c so the supervisor itself does not depend on g_server and can be driven
 * by a unit test. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "frontend/server.h"
#include "frontend/supervisor.h"

/* Static: the supervisor keeps pointers to these until supervisor_stop. */
static char worker_bin[PATH_MAX + 16];
static char threads[16];

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

int supervisor_start(void) {
    const server_options *o = &g_server.opt;
    supervisor_config c;
    supervisor_config_default(&c);
    resolve_worker_bin();
    c.worker_bin = worker_bin;
    c.shm_name = g_server.shm_name;
    c.q = g_server.q;
    c.workers = o->workers;
    for (int i = 0; i < o->workers && i < SHMQ_MAX_WORKERS; i++)
        options_worker_device(o, i, c.devices[i], (int)sizeof c.devices[i]);
    /* By default the cores are shared out between the workers: libtorch alone would pick one
     * thread per process on some machines and all cores per process on others. */
    int nthreads = o->worker_threads;
    if (nthreads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cores > o->workers ? (int)(cores / o->workers) : 1;
    }
    snprintf(threads, sizeof threads, "%d", nthreads);
    const char *args[] = {"--model", o->model, "--threads", threads, "--precision", o->precision,
                          "--log-level", o->log_level, NULL};
    memcpy(c.args, args, sizeof args);
    return supervisor_start_with(&c);
}
