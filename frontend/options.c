#include "frontend/options.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void options_default(server_options *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8000;
    o->workers = 1;
    o->device = "cpu";
    o->model = "demo";
    o->data_dir = "./data";
    o->web_dir = "./web";
    o->max_sessions = 100;
    o->session_timeout = 3600;
    o->cleanup_interval = 300;
    o->max_images = 100;
    o->max_message_mb = 64;
    o->max_inbound_mb = 1024;
    o->arena_mb = 1024;
    o->threads = 64;
    o->max_websockets = 4096;
    o->handler_threads = 0;
    o->request_timeout = 10;
    o->ws_ping_interval = 20;
    o->send_timeout = 30;
    o->worker_threads = 0;
    o->log_level = "info";
    o->precision = "fp32";
    o->min_free_mb = 256;
    o->max_session_mb = 2048;
    o->max_ws_per_client = 256;
    o->max_sessions_per_client = 64;
    o->client_msg_rate = 200;
    o->client_byte_rate_mb = 0;
    o->client_http_rate = 100;
}

static void print_help(void) {
    server_options d;
    options_default(&d);
    printf("usage: da3-server [options]\n"
           "Depth Anything 3 reconstruction server: HTTP + WebSocket front, prefork inference workers.\n\n"
           "  --host ADDR              listen address (default %s)\n"
           "  --port N                 listen port (default %d)\n"
           "  --workers N              inference worker processes (default %d)\n"
           "  --device LIST            cpu | cuda[:i][,cuda:j...], given to workers round-robin (default %s)\n"
           "  --model PATH|demo        model folder (config.json + model.safetensors) or the built-in\n"
           "                           untrained 'demo' network (default %s; demo-base/-large/-giant:\n"
           "                           those topologies, random weights too)\n"
           "  --data-dir DIR           where sessions and their images are stored (default %s)\n"
           "  --web-dir DIR            static files served at / (default %s)\n"
           "  --worker-bin PATH        da3-worker program (default: next to da3-server)\n"
           "  --max-sessions N         live sessions; creating one more is refused with 503 (default %d)\n"
           "  --session-timeout S      idle seconds before a session expires (default %.0f)\n"
           "  --cleanup-interval S     seconds between expiry sweeps (default %.0f)\n"
           "  --max-images N           most images per session, also the default max_images (default %d)\n"
           "  --max-message-mb N       largest WebSocket message; bigger ones close with 1009 (default %d)\n"
           "  --max-inbound-mb N       memory all incoming WebSocket messages may hold at once; past it\n"
           "                           uploads wait (default %d)\n"
           "  --arena-mb N             shared-memory arena for results (GLBs) in MB (default %d)\n"
           "  --threads N              HTTP handler threads (CivetWeb) = plain HTTP requests at once; more\n"
           "                           wait in the front, past 4x get 503 (default %d)\n"
           "  --max-websockets N       concurrent WebSockets; more get HTTP 503 before the upgrade (default %d)\n"
           "  --handler-threads N      threads handling WebSocket messages, 0 = max(4, 2 x cores) (default %d)\n"
           "  --request-timeout S      a request head or body must arrive within S seconds (default %.0f)\n"
           "  --ws-ping-interval S     ping a silent WebSocket after S s, drop it after 2 S (default %.0f)\n"
           "  --send-timeout S         drop a client that reads none of its queued output for S s;\n"
           "                           its session is kept (default %.0f)\n"
           "  --worker-threads N       intra-op threads per worker, 0 = cores / workers (default %d)\n"
           "  --precision P            CPU backbone precision: fp32, or bf16 (DA3's GPU numerics,\n"
           "                           ~1.5x faster on AVX512-BF16 CPUs, much slower without) (default %s)\n"
           "  --fsync                  fsync session files (survive power loss, not only crashes)\n"
           "  --api-keys FILE          require an API key (lines: KEY [NAME [ROLE]]) on every API request\n"
           "                           and WebSocket; each key sees only its own sessions; reloaded on\n"
           "                           SIGHUP (docs/security.md)\n"
           "  --cors-origins LIST      origins allowed from browsers (comma list, '*', 'same-origin');\n"
           "                           default '*' without keys, 'same-origin' with them\n"
           "  --private-status         with keys: /status and /metrics need an admin key\n"
           "  --tls-cert FILE          serve https/wss with this PEM certificate chain (with --tls-key;\n"
           "                           both reloaded on SIGHUP)\n"
           "  --tls-key FILE           the certificate's PEM private key\n"
           "  --min-free-mb N          refuse uploads that would leave less than N MB free under\n"
           "                           --data-dir, 0 = off (default %d)\n"
           "  --max-session-mb N       image MB one session may store, 0 = no limit (default %d)\n"
           "  Per client address (0 = no limit; docs/security.md):\n"
           "  --max-ws-per-client N    concurrent WebSockets (default %d)\n"
           "  --max-sessions-per-client N  sessions open at once (default %d)\n"
           "  --client-msg-rate N      WebSocket messages per second, bursts of 2 s (default %g)\n"
           "  --client-byte-rate-mb N  WebSocket payload MB per second, bursts of 2 s (default %g)\n"
           "  --client-http-rate N     HTTP requests and WebSocket upgrades per second, bursts of 2 s\n"
           "                           (default %g)\n"
           "  --trust-proxy            the client's address is the proxy's X-Real-IP / X-Forwarded-For\n"
           "  --log-level L            debug | info | warn | error (default %s)\n"
           "  --help                   this text\n",
           d.host, d.port, d.workers, d.device, d.model, d.data_dir, d.web_dir, d.max_sessions,
           d.session_timeout, d.cleanup_interval, d.max_images, d.max_message_mb, d.max_inbound_mb, d.arena_mb,
           d.threads, d.max_websockets, d.handler_threads, d.request_timeout, d.ws_ping_interval,
           d.send_timeout, d.worker_threads, d.precision, d.min_free_mb, d.max_session_mb, d.max_ws_per_client,
           d.max_sessions_per_client, d.client_msg_rate, d.client_byte_rate_mb, d.client_http_rate, d.log_level);
}

