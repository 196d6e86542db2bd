/* da3-server: the front process. Owns the HTTP/WebSocket connections (CivetWeb), the sessions
 * and their files, the expiry timer, and the prefork inference workers it feeds through a
 * shared-memory job queue. */
#include <civetweb.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "frontend/http_api.h"
#include "frontend/jobs.h"
#include "frontend/server.h"
#include "frontend/session.h"
#include "frontend/supervisor.h"
#include "frontend/ws.h"

server_state g_server;

static pthread_mutex_t sweep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sweep_cond = PTHREAD_COND_INITIALIZER;

/* Removes sessions idle for longer than --session-timeout, every --cleanup-interval. */
static void *cleanup_loop(void *arg) {
    (void)arg;
    pthread_mutex_lock(&sweep_lock);
    while (!g_server.stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double interval = g_server.opt.cleanup_interval;
        ts.tv_sec += (time_t)interval;
        ts.tv_nsec += (long)((interval - (long)interval) * 1e9);
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&sweep_cond, &sweep_lock, &ts);
        if (g_server.stopping) break;
        pthread_mutex_unlock(&sweep_lock);
        /* In batches, so a sweep removes every expired session however many there are. */
        session *expired[256];
        int n;
        do {
            n = sessions_expired(now_wall(), g_server.opt.session_timeout, expired, 256);
            for (int i = 0; i < n; i++) {
                char id[37];
                snprintf(id, sizeof id, "%s", expired[i]->id);
                sessions_put(expired[i]);
                if (http_api_delete_session(id, "Session expired after inactivity") == 0)
                    log_info("session %s expired (idle > %.0f s) and was removed", id, g_server.opt.session_timeout);
            }
        } while (n == 256 && !g_server.stopping);
        pthread_mutex_lock(&sweep_lock);
    }
    pthread_mutex_unlock(&sweep_lock);
    return NULL;
}

static int log_civetweb(const struct mg_connection *conn, const char *message) {
    (void)conn;
    log_warn("civetweb: %s", message);
    return 1;
}

int main(int argc, char **argv) {
    options_default(&g_server.opt);
    int prc = options_parse(&g_server.opt, argc, argv);
    if (prc) return prc > 0 ? 0 : 2;
    server_options *o = &g_server.opt;
    log_init("front", log_level_parse(o->log_level));
    g_server.started_mono = now_mono();

    /* Signals: handled synchronously by the main thread; every other thread inherits the mask. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    int loaded = sessions_init(o->data_dir, o->max_sessions, o->max_images, o->fsync_writes);
    if (loaded < 0) {
        log_error("cannot use --data-dir %s: %s", o->data_dir, strerror(errno));
        return 1;
    }
    if (loaded) log_info("reloaded %d session(s) from %s", loaded, o->data_dir);

    char err[512];
    if (o->port) snprintf(g_server.shm_name, sizeof g_server.shm_name, "/da3-server-%d", o->port);
    else snprintf(g_server.shm_name, sizeof g_server.shm_name, "/da3-server-pid%d", (int)getpid());
    g_server.q = shmq_create(g_server.shm_name, (size_t)o->arena_mb << 20, err, sizeof err);
    if (!g_server.q) {
        log_error("shared memory: %s", err);
        return 1;
    }
    /* Prefork: workers start before any connection thread exists. */
    if (supervisor_start() || jobs_start_dispatcher()) {
        shmq_close(g_server.q, 1);
        return 1;
    }

    char ports[128], threads[16];
    snprintf(ports, sizeof ports, "%s:%d", o->host, o->port);
    snprintf(threads, sizeof threads, "%d", o->threads);
    struct stat st;
    int have_web = stat(o->web_dir, &st) == 0 && S_ISDIR(st.st_mode);
    const char *mg_opts[] = {"listening_ports", ports,
                             "num_threads", threads,
                             "enable_websocket_ping_pong", "yes",
                             "websocket_timeout_ms", "30000",
                             "request_timeout_ms", "60000",
                             "tcp_nodelay", "1",
                             "enable_keep_alive", "yes",
                             "document_root", have_web ? o->web_dir : NULL,
                             NULL};
    if (!have_web) log_warn("--web-dir %s is not a directory: no web page is served", o->web_dir);
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = log_civetweb;
    mg_init_library(MG_FEATURES_WEBSOCKET);
    g_server.ctx = mg_start(&cb, NULL, mg_opts);
    if (!g_server.ctx) {
        log_error("cannot listen on %s (port in use or bad --host?)", ports);
        g_server.stopping = 1;
        supervisor_stop();
        jobs_stop_dispatcher();
        shmq_close(g_server.q, 1);
        return 1;
    }
    http_api_register(g_server.ctx);
    ws_register(g_server.ctx);
    struct mg_server_port sp[4];
    int np = mg_get_server_ports(g_server.ctx, 4, sp);
    int port = np > 0 ? sp[0].port : o->port;
    pthread_t cleaner;
    pthread_create(&cleaner, NULL, cleanup_loop, NULL);
    log_info("da3-server listening on http://%s:%d/ (web page), %d worker(s), model %s on %s%s",
             o->host, port, o->workers, o->model, o->device,
             strcmp(o->model, "demo") ? "" : " [demo: UNTRAINED random weights]");

    int sig = 0;
    sigwait(&sigs, &sig);
    log_info("signal %d: shutting down", sig);
    g_server.stopping = 1;
    pthread_mutex_lock(&sweep_lock);
    pthread_cond_signal(&sweep_cond);
    pthread_mutex_unlock(&sweep_lock);
    pthread_join(cleaner, NULL);
    mg_stop(g_server.ctx);
    jobs_stop_dispatcher();
    supervisor_stop();
    shmq_close(g_server.q, 1);
    mg_exit_library();
    log_info("stopped");
    return 0;
}
