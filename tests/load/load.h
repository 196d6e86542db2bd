/* Shared declarations between da3-load's scenarios (da3_load.c) and its CivetWeb-client variant
 * of the idle scenario (civet_idle.c). */
#ifndef DA3_LOAD_LOAD_H
#define DA3_LOAD_LOAD_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    const char *scenario;
    const char *host;
    int port;
    pid_t pid;             /* the server's pid for /proc figures, 0 = none */
    long count;            /* idle: sockets; upload/generate: sessions; lifecycle: cycles (0 = until --duration) */
    int concurrency;       /* sessions/cycles in flight at once (0 = scenario default) */
    int images;            /* images per session (-1 = scenario default) */
    const char *image_path;
    int width, height;     /* generated image when no --image */
    int binary;            /* 1: binary frames, 0: base64 JSON */
    int generate;          /* upload: generate and receive the GLB after the uploads */
    int process_res;
    double interval;       /* idle: seconds between pings on each socket */
    double duration;       /* seconds; idle: hold time; others: no new session/cycle after it */
    double timeout;        /* seconds allowed for any one reply */
    double settle;         /* seconds to wait for the server's fds to come back after the run */
    double stagger_ms;     /* generate: gap between the sessions' generate messages */
    int keep;              /* leave sessions in place */
    int pipeline;          /* upload: send all images before reading the acks */
    int connect_inflight;  /* idle: handshakes in progress at once */
    int check_fds;         /* exit non-zero when the server's fd count does not come back */
    const char *client;    /* idle: "raw" (epoll) or "civetweb" */
    int v2;                /* upload, lifecycle, generate: protocol v2 (init on /ws/reconstruct) */
} load_opts;

/* Creates a session (POST /ws/session/create with max_images and process_res), recording a
 * 'create' figure; writes its id into sid (64 bytes). 0 or -1. */
int load_create_session(const load_opts *o, int max_images, char *sid);

/* Deletes a session, recording a 'delete' figure; 0 or -1. */
int load_delete_session(const load_opts *o, const char *sid);

/* Creates n sessions with a few threads at once (ids: n x 64 bytes); returns how many succeeded
 * (failed slots are left empty). */
long load_create_many(const load_opts *o, long n, char *ids);

/* Deletes the non-empty ids among n with a few threads at once. */
void load_delete_many(const load_opts *o, long n, const char *ids);

/* The JSON "type" of a text message, copied into out (32 bytes); "" when it has none. */
void load_msg_type(const char *msg, size_t len, char *out);

/* Records the server's and da3-load's own /proc figures while every idle socket is held. */
void load_snapshot_held(const load_opts *o);

/* The idle scenario over CivetWeb's WebSocket client (one reader thread per socket) on the n
 * sessions in ids: connect all, ping each every interval for duration, close all. */
void idle_civetweb(const load_opts *o, const char *ids, long n);

#endif
