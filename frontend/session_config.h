/* A session's reconstruction settings (the create parameters of protocol v1): defaults,
 * validation of client-supplied values, JSON form. */
#ifndef DA3_SESSION_CONFIG_H
#define DA3_SESSION_CONFIG_H

#include <jansson.h>
#include <stddef.h>

#include "common/protocol.h"

#define SESSION_MAX_PROCESS_RES 2016
#define SESSION_MAX_POINTS 50000000L
#define SESSION_MAX_AUTO_GENERATE_AFTER 100000
#define SESSION_DEFAULT_CHUNK_SIZE 16 /* CPU-sized; DA3-Streaming uses 60-120 views on GPUs */
#define SESSION_MAX_CHUNK_SIZE 512

typedef struct {
    int max_images;
    int process_res;
    resize_method method;
    double conf_thresh_percentile;
    long num_max_points;
    int show_cameras;
    int auto_generate_after; /* 0: off; N: a delta after every N new images (protocol v2's init) */
    /* Streaming (worker/stream_session.h): chunks of chunk_size views sharing `overlap` views
     * with the previous chunk, reconstructed as images arrive; each delta holds new points only. */
    int streaming;
    int chunk_size;          /* 2 .. SESSION_MAX_CHUNK_SIZE */
    int overlap;             /* 1 .. chunk_size - 1; 0 until session_config_finish: chunk_size / 2 */
} session_config;

/* The protocol defaults (504, upper_bound_resize, 10.0, 10,000,000 points, cameras on) with
 * max_images = server_max_images. */
void session_config_default(session_config *c, int server_max_images);

/* What a new session of a client gets before its own parameters: the protocol defaults, at most
 * 100 images (the reference's default), and for protocol v2's init the reference tip's lower
 * point budget (100,000). */
void session_config_default_client(session_config *c, int server_max_images, int protocol_v2);

/* The client-settable parameter names, in the order the HTTP create and v2 init read them. */
extern const char *const session_config_names[];
extern const size_t session_config_name_count;

/* Applies one client parameter given as text (query string) or JSON value (body; pass text NULL).
 * Unknown names are ignored like the reference does. Returns 0, or -1 with a message for the
 * client in err (e.g. "process_res must be an integer in [14, 2016]"). */
int session_config_set(session_config *c, const char *name, const char *text, json_t *value,
                       int server_max_images, char *err, size_t errlen);

/* Checks the settings against each other once all are applied (overlap < chunk_size; streaming
 * and auto_generate_after exclude each other) and resolves the overlap default. Returns 0, or -1
 * with a message for the client in err. */
int session_config_finish(session_config *c, char *err, size_t errlen);

/* 1 when a and b are the same settings. */
int session_config_equal(const session_config *a, const session_config *b);

/* The "config" object of the create response (without max_images). */
json_t *session_config_json(const session_config *c);

/* Reads back what session_config_json wrote (plus max_images); missing fields keep *c. */
void session_config_from_json(session_config *c, json_t *config, json_t *max_images);

#endif
