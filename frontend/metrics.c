#include "frontend/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds (seconds) shared by every histogram: 1 ms (a small decode, a send on loopback)
 * to 5 min (a long queue wait or a Giant model on many views). */
static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                1,     2.5,    5,     10,   30,    60,   120,  300};
#define NBOUNDS (sizeof bounds / sizeof *bounds)

/* Non-cumulative bucket counts (the last is +Inf) and the sum in nanoseconds, so an observation
 * is two relaxed atomic adds. The exposition accumulates the buckets and takes the count from
 * them, so _count always equals the +Inf bucket. */
typedef struct {
    atomic_ullong bucket[NBOUNDS + 1];
    atomic_ullong sum_ns;
} histogram;

static struct {
    atomic_ullong bytes_in, bytes_out;
    atomic_ullong websockets_opened, sessions_created, worker_restarts;
    atomic_ullong tls_handshakes, tls_handshake_failures, tls_refused;
    atomic_ullong jobs_submitted, jobs_rejected;
    atomic_ullong jobs[METRICS_JOB_OUTCOMES];
    histogram queue_wait;
    histogram stage[METRICS_STAGE_COUNT];
} m;

static const char *const stage_names[METRICS_STAGE_COUNT] = {"decode", "model", "fusion", "glb", "encode", "send"};
static const char *const outcome_names[METRICS_JOB_OUTCOMES] = {"completed", "failed", "cancelled"};

static void add(atomic_ullong *c, unsigned long long n) { atomic_fetch_add_explicit(c, n, memory_order_relaxed); }

void metrics_bytes_received(size_t n) { add(&m.bytes_in, n); }
void metrics_bytes_sent(size_t n) { add(&m.bytes_out, n); }
void metrics_websocket_opened(void) { add(&m.websockets_opened, 1); }
void metrics_tls_handshake(int ok) { add(ok ? &m.tls_handshakes : &m.tls_handshake_failures, 1); }
void metrics_tls_refused(void) { add(&m.tls_refused, 1); }
void metrics_session_created(void) { add(&m.sessions_created, 1); }
void metrics_worker_restarted(void) { add(&m.worker_restarts, 1); }
void metrics_job_submitted(void) { add(&m.jobs_submitted, 1); }
void metrics_job_rejected(void) { add(&m.jobs_rejected, 1); }

void metrics_job_outcome(metrics_outcome o, unsigned n) {
    if ((unsigned)o < METRICS_JOB_OUTCOMES) add(&m.jobs[o], n);
}

static void observe(histogram *h, double s) {
    if (!(s > 0)) s = 0; /* also NaN */
    size_t i = 0;
    while (i < NBOUNDS && s > bounds[i]) i++;
    add(&h->bucket[i], 1);
    add(&h->sum_ns, s < 1e9 ? (unsigned long long)(s * 1e9 + 0.5) : 0);
}

void metrics_queue_wait(double seconds) { observe(&m.queue_wait, seconds); }

void metrics_stage(metrics_stage_id s, double seconds) {
    if ((unsigned)s < METRICS_STAGE_COUNT) observe(&m.stage[s], seconds);
}

unsigned long long metrics_jobs(metrics_outcome o) {
    return (unsigned)o < METRICS_JOB_OUTCOMES ? atomic_load(&m.jobs[o]) : 0;
}

unsigned long long metrics_stage_count(metrics_stage_id s) {
    if ((unsigned)s >= METRICS_STAGE_COUNT) return 0;
    unsigned long long n = 0;
    for (size_t i = 0; i <= NBOUNDS; i++) n += atomic_load(&m.stage[s].bucket[i]);
    return n;
}

/* ---- exposition ------------------------------------------------------------------------------ */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void put(buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *grown = realloc(b->p, cap);
        if (!grown) {
            b->oom = 1;
            return;
        }
        b->p = grown;
        b->cap = cap;
    }
}

static void family(buf *b, const char *name, const char *type, const char *help) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(buf *b, const char *name, const char *help, unsigned long long v) {
    family(b, name, "counter", help);
    put(b, "%s %llu\n", name, v);
}

static void gauge(buf *b, const char *name, const char *help, double v) {
    family(b, name, "gauge", help);
    put(b, "%s %.17g\n", name, v);
}

/* One histogram's samples; labels is "" or `stage="model",` (with its trailing comma). */
static void histogram_samples(buf *b, const char *name, const char *labels, histogram *h) {
    unsigned long long cum = 0;
    for (size_t i = 0; i <= NBOUNDS; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < NBOUNDS) put(b, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, bounds[i], cum);
        else put(b, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, cum);
    }
    size_t ll = strlen(labels);
    /* The same labels without the trailing comma, in braces, or nothing. */
    if (ll) put(b, "%s_sum{%.*s} %.9f\n%s_count{%.*s} %llu\n", name, (int)ll - 1, labels,
                (double)atomic_load(&h->sum_ns) / 1e9, name, (int)ll - 1, labels, cum);
    else put(b, "%s_sum %.9f\n%s_count %llu\n", name, (double)atomic_load(&h->sum_ns) / 1e9, name, cum);
}

