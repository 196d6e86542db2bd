/* The idle scenario over CivetWeb's WebSocket client (`da3-load idle --client civetweb`).
 *
 * Kept to measure the choice in wsc.h: CivetWeb connects synchronously and then runs one reader
 * thread per client connection, so N sockets cost N threads (and their stacks) in the load
 * generator. `da3-load itself: threads` in the output shows it next to the raw client's 1. */
#include <civetweb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/load/load.h"
#include "tests/load/stats.h"
#include "tests/load/wsc.h"

typedef struct {
    struct mg_connection *conn;
    pthread_mutex_t mu; /* the reader thread records, the main thread pings */
    pthread_cond_t cv;
    int connected, ping_out, closed;
    double t0;
} cconn;

/* CivetWeb's data callback (reader thread): records 'connected' and pongs; 1 keeps the socket. */
static int on_data(struct mg_connection *conn, int flags, char *data, size_t len, void *ud) {
    (void)conn;
    cconn *c = ud;
    if ((flags & 0xF) != MG_WEBSOCKET_OPCODE_TEXT) return (flags & 0xF) == MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE ? 0 : 1;
    char type[32];
    load_msg_type(data, len, type);
    double t = now_mono();
    pthread_mutex_lock(&c->mu);
    if (!c->connected && strcmp(type, "connected") == 0) {
        c->connected = 1;
        stats_ok(K_CONNECT, c->t0, t, len);
        pthread_cond_signal(&c->cv);
    } else if (c->ping_out && strcmp(type, "pong") == 0) {
        c->ping_out = 0;
        stats_ok(K_PING, c->t0, t, len + 21);
    } else {
        stats_err(K_PING, c->t0, t, "unexpected message: %.200s", data);
    }
    pthread_mutex_unlock(&c->mu);
    return 1;
}

/* CivetWeb's close callback (reader thread). */
static void on_close(const struct mg_connection *conn, void *ud) {
    (void)conn;
    cconn *c = ud;
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Sleeps until monotonic time t. */
static void sleep_until(double t) {
    double d = t - now_mono();
    if (d <= 0) return;
    struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

void idle_civetweb(const load_opts *o, const char *ids, long n) {
    mg_init_library(0);
    cconn *cs = calloc((size_t)n, sizeof *cs);
    double t_start = now_mono();
    long open = 0;
    for (long i = 0; i < n; i++) {
        cconn *c = &cs[i];
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
        char path[128], err[256] = "";
        snprintf(path, sizeof path, "/ws/reconstruct/%s", ids + i * 64);
        c->t0 = now_mono();
        c->conn = mg_connect_websocket_client(o->host, o->port, 0, err, sizeof err, path, NULL, on_data, on_close, c);
        if (!c->conn) {
            stats_err(K_CONNECT, c->t0, now_mono(), "mg_connect_websocket_client: %s", err);
            continue;
        }
        /* Wait for "connected" before the next one, as the raw client's connect figure does. */
        pthread_mutex_lock(&c->mu);
        double until = now_mono() + o->timeout;
        while (!c->connected && !c->closed && now_mono() < until) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
            pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        }
        int ok = c->connected;
        pthread_mutex_unlock(&c->mu);
        if (ok) open++;
        else stats_err(K_CONNECT, c->t0, now_mono(), "no 'connected' message");
    }
    double t_hold = now_mono();
    printf("idle: %ld of %ld sockets open in %.2f s (CivetWeb client); holding for %.1f s\n", open, n, t_hold - t_start,
           o->duration);
    fflush(stdout);
    /* Pings spread evenly over each interval, one socket after the other. */
    const char *ping = "{\"type\":\"ping\"}";
    for (long round = 0; t_hold + (double)round * o->interval < t_hold + o->duration; round++) {
        for (long i = 0; i < n; i++) {
            cconn *c = &cs[i];
            sleep_until(t_hold + ((double)round + (double)i / (double)n) * o->interval);
            if (!c->conn || c->closed) continue;
            pthread_mutex_lock(&c->mu);
            if (c->ping_out && now_mono() - c->t0 > o->timeout) {
                c->ping_out = 0;
                stats_err(K_PING, c->t0, now_mono(), "no pong in time");
            }
            int send = !c->ping_out;
            if (send) {
                c->ping_out = 1;
                c->t0 = now_mono();
            }
            pthread_mutex_unlock(&c->mu);
            if (send && mg_websocket_client_write(c->conn, MG_WEBSOCKET_OPCODE_TEXT, ping, strlen(ping)) <= 0)
                stats_err(K_PING, c->t0, now_mono(), "mg_websocket_client_write failed");
        }
    }
    double drain = now_mono() + 2;
    for (long i = 0; i < n; i++) {
        while (now_mono() < drain) {
            pthread_mutex_lock(&cs[i].mu);
            int out = cs[i].ping_out;
            pthread_mutex_unlock(&cs[i].mu);
            if (!out) break;
            sleep_until(now_mono() + 0.005);
        }
    }
    load_snapshot_held(o);
    for (long i = 0; i < n; i++) {
        cconn *c = &cs[i];
        if (!c->conn) continue;
        pthread_mutex_lock(&c->mu);
        if (c->ping_out) stats_err(K_PING, c->t0, now_mono(), "no pong before the close");
        pthread_mutex_unlock(&c->mu);
        double t0 = now_mono();
        mg_close_connection(c->conn); /* sends close, joins the reader thread */
        stats_ok(K_CLOSE, t0, now_mono(), 0);
    }
    for (long i = 0; i < n; i++) {
        pthread_mutex_destroy(&cs[i].mu);
        pthread_cond_destroy(&cs[i].cv);
    }
    free(cs);
    mg_exit_library();
}
