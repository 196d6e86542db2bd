/* Minimal leveled logging to stderr, one line per call, safe from any thread or process. */
#ifndef DA3_LOG_H
#define DA3_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Sets the process-wide threshold and the tag printed on each line (e.g. "front", "worker0"). */
void log_init(const char *tag, log_level level);

/* Parses "debug|info|warn|error"; returns LOG_INFO for anything else. */
log_level log_level_parse(const char *name);

/* printf-style message at `level`, with a timestamp and the tag; dropped below the threshold. */
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
