/* The front's Prometheus metrics: counters and fixed-bucket histograms updated with lock-free
 * atomic increments from any thread (the connection loop, handlers, the dispatcher, result
 * encoders, the supervisor), and their text exposition (format 0.0.4) for GET /metrics.
 *
 * This file knows nothing of the rest of the front: the gauges read at scrape time (sessions,
 * connections, queue depth, workers, arena) are passed in by the caller (http_api.c), so every
 * module and unit test can count without linking the server's state. Updating a metric takes no
 * lock, so it may be done anywhere, including under any lock of the lock order. */
#ifndef DA3_METRICS_H
#define DA3_METRICS_H

#include <stddef.h>

/* Stages of a job timed into da3_job_stage_duration_seconds{stage=...}. */
typedef enum {
    METRICS_STAGE_DECODE = 0, /* worker: image decode + preprocessing */
    METRICS_STAGE_MODEL,      /* worker: the network */
    METRICS_STAGE_FUSION,     /* worker: point fusion */
    METRICS_STAGE_GLB,        /* worker: writing the GLB */
    METRICS_STAGE_ENCODE,     /* front: base64 of the GLB into the result message */
    METRICS_STAGE_SEND,       /* front: result queued -> its last byte written to the socket */
    METRICS_STAGE_COUNT
} metrics_stage_id;

/* Job outcomes counted in da3_jobs_total{outcome=...}. */
typedef enum {
    METRICS_JOB_COMPLETED = 0,
    METRICS_JOB_FAILED,
    METRICS_JOB_CANCELLED,
    METRICS_JOB_OUTCOMES
} metrics_outcome;

void metrics_bytes_received(size_t n);        /* from client sockets */
void metrics_bytes_sent(size_t n);            /* to client sockets */
void metrics_websocket_opened(void);          /* an upgrade answered 101 */
void metrics_tls_handshake(int ok);           /* a TLS handshake ended: 1 done, 0 failed */
void metrics_tls_refused(void);               /* a TLS connection closed at accept (request rate) */
void metrics_session_created(void);
void metrics_worker_restarted(void);          /* a worker started again after it exited */
void metrics_job_submitted(void);             /* a job entered the queue */
void metrics_job_rejected(void);              /* generate refused: the queue was full */
void metrics_job_outcome(metrics_outcome o, unsigned n);
void metrics_queue_wait(double seconds);      /* submission -> claim by a worker */
void metrics_stage(metrics_stage_id s, double seconds);

/* What the caller reads at scrape time. */
typedef struct {
    int sessions, sessions_max;
    int connections, websockets;
    int jobs_queued, jobs_running, jobs_capacity;
    int workers_configured, workers_starting, workers_ready, workers_dead;
    size_t arena_used, arena_size;
    size_t inbound_bytes, inbound_budget;
    size_t outgoing_queue_limit;              /* per connection */
    const char *model_name;                   /* the info metric's labels */
    int model_trained;
    double uptime_s;
} metrics_gauges;

/* The whole exposition as malloc'd text (*len its length), or NULL when out of memory. */
char *metrics_render(const metrics_gauges *g, size_t *len);

/* Reads one counter/histogram count back (for tests): da3_jobs_total{outcome} and the number of
 * observations of a stage. */
unsigned long long metrics_jobs(metrics_outcome o);
unsigned long long metrics_stage_count(metrics_stage_id s);

#endif