/* Parses a whole-string integer in [lo, hi]; prints why not and returns -1. */
static int parse_int(const char *name, const char *s, long lo, long hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "da3-server: --%s must be an integer in [%ld, %ld], got '%s'\n", name, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_seconds(const char *name, const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v > 0) || v > 1e9) {
        fprintf(stderr, "da3-server: --%s must be a positive number of seconds, got '%s'\n", name, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* A non-negative rate (0 = no limit); prints why not and returns -1. */
static int parse_rate(const char *name, const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= 0) || v > 1e9) {
        fprintf(stderr, "da3-server: --%s must be a number >= 0 (0 = no limit), got '%s'\n", name, s);
        return -1;
    }
    *out = v;
    return 0;
}

int options_parse(server_options *o, int argc, char **argv) {
    enum { O_HOST = 1000, O_PORT, O_WORKERS, O_DEVICE, O_MODEL, O_DATA, O_WEB, O_WBIN, O_MAXS,
           O_TIMEOUT, O_CLEAN, O_MAXI, O_MAXMSG, O_ARENA, O_THREADS, O_WTHREADS, O_PRECISION, O_FSYNC, O_LOG,
           O_MAXIN, O_MAXWS, O_HTHREADS, O_REQTO, O_PING, O_SENDTO, O_KEYS, O_CORS, O_PRIVATE, O_MINFREE, O_MAXSESSMB, O_WSPC, O_SPC, O_MSGRATE, O_BYTERATE, O_TRUSTPROXY, O_HTTPRATE, O_TLSCERT, O_TLSKEY,
           O_HELP };
    static const struct option opts[] = {
        {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT},
        {"workers", required_argument, 0, O_WORKERS},
        {"device", required_argument, 0, O_DEVICE},
        {"model", required_argument, 0, O_MODEL},
        {"data-dir", required_argument, 0, O_DATA},
        {"web-dir", required_argument, 0, O_WEB},
        {"worker-bin", required_argument, 0, O_WBIN},
        {"max-sessions", required_argument, 0, O_MAXS},
        {"session-timeout", required_argument, 0, O_TIMEOUT},
        {"cleanup-interval", required_argument, 0, O_CLEAN},
        {"max-images", required_argument, 0, O_MAXI},
        {"max-message-mb", required_argument, 0, O_MAXMSG},
        {"arena-mb", required_argument, 0, O_ARENA},
        {"threads", required_argument, 0, O_THREADS},
        {"worker-threads", required_argument, 0, O_WTHREADS},
        {"max-websockets", required_argument, 0, O_MAXWS},
        {"max-inbound-mb", required_argument, 0, O_MAXIN},
        {"handler-threads", required_argument, 0, O_HTHREADS},
        {"request-timeout", required_argument, 0, O_REQTO},
        {"ws-ping-interval", required_argument, 0, O_PING},
        {"send-timeout", required_argument, 0, O_SENDTO},
        {"precision", required_argument, 0, O_PRECISION},
        {"fsync", no_argument, 0, O_FSYNC},
        {"api-keys", required_argument, 0, O_KEYS},
        {"cors-origins", required_argument, 0, O_CORS},
        {"private-status", no_argument, 0, O_PRIVATE},
        {"min-free-mb", required_argument, 0, O_MINFREE},
        {"max-session-mb", required_argument, 0, O_MAXSESSMB},
        {"max-ws-per-client", required_argument, 0, O_WSPC},
        {"max-sessions-per-client", required_argument, 0, O_SPC},
        {"client-msg-rate", required_argument, 0, O_MSGRATE},
        {"client-byte-rate-mb", required_argument, 0, O_BYTERATE},
        {"trust-proxy", no_argument, 0, O_TRUSTPROXY},
        {"client-http-rate", required_argument, 0, O_HTTPRATE},
        {"tls-cert", required_argument, 0, O_TLSCERT},
        {"tls-key", required_argument, 0, O_TLSKEY},
        {"log-level", required_argument, 0, O_LOG},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    optind = 1;
    int c, rc = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_HOST: o->host = optarg; break;
        case O_KEYS: o->api_keys = optarg; break;
        case O_CORS: o->cors_origins = optarg; break;
        case O_PRIVATE: o->private_status = 1; break;
        case O_MINFREE: rc = parse_int("min-free-mb", optarg, 0, 1 << 30, &o->min_free_mb); break;
        case O_MAXSESSMB: rc = parse_int("max-session-mb", optarg, 0, 1 << 30, &o->max_session_mb); break;
        case O_WSPC: rc = parse_int("max-ws-per-client", optarg, 0, 1000000, &o->max_ws_per_client); break;
        case O_SPC: rc = parse_int("max-sessions-per-client", optarg, 0, 1000000, &o->max_sessions_per_client); break;
        case O_MSGRATE: rc = parse_rate("client-msg-rate", optarg, &o->client_msg_rate); break;
        case O_BYTERATE: rc = parse_rate("client-byte-rate-mb", optarg, &o->client_byte_rate_mb); break;
        case O_TRUSTPROXY: o->trust_proxy = 1; break;
        case O_HTTPRATE: rc = parse_rate("client-http-rate", optarg, &o->client_http_rate); break;
        case O_TLSCERT: o->tls_cert = optarg; break;
        case O_TLSKEY: o->tls_key = optarg; break;
        case O_PORT: rc = parse_int("port", optarg, 0, 65535, &o->port); break;
        case O_WORKERS: rc = parse_int("workers", optarg, 1, 64, &o->workers); break;
        case O_DEVICE: o->device = optarg; break;
        case O_MODEL: o->model = optarg; break;
        case O_DATA: o->data_dir = optarg; break;
        case O_WEB: o->web_dir = optarg; break;
        case O_WBIN: o->worker_bin = optarg; break;
        case O_MAXS: rc = parse_int("max-sessions", optarg, 1, 100000, &o->max_sessions); break;
        case O_TIMEOUT: rc = parse_seconds("session-timeout", optarg, &o->session_timeout); break;
        case O_CLEAN: rc = parse_seconds("cleanup-interval", optarg, &o->cleanup_interval); break;
        case O_MAXI: rc = parse_int("max-images", optarg, 1, 100000, &o->max_images); break;
        case O_MAXMSG: rc = parse_int("max-message-mb", optarg, 1, 2000, &o->max_message_mb); break;
        case O_ARENA: rc = parse_int("arena-mb", optarg, 16, 1 << 20, &o->arena_mb); break;
        case O_THREADS: rc = parse_int("threads", optarg, 2, 10000, &o->threads); break;
        case O_MAXIN: rc = parse_int("max-inbound-mb", optarg, 16, 1 << 20, &o->max_inbound_mb); break;
        case O_MAXWS: rc = parse_int("max-websockets", optarg, 1, 1000000, &o->max_websockets); break;
        case O_HTHREADS: rc = parse_int("handler-threads", optarg, 0, 1024, &o->handler_threads); break;
        case O_REQTO: rc = parse_seconds("request-timeout", optarg, &o->request_timeout); break;
        case O_PING: rc = parse_seconds("ws-ping-interval", optarg, &o->ws_ping_interval); break;
        case O_SENDTO: rc = parse_seconds("send-timeout", optarg, &o->send_timeout); break;
        case O_WTHREADS: rc = parse_int("worker-threads", optarg, 0, 1024, &o->worker_threads); break;
        case O_PRECISION:
            o->precision = optarg;
            if (strcmp(optarg, "fp32") && strcmp(optarg, "bf16")) {
                fprintf(stderr, "da3-server: --precision must be fp32 or bf16, got '%s'\n", optarg);
                rc = -1;
            }
            break;
        case O_FSYNC: o->fsync_writes = 1; break;
        case O_LOG: o->log_level = optarg; break;
        case O_HELP:
        case 'h': print_help(); return 1;
        default:
            fprintf(stderr, "da3-server: see --help\n");
            return -1;
        }
    }
    if (rc == 0 && optind < argc) {
        fprintf(stderr, "da3-server: unexpected argument '%s' (see --help)\n", argv[optind]);
        rc = -1;
    }
    if (rc == 0 && !o->tls_cert != !o->tls_key) {
        fprintf(stderr, "da3-server: --tls-cert and --tls-key go together\n");
        rc = -1;
    }
    if (rc == 0 && strncmp(o->device, "cpu", 3) && strncmp(o->device, "cuda", 4)) {
        fprintf(stderr, "da3-server: --device must be cpu or cuda[:i][,cuda:j...], got '%s'\n", o->device);
        rc = -1;
    }
    return rc;
}

const char *options_worker_device(const server_options *o, int i, char *buf, int cap) {
    int count = 1;
    for (const char *p = o->device; *p; p++) count += *p == ',';
    int want = i % count;
    const char *start = o->device;
    for (int k = 0; k < want; k++) start = strchr(start, ',') + 1;
    const char *end = strchr(start, ',');
    int len = end ? (int)(end - start) : (int)strlen(start);
    snprintf(buf, (size_t)cap, "%.*s", len, start);
    return buf;
}
