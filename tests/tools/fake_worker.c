/* A stand-in for da3-worker in the supervisor's tests: same command line and the same duties
 * towards the segment and the front (die with the front, report ready, claim jobs), no model.
 * What it does with a job is chosen by the job's session id:
 *   "crash..." dies by SIGKILL holding the job;  "hang..." holds it until killed;
 *   anything else finishes it with a 4-byte result.
 * --die-if FILE: exit 3 right after start while FILE exists (a model that cannot load).
 * --ignore-term: ignore SIGTERM (a worker stuck in a long call), so only SIGKILL stops it. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "shm/shm_queue.h"

static volatile sig_atomic_t stop;
static void on_term(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    const char *shm_name = NULL, *device = "cpu", *die_if = NULL;
    int index = -1, ignore_term = 0;
    pid_t front = 0;
    static const struct option opts[] = {{"shm", required_argument, 0, 's'},
                                         {"index", required_argument, 0, 'i'},
                                         {"front-pid", required_argument, 0, 'f'},
                                         {"device", required_argument, 0, 'd'},
                                         {"die-if", required_argument, 0, 'x'},
                                         {"ignore-term", no_argument, 0, 'g'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': shm_name = optarg; break;
        case 'i': index = atoi(optarg); break;
        case 'f': front = (pid_t)atoi(optarg); break;
        case 'd': device = optarg; break;
        case 'x': die_if = optarg; break;
        case 'g': ignore_term = 1; break;
        default: return 2;
        }
    }
    if (!shm_name || index < 0) return 2;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (front > 0 && getppid() != front) return 4;
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    struct sigaction sa = {0};
    sa.sa_handler = ignore_term ? SIG_IGN : on_term;
    sigaction(SIGTERM, &sa, NULL);
    if (die_if && access(die_if, F_OK) == 0) return 3;
    char err[256];
    shmq *q = shmq_attach(shm_name, err, sizeof err);
    if (!q) {
        fprintf(stderr, "fake_worker: %s\n", err);
        return 1;
    }
    shmq_worker_set_ready(q, index, (int)getpid(), "fake", 0, device);
    while (!stop) {
        shmq_job_params p;
        uint64_t id;
        int slot = shmq_claim(q, index, 0.1, &p, &id);
        if (slot < 0) continue;
        if (!strncmp(p.session_id, "crash", 5)) raise(SIGKILL);
        if (!strncmp(p.session_id, "hang", 4))
            for (;;) pause();
        shmq_progress(q, slot, id, "inference", 0.5, "fake");
        uint64_t off;
        char *dst = shmq_result_alloc(q, slot, id, 4, &off);
        if (!dst) {
            shmq_fail(q, slot, id, "arena full");
            continue;
        }
        memcpy(dst, "fake", 4);
        double ms[4] = {0};
        shmq_finish(q, slot, id, off, 4, 0, ms);
    }
    shmq_close(q, 0);
    return 0;
}
