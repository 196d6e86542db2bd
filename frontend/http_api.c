#include "frontend/http_api.h"

#include <civetweb.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_bounded.h"
#include "frontend/api_keys.h"
#include "frontend/cors.h"
#include "common/util.h"
#include "frontend/jobs.h"
#include "frontend/conn.h"
#include "frontend/metrics.h"
#include "frontend/net_loop.h"
#include "frontend/server.h"
#include "frontend/session.h"
#include "frontend/supervisor.h"
#include "frontend/session_close.h"

#define SERVER_VERSION "0.1.0"

static const char *reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* The CORS headers for this request's Origin under --cors-origins (frontend/cors.h). */
static const char *cors_for(struct mg_connection *conn, char *buf, size_t cap) {
    const char *origin = mg_get_header(conn, "Origin"), *host = mg_get_header(conn, "Host");
    return cors_headers(buf, cap, origin, origin ? strlen(origin) : 0, host, host ? strlen(host) : 0);
}

/* Sends `body` (consumed) as a JSON response with extra header lines (each ending in CRLF, or
 * ""), with the CORS headers of the request's origin. A HEAD request gets the headers only, with
 * the Content-Length the body would have (RFC 9110 9.3.2). */
static int send_json_with(struct mg_connection *conn, int status, json_t *body, const char *extra_headers) {
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(body);
    size_t len = text ? strlen(text) : 0;
    char cors[300];
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
              "%sCache-Control: no-store\r\n%s\r\n",
              status, reason_phrase(status), len, cors_for(conn, cors, sizeof cors), extra_headers);
    if (text && strcmp(mg_get_request_info(conn)->request_method, "HEAD")) mg_write(conn, text, len);
    free(text);
    return status;
}

static int send_json(struct mg_connection *conn, int status, json_t *body) {
    return send_json_with(conn, status, body, "");
}

/* 405 with the Allow header listing what the resource answers. */
static int send_not_allowed(struct mg_connection *conn, const char *allow) {
    char header[128];
    snprintf(header, sizeof header, "Allow: %s\r\n", allow);
    return send_json_with(conn, 405, json_pack("{s:s}", "detail", "Method Not Allowed"), header);
}