/* A label value escaped as the text format asks: backslash, double quote and newline. */
static void put_label_value(buf *b, const char *v) {
    for (const char *c = v ? v : ""; *c; c++) {
        if (*c == '\\') put(b, "\\\\");
        else if (*c == '"') put(b, "\\\"");
        else if (*c == '\n') put(b, "\\n");
        else put(b, "%c", *c);
    }
}

char *metrics_render(const metrics_gauges *g, size_t *len) {
    buf b = {.cap = 16384};
    b.p = malloc(b.cap);
    if (!b.p) return NULL;
    b.p[0] = 0;

    family(&b, "da3_model_info", "gauge", "The model the workers serve; trained=\"false\" for random (demo) weights.");
    put(&b, "da3_model_info{model=\"");
    put_label_value(&b, g->model_name);
    put(&b, "\",trained=\"%s\"} 1\n", g->model_trained ? "true" : "false");
    gauge(&b, "da3_uptime_seconds", "Seconds since the front started.", g->uptime_s);

    gauge(&b, "da3_sessions", "Live sessions.", g->sessions);
    gauge(&b, "da3_sessions_max", "Most live sessions (--max-sessions).", g->sessions_max);
    counter(&b, "da3_sessions_created_total", "Sessions created since start.", atomic_load(&m.sessions_created));

    gauge(&b, "da3_connections_open", "Open client TCP connections (HTTP and WebSocket).", g->connections);
    gauge(&b, "da3_websocket_connections", "Open WebSocket connections.", g->websockets);
    counter(&b, "da3_websocket_connections_opened_total", "WebSocket upgrades accepted since start.",
            atomic_load(&m.websockets_opened));
    counter(&b, "da3_tls_handshakes_total", "TLS handshakes completed (--tls-cert).", atomic_load(&m.tls_handshakes));
    counter(&b, "da3_tls_handshake_failures_total",
            "TLS handshakes that failed or were abandoned (e.g. plain HTTP on the TLS port).",
            atomic_load(&m.tls_handshake_failures));
    counter(&b, "da3_tls_connections_refused_total",
            "TLS connections closed before their handshake: the address was over --client-http-rate.",
            atomic_load(&m.tls_refused));
    counter(&b, "da3_received_bytes_total", "Bytes read from client sockets.", atomic_load(&m.bytes_in));
    counter(&b, "da3_sent_bytes_total", "Bytes written to client sockets.", atomic_load(&m.bytes_out));
    gauge(&b, "da3_inbound_bytes", "Bytes incoming WebSocket messages hold now (against --max-inbound-mb).",
          (double)g->inbound_bytes);
    gauge(&b, "da3_inbound_limit_bytes", "Budget for incoming WebSocket messages (--max-inbound-mb).",
          (double)g->inbound_budget);
    gauge(&b, "da3_connection_send_queue_limit_bytes",
          "Outgoing queue cap per connection (2 x --max-message-mb).", (double)g->outgoing_queue_limit);

    family(&b, "da3_job_queue_depth", "gauge", "Jobs in the shared job table by state.");
    put(&b, "da3_job_queue_depth{state=\"queued\"} %d\nda3_job_queue_depth{state=\"running\"} %d\n",
        g->jobs_queued, g->jobs_running);
    gauge(&b, "da3_job_queue_capacity", "Slots in the job table; a generate past them is refused (server busy).",
          g->jobs_capacity);
    counter(&b, "da3_jobs_submitted_total", "Jobs queued since start.", atomic_load(&m.jobs_submitted));
    counter(&b, "da3_jobs_rejected_total", "Generates refused because the job queue was full.",
            atomic_load(&m.jobs_rejected));
    family(&b, "da3_jobs_total", "counter", "Jobs finished since start, by outcome.");
    for (int o = 0; o < METRICS_JOB_OUTCOMES; o++)
        put(&b, "da3_jobs_total{outcome=\"%s\"} %llu\n", outcome_names[o], atomic_load(&m.jobs[o]));

    family(&b, "da3_job_queue_wait_seconds", "histogram", "Time from a job's submission to its claim by a worker.");
    histogram_samples(&b, "da3_job_queue_wait_seconds", "", &m.queue_wait);
    family(&b, "da3_job_stage_duration_seconds", "histogram",
           "Duration of each stage of completed jobs (worker: decode, model, fusion, glb; front: encode, send).");
    for (int s = 0; s < METRICS_STAGE_COUNT; s++) {
        char labels[32];
        snprintf(labels, sizeof labels, "stage=\"%s\",", stage_names[s]);
        histogram_samples(&b, "da3_job_stage_duration_seconds", labels, &m.stage[s]);
    }

    gauge(&b, "da3_workers_configured", "Worker processes configured (--workers).", g->workers_configured);
    family(&b, "da3_workers", "gauge", "Worker processes by state.");
    put(&b, "da3_workers{state=\"starting\"} %d\nda3_workers{state=\"ready\"} %d\nda3_workers{state=\"dead\"} %d\n",
        g->workers_starting, g->workers_ready, g->workers_dead);
    counter(&b, "da3_worker_restarts_total", "Worker processes started again after one exited.",
            atomic_load(&m.worker_restarts));

    gauge(&b, "da3_arena_used_bytes", "Shared-memory arena bytes holding results.", (double)g->arena_used);
    gauge(&b, "da3_arena_size_bytes", "Shared-memory arena size (--arena-mb).", (double)g->arena_size);

    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
