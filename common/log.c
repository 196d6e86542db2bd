#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char log_tag[32] = "da3";
static log_level log_threshold = LOG_INFO;

void log_init(const char *tag, log_level level) {
    snprintf(log_tag, sizeof log_tag, "%s", tag);
    log_threshold = level;
}

log_level log_level_parse(const char *name) {
    if (!name) return LOG_INFO;
    if (!strcmp(name, "debug")) return LOG_DEBUG;
    if (!strcmp(name, "warn")) return LOG_WARN;
    if (!strcmp(name, "error")) return LOG_ERROR;
    return LOG_INFO;
}

void log_msg(log_level level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < log_threshold) return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    /* Format the whole line first and emit it with one write(2) so lines from the front's
     * threads and the worker processes never interleave mid-line. */
    char line[2048];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), log_tag, (int)getpid(), names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
