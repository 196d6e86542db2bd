/* Prefork worker management: the front forks/execs da3-worker processes at start, watches them,
 * recovers the jobs of a dead one and restarts it (with back-off if it keeps dying). */
#ifndef DA3_SUPERVISOR_H
#define DA3_SUPERVISOR_H

/* Starts the configured workers and the watcher thread. Returns 0 or -1. */
int supervisor_start(void);

/* Terminates the workers (SIGTERM, then SIGKILL after a grace period) and joins the watcher. */
void supervisor_stop(void);

/* Number of worker processes currently running. */
int supervisor_alive(void);

#endif
