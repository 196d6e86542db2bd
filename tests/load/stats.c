/* Per-kind latency/error/byte accounting and /proc readings for da3-load. */
#include "tests/load/stats.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const NAMES[K_COUNT] = {"create", "connect", "ping", "image", "generate", "progress", "close", "delete"};

typedef struct {
    double *lat; /* milliseconds */
    size_t n, cap;
    uint64_t errors, bytes;
    double first, last;
} kind_stats;

/* One lock for all kinds: recording is a few stores, far below the rates measured. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static kind_stats g_k[K_COUNT];
static uint64_t g_errors_printed;

/* Widens kind k's span to include [t0, t1]. Caller holds g_lock. */
static void span(kind_stats *s, double t0, double t1) {
    if (s->n + s->errors == 0 || t0 < s->first) s->first = t0;
    if (s->n + s->errors == 0 || t1 > s->last) s->last = t1;
}

void stats_ok(kind k, double t0, double t1, uint64_t bytes) {
    pthread_mutex_lock(&g_lock);
    kind_stats *s = &g_k[k];
    span(s, t0, t1);
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->lat = realloc(s->lat, s->cap * sizeof *s->lat);
    }
    s->lat[s->n++] = (t1 - t0) * 1e3;
    s->bytes += bytes;
    pthread_mutex_unlock(&g_lock);
}

void stats_err(kind k, double t0, double t1, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_lock);
    span(&g_k[k], t0, t1);
    g_k[k].errors++;
    /* Enough to diagnose, few enough that 1,000 failing sockets do not bury the table. */
    if (g_errors_printed++ < 10) fprintf(stderr, "da3-load: %s error: %s\n", NAMES[k], msg);
    pthread_mutex_unlock(&g_lock);
}

uint64_t stats_errors(void) {
    pthread_mutex_lock(&g_lock);
    uint64_t e = 0;
    for (int k = 0; k < K_COUNT; k++) e += g_k[k].errors;
    pthread_mutex_unlock(&g_lock);
    return e;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double percentile(const double *sorted, size_t n, double q) {
    if (n == 0) return 0;
    size_t r = (size_t)ceil(q * (double)n);
    if (r < 1) r = 1;
    return sorted[r - 1];
}

void stats_print(FILE *f) {
    pthread_mutex_lock(&g_lock);
    fprintf(f, "%-9s %8s %7s %9s %9s %9s %10s %9s\n", "kind", "count", "errors", "p50_ms", "p99_ms", "max_ms", "msg/s",
            "MB/s");
    for (int k = 0; k < K_COUNT; k++) {
        kind_stats *s = &g_k[k];
        if (s->n + s->errors == 0) continue;
        qsort(s->lat, s->n, sizeof *s->lat, cmp_double);
        double secs = s->last - s->first;
        double rate = secs > 0 ? (double)s->n / secs : 0, mbs = secs > 0 ? (double)s->bytes / secs / 1e6 : 0;
        fprintf(f, "%-9s %8zu %7llu %9.2f %9.2f %9.2f %10.1f %9.2f\n", NAMES[k], s->n, (unsigned long long)s->errors,
                percentile(s->lat, s->n, 0.50), percentile(s->lat, s->n, 0.99), s->n ? s->lat[s->n - 1] : 0, rate,
                mbs);
    }
    pthread_mutex_unlock(&g_lock);
}

int proc_read(pid_t pid, proc_snap *s) {
    char path[64];
    memset(s, 0, sizeof *s);
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) s->rss_kb = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0) s->hwm_kb = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "Threads:", 8) == 0) s->threads = strtol(line + 8, NULL, 10);
    }
    fclose(f);
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        /* Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15. */
        char *p = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            s->cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') s->fds++;
    closedir(d);
    return 0;
}
