/* da3-server: the front process. Owns the HTTP/WebSocket connections (CivetWeb), the sessions
 * and their files, the expiry timer, and the prefork inference workers it feeds through a
 * shared-memory job queue. */
#include <civetweb.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "frontend/api_keys.h"
#include "frontend/client_limits.h"
#include "frontend/conn.h"
#include "frontend/cors.h"
#include "frontend/handler_pool.h"
#include "frontend/http_api.h"
#include "frontend/jobs.h"
#include "frontend/net_loop.h"
#include "frontend/server.h"
#include "frontend/session_close.h"
#include "frontend/session.h"
#include "frontend/supervisor.h"
#include "frontend/tls.h"
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
                /* Re-checked under the session's lock: it may have woken up since the snapshot. */
                if (session_close_idle(id, "Session expired after inactivity", now_wall(), g_server.opt.session_timeout) == 0)
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

/* Every connection is a file descriptor (two while an HTTP request is forwarded to CivetWeb):
 * lift the soft limit to the hard one, and size the connection table to what it allows. */
static int connection_capacity(const server_options *o) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    /* WebSockets + HTTP connections (some waiting for a CivetWeb thread) + heads being read. */
    long want = (long)o->max_websockets + 4L * o->threads + 1024;
    long fit = (long)rl.rlim_cur - 2L * o->threads - 256; /* backend sockets, files, shm, pipes */
    if (fit < 64) fit = 64;
    if (want > fit) {
        log_warn("open-files limit %ld allows %ld connections, fewer than the %ld configured "
                 "(raise `ulimit -n`)", (long)rl.rlim_cur, fit, want);
        want = fit;
    }
    return (int)want;
}

