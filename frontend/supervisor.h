/* Prefork worker management: one supervisor thread forks/execs the worker processes, reaps them,
 * recovers the jobs of a dead one and restarts it (with back-off if it keeps dying at start),
 * and on stop terminates them all. It is the only thread that forks workers and it outlives
 * them, because PR_SET_PDEATHSIG (which makes a worker die with its front) fires when the
 * forking *thread* exits, not the process. */
#ifndef DA3_SUPERVISOR_H
#define DA3_SUPERVISOR_H

#include "shm/shm_queue.h"

#define SUPERVISOR_MAX_ARGS 24

typedef struct {
    const char *worker_bin;  /* program to exec */
    const char *shm_name;    /* given to each worker as --shm */
    shmq *q;                 /* the segment: worker table and job recovery */
    int workers;             /* 1..SHMQ_MAX_WORKERS; worker i gets --index i */
    char devices[SHMQ_MAX_WORKERS][32];   /* --device of each worker */
    const char *args[SUPERVISOR_MAX_ARGS]; /* further arguments for every worker, NULL-ended */
    double quick_death_s;    /* a death sooner than this after start counts toward back-off */
    double backoff_base_s;   /* k quick deaths in a row wait base * 2^k before the restart */
    double backoff_max_s;    /* cap of that wait */
    double stop_grace_s;     /* SIGTERM, then SIGKILL after this long */
} supervisor_config;

/* Fills the production timings (10 s quick death, 1 s base so 2, 4, 8 ... 60 s, 5 s grace) and
 * no workers. */
void supervisor_config_default(supervisor_config *c);

/* Starts the supervisor thread and returns once every worker has been forked: 0, or -1 (logged).
 * The strings cfg points to must stay valid until supervisor_stop returns. */
int supervisor_start_with(const supervisor_config *cfg);

/* Front: supervisor_start_with a configuration built from g_server (frontend/supervisor_front.c). */
int supervisor_start(void);

/* Terminates the workers (SIGTERM, then SIGKILL after the grace period), reaps them and joins the
 * supervisor thread. Safe to call when not started. */
void supervisor_stop(void);

/* Number of worker processes currently running. */
int supervisor_alive(void);

typedef struct {
    int pid;             /* 0 while not running */
    int starts;          /* forks so far */
    int quick_deaths;    /* consecutive deaths soon after start */
    double restart_in_s; /* while not running: seconds until the next start */
} supervisor_worker_info;

/* Copies worker i's supervision state; 0, or -1 for a bad index. */
int supervisor_info(int i, supervisor_worker_info *out);

#endif
