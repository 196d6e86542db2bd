/* da3-load's figures: per message kind latencies, errors and bytes; a server's /proc numbers. */
#ifndef DA3_LOAD_STATS_H
#define DA3_LOAD_STATS_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* The message kinds da3-load reports, in print order. */
typedef enum { K_CREATE, K_CONNECT, K_PING, K_IMAGE, K_GENERATE, K_PROGRESS, K_CLOSE, K_DELETE, K_COUNT } kind;

/* Records one successful exchange of kind k that started at t0 and ended at t1 (now_mono seconds),
 * moving bytes bytes in both directions together. Thread-safe. */
void stats_ok(kind k, double t0, double t1, uint64_t bytes);

/* Records one failed exchange; the first few messages are printed to stderr as they happen. */
void stats_err(kind k, double t0, double t1, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Errors recorded so far over all kinds. */
uint64_t stats_errors(void);

/* Prints the table: kind, count, errors, p50/p99/max ms, msg/s and MB/s over each kind's own span
 * (first start to last end). */
void stats_print(FILE *f);

/* A process's resource figures from /proc. */
typedef struct {
    long rss_kb, hwm_kb, threads, fds;
    double cpu_s; /* user + system CPU seconds so far (the process itself, not its children) */
} proc_snap;

/* Reads /proc/PID/status (VmRSS, VmHWM, Threads), /proc/PID/stat (CPU) and counts /proc/PID/fd;
 * 0 or -1. */
int proc_read(pid_t pid, proc_snap *s);

/* Nearest-rank percentile q (0..1) of n sorted values. */
double percentile(const double *sorted, size_t n, double q);

#endif