int main(int argc, char **argv) {
    /* Large buffers (result messages of 0.3-70 MB, uploads being received) straight from mmap and
     * back to the OS when freed. glibc's default threshold rises after the first large free, and
     * then keeps every later one in whichever thread's arena freed it: make soak saw the front
     * grow from 12 to 40 MB within a minute and stay there. The price, an mmap/munmap pair per
     * buffer over 128 KB, is small beside encoding or decoding it. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
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
    sigaddset(&sigs, SIGHUP); /* reloads --api-keys and --tls-cert/--tls-key */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    char err[512];
    if (o->api_keys) {
        int nkeys = api_keys_load(o->api_keys, err, sizeof err);
        if (nkeys < 0) {
            log_error("--api-keys: %s", err);
            return 2;
        }
        log_info("API keys: %d loaded from %s; every API request and WebSocket needs one", nkeys, o->api_keys);
    }
    if (o->tls_cert) {
        if (tls_init(o->tls_cert, o->tls_key, err, sizeof err)) {
            log_error("%s", err);
            return 2;
        }
        log_info("TLS: https and wss with %s", o->tls_cert);
    }
    if (cors_configure(o->cors_origins, o->api_keys != NULL, err, sizeof err)) {
        log_error("%s", err);
        return 2;
    }
    /* A secret the loop adds to what it forwards: CivetWeb's loopback port is reachable by any
     * local process, which must not be able to claim an identity there. */
    unsigned char rnd[32];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        log_error("cannot read random bytes for the front's secret: %s", strerror(errno));
        return 1;
    }
    for (int i = 0; i < 32; i++) snprintf(g_server.front_secret + 2 * i, 3, "%02x", rnd[i]);

    /* The port first: a second server started by mistake fails here, before it touches the
     * running one's shared memory or workers. */
    int lfd = net_listen(o->host, o->port, err, sizeof err);
    if (lfd < 0) {
        log_error("%s (is another da3-server running on this port?)", err);
        return 1;
    }
    int port = net_bound_port(lfd);

    int loaded = sessions_init(o->data_dir, o->max_sessions, o->max_images, o->fsync_writes);
    if (loaded < 0) {
        log_error("cannot use --data-dir %s: %s", o->data_dir, strerror(errno));
        return 1;
    }
    if (loaded) log_info("reloaded %d session(s) from %s", loaded, o->data_dir);
    session_images_set_min_free((unsigned long long)o->min_free_mb << 20);
    session_images_set_max_session((unsigned long long)o->max_session_mb << 20);
    sessions_set_client_limit(o->max_sessions_per_client);

    snprintf(g_server.shm_name, sizeof g_server.shm_name, "/da3-server-%d", port);
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

    /* CivetWeb serves the plain HTTP endpoints and the page on a private loopback port; the
     * connection loop owns the public socket and forwards requests to it. */
    char threads[16];
    snprintf(threads, sizeof threads, "%d", o->threads);
    struct stat st;
    int have_web = stat(o->web_dir, &st) == 0 && S_ISDIR(st.st_mode);
    const char *mg_opts[] = {"listening_ports", "127.0.0.1:0",
                             "num_threads", threads,
                             "request_timeout_ms", "30000",
                             "tcp_nodelay", "1",
                             "enable_keep_alive", "no",
                             /* node_modules/ and vendor/ are under web/: no listings of them */
                             "enable_directory_listing", "no",
                             /* CivetWeb answers CORS preflights itself ("*") unless this is
                             * empty; ours follow --cors-origins (frontend/cors.h). */
                             "access_control_allow_origin", "",
                             "document_root", have_web ? o->web_dir : NULL,
                             NULL};
    if (!have_web) log_warn("--web-dir %s is not a directory: no web page is served", o->web_dir);
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = log_civetweb;
    mg_init_library(0);
    g_server.ctx = mg_start(&cb, NULL, mg_opts);
    struct mg_server_port sp[2];
    int backend_port = g_server.ctx && mg_get_server_ports(g_server.ctx, 2, sp) > 0 ? sp[0].port : -1;
    int max_conns = connection_capacity(o);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int handlers = o->handler_threads > 0 ? o->handler_threads : (int)(cores * 2 > 4 ? cores * 2 : 4);
    net_config nc = {
        .listen_fd = lfd,
        .backend_port = backend_port,
        .max_conns = max_conns,
        .max_websockets = o->max_websockets < max_conns ? o->max_websockets : max_conns,
        .max_relays = 4 * o->threads,
        .max_message = (size_t)o->max_message_mb << 20,
        .max_inbound = (size_t)o->max_inbound_mb << 20,
        .max_http_body = HTTP_API_MAX_BODY,
        .request_timeout = o->request_timeout,
        .idle_timeout = 30,
        .ping_interval = o->ws_ping_interval,
        .pong_timeout = o->ws_ping_interval,
        .close_timeout = 5,
        .send_timeout = o->send_timeout,
        .ws_prefix = "/ws/reconstruct",
        .front_secret = g_server.front_secret,
        .trust_proxy = o->trust_proxy,
        .tls = o->tls_cert != NULL,
    };
    /* A client's outgoing queue holds at most about two messages of the largest size. */
    size_t out_cap = (size_t)2 * nc.max_message;
    client_limits_config lim = {.max_websockets = o->max_ws_per_client, .msg_rate = o->client_msg_rate,
                                .byte_rate = o->client_byte_rate_mb * 1048576.0, .http_rate = o->client_http_rate};
    if (backend_port < 0 || client_limits_init(&lim, max_conns) || conn_table_init(max_conns, out_cap) ||
        handler_pool_start(handlers, 1u << 20, max_conns, &ws_handlers) || net_loop_start(&nc)) {
        log_error("cannot start the front (CivetWeb on loopback, connection table or loop)");
        g_server.stopping = 1;
        if (g_server.ctx) mg_stop(g_server.ctx);
        supervisor_stop();
        jobs_stop_dispatcher();
        shmq_close(g_server.q, 1);
        return 1;
    }
    http_api_register(g_server.ctx);
    pthread_t cleaner;
    pthread_create(&cleaner, NULL, cleanup_loop, NULL);
    log_info("da3-server listening on %s://%s:%d/ (web page), %d worker(s), model %s on %s%s; "
             "up to %d WebSockets, %d connections, %d message handlers",
             o->tls_cert ? "https" : "http", o->host, port, o->workers, o->model, o->device,
             strcmp(o->model, "demo") ? "" : " [demo: UNTRAINED random weights]",
             nc.max_websockets, max_conns, handlers);

    int sig = 0;
    for (;;) {
        sigwait(&sigs, &sig);
        if (sig != SIGHUP) break;
        if (o->tls_cert) {
            if (tls_reload(err, sizeof err)) log_error("SIGHUP: TLS certificate not reloaded, the previous one stays: %s", err);
            else log_info("SIGHUP: TLS certificate reloaded from %s (new connections use it)", o->tls_cert);
        }
        if (!o->api_keys) {
            log_info("SIGHUP: no --api-keys file to reload");
            continue;
        }
        int nkeys = api_keys_load(o->api_keys, err, sizeof err);
        if (nkeys < 0) log_error("SIGHUP: --api-keys %s not reloaded, the previous keys stay: %s", o->api_keys, err);
        else log_info("SIGHUP: %d API keys reloaded from %s", nkeys, o->api_keys);
    }
    log_info("signal %d: shutting down", sig);
    g_server.stopping = 1;
    pthread_mutex_lock(&sweep_lock);
    pthread_cond_signal(&sweep_cond);
    pthread_mutex_unlock(&sweep_lock);
    pthread_join(cleaner, NULL);
    net_loop_stop();
    handler_pool_stop();
    mg_stop(g_server.ctx);
    jobs_stop_dispatcher();
    supervisor_stop();
    conn_table_free();
    shmq_close(g_server.q, 1);
    mg_exit_library();
    log_info("stopped");
    return 0;
}
