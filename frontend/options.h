/* Command-line options of da3-server, their defaults and --help text. */
#ifndef DA3_OPTIONS_H
#define DA3_OPTIONS_H

typedef struct {
    const char *host;
    int port;
    int workers;
    const char *device;       /* "cpu" or a comma list "cuda:0,cuda:1" given out round-robin */
    const char *model;        /* folder or "demo" */
    const char *data_dir;
    const char *web_dir;
    const char *worker_bin;   /* path of da3-worker; default: next to da3-server */
    int max_sessions;
    double session_timeout;   /* seconds of inactivity before a session expires */
    double cleanup_interval;  /* seconds between expiry sweeps */
    int max_images;           /* cap on a session's max_images (and its default) */
    int max_message_mb;       /* largest WebSocket message accepted */
    int max_inbound_mb;       /* memory all incoming messages may hold at once */
    int arena_mb;             /* shared result arena for GLBs */
    int threads;              /* CivetWeb threads = plain HTTP requests handled at once */
    int max_websockets;       /* concurrent WebSockets; more get 503 before the upgrade */
    int handler_threads;      /* threads handling WebSocket messages (bounds validations at once) */
    double request_timeout;   /* seconds for a request head (or body) to arrive */
    double ws_ping_interval;  /* a silent WebSocket is pinged after this; dropped after twice it */
    double send_timeout;      /* a client that reads nothing of its queued output this long is dropped */
    int worker_threads;       /* intra-op threads per worker (0: online cores / workers) */
    int fsync_writes;         /* fsync session files (survive power loss, not just crashes) */
    const char *precision;    /* CPU backbone precision: "fp32" (DA3's CPU numbers) or "bf16" */
    const char *log_level;
    const char *api_keys;     /* --api-keys FILE (NULL: no keys, everyone may use the API) */
    const char *cors_origins; /* --cors-origins LIST (NULL: frontend/cors.h's default) */
    int private_status;       /* /status and /metrics need an admin key (with keys) */
    int min_free_mb;          /* uploads are refused below this much free space under data_dir */
    int max_session_mb;       /* image bytes one session may store; 0 = no limit */
    int max_ws_per_client;    /* per client address (frontend/client_limits.h); 0 = no limit */
    int max_sessions_per_client;
    double client_msg_rate;     /* WebSocket messages per second per address */
    double client_byte_rate_mb; /* WebSocket payload MB per second per address */
    int trust_proxy;          /* client address from X-Real-IP / X-Forwarded-For */
    double client_http_rate;  /* HTTP requests (upgrades included) per second per address */
    const char *tls_cert;     /* --tls-cert PEM chain (NULL: plain HTTP); needs tls_key */
    const char *tls_key;      /* --tls-key PEM key */
} server_options;

/* Fills the defaults. */
void options_default(server_options *o);

/* Parses argv into o. Returns 0 to run, 1 when --help was printed, -1 on a bad option (an
 * explanation was printed to stderr). */
int options_parse(server_options *o, int argc, char **argv);

/* Device string for worker i ("cuda:0,cuda:1" with 4 workers -> cuda:0, cuda:1, cuda:0, ...);
 * writes into buf and returns it. */
const char *options_worker_device(const server_options *o, int i, char *buf, int cap);

#endif