/* 1 if method is one of the comma-separated names in allow ("GET, HEAD, OPTIONS"). */
static int method_in(const char *method, const char *allow) {
    size_t n = strlen(method);
    for (const char *p = allow; (p = strstr(p, method)); p += n)
        if ((p == allow || p[-1] == ' ') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

static int send_detail(struct mg_connection *conn, int status, const char *detail) {
    return send_json(conn, status, json_pack("{s:s}", "detail", detail));
}

/* A CORS preflight. Authorization is named: the "*" wildcard does not cover it. */
static int send_preflight(struct mg_connection *conn) {
    char cors[300];
    mg_printf(conn,
              "HTTP/1.1 204 No Content\r\n%s"
              "Access-Control-Allow-Methods: GET, HEAD, POST, DELETE, OPTIONS\r\n"
              "Access-Control-Allow-Headers: Authorization, Content-Type\r\nAccess-Control-Max-Age: 600\r\n"
              "Content-Length: 0\r\n\r\n",
              cors_for(conn, cors, sizeof cors));
    return 204;
}

/* The caller the connection loop checked the key of (http_api.h). Returns 0, or sends 403 and
 * returns its status when the request did not come through the loop (someone on this host
 * talking to CivetWeb's loopback port directly would otherwise pick any identity). */
static int caller(struct mg_connection *conn, api_identity *who) {
    memset(who, 0, sizeof *who);
    const char *secret = mg_get_header(conn, HTTP_API_FRONT_HEADER);
    if (!secret || strcmp(secret, g_server.front_secret))
        return send_detail(conn, 403, "requests must come through the server's port");
    const char *name = mg_get_header(conn, HTTP_API_IDENTITY_HEADER), *role = mg_get_header(conn, HTTP_API_ROLE_HEADER);
    snprintf(who->name, sizeof who->name, "%s", name ? name : "");
    who->role = role && !strcmp(role, "admin") ? API_ROLE_ADMIN : API_ROLE_USER;
    return 0;
}

/* /status and /metrics with --private-status and keys: admins only. Returns 0 or the status sent. */
static int private_status_refused(struct mg_connection *conn, const api_identity *who) {
    if (!g_server.opt.private_status || !api_keys_enabled() || who->role == API_ROLE_ADMIN) return 0;
    return send_detail(conn, 403, "this endpoint needs an admin key (--private-status)");
}

/* Reads the request body (up to HTTP_API_MAX_BODY); returns malloc'd NUL-terminated text or NULL. */
static char *read_body(struct mg_connection *conn, size_t *len, int *too_big) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    *too_big = 0;
    while (buf) {
        if (n == cap) {
            if (cap >= HTTP_API_MAX_BODY) {
                *too_big = 1;
                free(buf);
                return NULL;
            }
            cap *= 2;
            char *grown = realloc(buf, cap + 1);
            if (!grown) {
                free(buf);
                return NULL;
            }
            buf = grown;
        }
        int r = mg_read(conn, buf + n, cap - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

static int handle_create(struct mg_connection *conn, const api_identity *who) {
    const struct mg_request_info *ri = mg_get_request_info(conn);
    session_config cfg;
    session_config_default_client(&cfg, g_server.opt.max_images, 0);
    char err[256], value[256];
    /* Query string first (how the reference's clients send them), then a JSON body if any. */
    const char *qs = ri->query_string ? ri->query_string : "";
    for (size_t i = 0; i < session_config_name_count; i++) {
        int got = mg_get_var(qs, strlen(qs), session_config_names[i], value, sizeof value);
        if (got >= 0 && session_config_set(&cfg, session_config_names[i], value, NULL, g_server.opt.max_images, err, sizeof err))
            return send_detail(conn, 422, err);
    }
    size_t blen = 0;
    int too_big = 0;
    char *body = read_body(conn, &blen, &too_big);
    if (too_big) return send_detail(conn, 413, "Request body too large (limit 1 MB)");
    if (body && blen > 0) {
        json_error_t jerr;
        /* Bounded: this thread's stack is small and Jansson recurses per nesting level. */
        json_t *o = json_loadb_bounded(body, blen, JSON_MAX_DEPTH_CLIENT, &jerr);
        if (!json_is_object(o)) {
            json_decref(o);
            free(body);
            snprintf(err, sizeof err, "Request body must be a JSON object of session parameters: %s", jerr.text);
            return send_detail(conn, 422, err);
        }
        for (size_t i = 0; i < session_config_name_count; i++) {
            json_t *v = json_object_get(o, session_config_names[i]);
            if (v && !json_is_null(v) &&
                session_config_set(&cfg, session_config_names[i], NULL, v, g_server.opt.max_images, err, sizeof err)) {
                json_decref(o);
                free(body);
                return send_detail(conn, 422, err);
            }
        }
        json_decref(o);
    }
    free(body);
    if (session_config_finish(&cfg, err, sizeof err)) return send_detail(conn, 422, err);
    int status = 500;
    const char *client = mg_get_header(conn, HTTP_API_CLIENT_HEADER);
    session *s = sessions_create(&cfg, who->name, client ? client : "", &status, err, sizeof err);
    if (!s) return send_detail(conn, status, err);
    json_t *out = json_pack("{s:b,s:s,s:f,s:i,s:o}", "success", 1, "session_id", s->id, "created_at",
                            s->created_at, "max_images", s->cfg.max_images, "config",
                            session_config_json(&s->cfg));
    sessions_put(s);
    return send_json(conn, 200, out);
}

int http_api_delete_session(const char *id, const char *reason) { return session_close(id, reason); }

/* /ws/session/create and /ws/session/{id}. */
static int session_handler(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *uri = ri->local_uri, *m = ri->request_method;
    const char *rest = uri + strlen("/ws/session");
    if (*rest == '/') rest++;
    const char *allow = !strcmp(rest, "create") ? "POST, OPTIONS" : "GET, HEAD, DELETE, OPTIONS";
    if (!method_in(m, allow)) return send_not_allowed(conn, allow);
    if (!strcmp(m, "OPTIONS")) return send_preflight(conn);
    api_identity who;
    int refused = caller(conn, &who);
    if (refused) return refused;
    if (!strcmp(rest, "create")) return handle_create(conn, &who);
    /* Another key's session is "not found", never "forbidden": that would confirm it exists. */
    session *s = sessions_get(rest);
    int mine = s && api_identity_owns(&who, s->owner);
    sessions_put(s);
    if (!mine) return send_detail(conn, 404, "Session not found");
    if (!strcmp(m, "GET") || !strcmp(m, "HEAD")) {
        s = sessions_get(rest);
        if (!s) return send_detail(conn, 404, "Session not found");
        pthread_mutex_lock(&s->lock);
        session_touch(s); /* like the reference, a lookup counts as activity */
        json_t *info = session_info_json(s);
        pthread_mutex_unlock(&s->lock);
        sessions_put(s);
        return send_json(conn, 200, info);
    }
    if (!strcmp(m, "DELETE")) {
        char id[64];
        snprintf(id, sizeof id, "%s", rest);
        if (http_api_delete_session(id, "Session deleted")) return send_detail(conn, 404, "Session not found");
        char msg[128];
        snprintf(msg, sizeof msg, "Session %s deleted", id);
        return send_json(conn, 200, json_pack("{s:b,s:s}", "success", 1, "message", msg));
    }
    return send_not_allowed(conn, allow);
}

static int sessions_handler(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (!method_in(ri->request_method, "GET, HEAD, OPTIONS")) return send_not_allowed(conn, "GET, HEAD, OPTIONS");
    if (!strcmp(ri->request_method, "OPTIONS")) return send_preflight(conn);
    api_identity who;
    int refused = caller(conn, &who);
    if (refused) return refused;
    /* Each key sees its own sessions; an admin (or everyone, without keys) sees all. */
    int all = !api_keys_enabled() || who.role == API_ROLE_ADMIN;
    return send_json(conn, 200, sessions_list_json(g_server.opt.session_timeout, all ? NULL : who.name));
}

static int probe_method_done(struct mg_connection *conn);

/* /status and /metrics: GET/HEAD/OPTIONS, through the loop, and admins only with
 * --private-status. Returns the status already sent, or 0 to answer. */
static int server_view_refused(struct mg_connection *conn) {
    int sent = probe_method_done(conn);
    if (sent) return sent;
    api_identity who;
    int refused = caller(conn, &who);
    return refused ? refused : private_status_refused(conn, &who);
}

static int status_handler(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    int refused = server_view_refused(conn);
    if (refused) return refused;
    json_t *workers = json_array();
    int ready = 0;
    const char *model_name = NULL;
    int trained = strcmp(g_server.opt.model, "demo") != 0;
    char name_buf[160] = "";
    /* A copy taken under the segment lock, on the heap: 64 slots are ~37 KB. */
    shmq_worker *wtab = calloc(SHMQ_MAX_WORKERS, sizeof *wtab);
    int nw = wtab ? shmq_worker_snapshot(g_server.q, wtab, g_server.opt.workers) : 0;
    for (int i = 0; i < nw; i++) {
        const shmq_worker *w = &wtab[i];
        if (w->state == WORKER_READY) {
            ready++;
            if (!model_name) {
                snprintf(name_buf, sizeof name_buf, "%s", w->model_name);
                model_name = name_buf;
                trained = w->model_trained;
            }
        }
        json_t *wj = json_pack("{s:i,s:i,s:s,s:s,s:I,s:I}", "index", i, "pid", w->pid, "state",
                               shmq_worker_state_name(w->state), "device", w->device, "jobs_done",
                               (json_int_t)w->jobs_done, "jobs_failed", (json_int_t)w->jobs_failed);
        if (w->blas[0]) json_object_set_new(wj, "blas", json_string(w->blas));
        if (w->error[0]) json_object_set_new(wj, "error", json_string(w->error));
        json_array_append_new(workers, wj);
    }
    free(wtab);
    int queued, running;
    shmq_counts(g_server.q, &queued, &running);
    size_t arena_used, arena_total;
    shmq_arena_usage(g_server.q, &arena_used, &arena_total);
    json_t *model = json_pack("{s:s,s:s,s:b}", "name", model_name ? model_name : g_server.opt.model,
                              "path", g_server.opt.model, "trained", trained);
    if (!trained)
        json_object_set_new(model, "warning",
                            json_string(PROTOCOL_UNTRAINED_WARNING));
    json_t *out = json_pack(
        "{s:s,s:s,s:f,s:o,s:{s:i,s:i,s:i,s:o},s:{s:i,s:i,s:i},s:{s:i,s:i},s:{s:I,s:I}}", "status",
        ready > 0 ? "ok" : "degraded", "version", SERVER_VERSION, "uptime_s",
        now_mono() - g_server.started_mono, "model", model, "workers", "configured",
        g_server.opt.workers, "alive", supervisor_alive(), "ready", ready, "list", workers, "queue",
        "queued", queued, "running", running, "capacity", SHMQ_MAX_JOBS, "sessions", "total",
        sessions_count(), "max", g_server.opt.max_sessions, "arena", "used_bytes",
        (json_int_t)arena_used, "total_bytes", (json_int_t)arena_total);
    return send_json(conn, 200, out);
}

/* Workers by state and the model they serve (the first ready one's, else the options'), from a
 * snapshot of the worker table. */
typedef struct {
    int configured, starting, ready, dead;
    char model[160];
    int trained;
    char not_ready[256]; /* the first worker that is not ready, and why */
} worker_summary;

static void summarize_workers(worker_summary *ws) {
    memset(ws, 0, sizeof *ws);
    ws->configured = g_server.opt.workers;
    snprintf(ws->model, sizeof ws->model, "%s", g_server.opt.model);
    ws->trained = strcmp(g_server.opt.model, "demo") != 0;
    shmq_worker *wtab = calloc(SHMQ_MAX_WORKERS, sizeof *wtab);
    int nw = wtab ? shmq_worker_snapshot(g_server.q, wtab, g_server.opt.workers) : 0;
    int named = 0;
    for (int i = 0; i < nw; i++) {
        const shmq_worker *w = &wtab[i];
        ws->ready += w->state == WORKER_READY;
        ws->starting += w->state == WORKER_STARTING;
        ws->dead += w->state == WORKER_DEAD;
        if (w->state == WORKER_READY && !named++) {
            snprintf(ws->model, sizeof ws->model, "%s", w->model_name);
            ws->trained = w->model_trained;
        }
        if (w->state != WORKER_READY && !ws->not_ready[0])
            snprintf(ws->not_ready, sizeof ws->not_ready, "worker %d is %s%s%.200s", i,
                     shmq_worker_state_name(w->state), w->error[0] ? ": " : "", w->error);
    }
    free(wtab);
}

/* GET /metrics: Prometheus text format 0.0.4 (frontend/metrics.c). */
static int metrics_handler(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    int refused = server_view_refused(conn);
    if (refused) return refused;
    const char *method = mg_get_request_info(conn)->request_method;
    worker_summary ws;
    summarize_workers(&ws);
    metrics_gauges g = {.sessions = sessions_count(), .sessions_max = g_server.opt.max_sessions,
                        .jobs_capacity = SHMQ_MAX_JOBS, .workers_configured = ws.configured,
                        .workers_starting = ws.starting, .workers_ready = ws.ready, .workers_dead = ws.dead,
                        .inbound_bytes = conn_inbound_bytes(),
                        .inbound_budget = (size_t)g_server.opt.max_inbound_mb << 20,
                        .outgoing_queue_limit = (size_t)2 * ((size_t)g_server.opt.max_message_mb << 20),
                        .model_name = ws.model, .model_trained = ws.trained,
                        .uptime_s = now_mono() - g_server.started_mono};
    net_loop_counts(&g.connections, &g.websockets);
    shmq_counts(g_server.q, &g.jobs_queued, &g.jobs_running);
    shmq_arena_usage(g_server.q, &g.arena_used, &g.arena_size);
    size_t len = 0;
    char *text = metrics_render(&g, &len);
    if (!text) return send_detail(conn, 500, "out of memory");
    char cors[300];
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
              "Content-Length: %zu\r\n%sCache-Control: no-store\r\n\r\n",
              len, cors_for(conn, cors, sizeof cors));
    if (strcmp(method, "HEAD")) mg_write(conn, text, len);
    free(text);
    return 200;
}

/* GET, HEAD and OPTIONS only: the status sent when the handler is done (405, or 204 for the
 * preflight), else 0. */
static int probe_method_done(struct mg_connection *conn) {
    const char *method = mg_get_request_info(conn)->request_method;
    if (!method_in(method, "GET, HEAD, OPTIONS")) return send_not_allowed(conn, "GET, HEAD, OPTIONS");
    if (!strcmp(method, "OPTIONS")) return send_preflight(conn);
    return 0;
}

/* Liveness: 200 while the front runs (it answers at all), 503 once it is shutting down. */
static int healthz_handler(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    int sent = probe_method_done(conn);
    if (sent) return sent;
    if (g_server.stopping) return send_json(conn, 503, json_pack("{s:s,s:s}", "status", "stopping", "detail", "server shutting down"));
    return send_json(conn, 200, json_pack("{s:s}", "status", "ok"));
}

/* Readiness: 200 only while every configured worker has its model loaded; 503 with why otherwise. */
static int readyz_handler(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    int sent = probe_method_done(conn);
    if (sent) return sent;
    worker_summary ws;
    summarize_workers(&ws);
    json_t *workers = json_pack("{s:i,s:i,s:i,s:i}", "configured", ws.configured, "ready", ws.ready, "starting",
                                ws.starting, "dead", ws.dead);
    if (!g_server.stopping && ws.configured > 0 && ws.ready >= ws.configured)
        return send_json(conn, 200, json_pack("{s:s,s:o}", "status", "ready", "workers", workers));
    char detail[400];
    if (g_server.stopping) snprintf(detail, sizeof detail, "server shutting down");
    else snprintf(detail, sizeof detail, "not ready: %d of %d workers have loaded the model (%s)", ws.ready,
                  ws.configured, ws.not_ready[0] ? ws.not_ready : "no worker started yet");
    return send_json_with(conn, 503, json_pack("{s:s,s:s,s:o}", "status", "not ready", "detail", detail, "workers", workers),
                          "Retry-After: 1\r\n");
}

void http_api_register(struct mg_context *ctx) {
    mg_set_request_handler(ctx, "/metrics$", metrics_handler, NULL);
    mg_set_request_handler(ctx, "/healthz$", healthz_handler, NULL);
    mg_set_request_handler(ctx, "/readyz$", readyz_handler, NULL);
    mg_set_request_handler(ctx, "/ws/session", session_handler, NULL);
    mg_set_request_handler(ctx, "/ws/sessions", sessions_handler, NULL);
    mg_set_request_handler(ctx, "/status", status_handler, NULL);
}
