/* Sessions: the registry (bounded, reference-counted), their on-disk state under
 * <data-dir>/sessions/<id>/ (session.json + images/, written atomically) and reload at start. */
#ifndef DA3_SESSION_H
#define DA3_SESSION_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/camera_json.h"
#include "frontend/session_config.h"

typedef enum { SESSION_ACTIVE = 0, SESSION_PROCESSING, SESSION_COMPLETED, SESSION_ERROR } session_status;

typedef struct {
    char file[16];   /* stored name chosen by the server, e.g. "000003.jpg" */
    char *display;   /* the client's filename, display text only (may be NULL) */
    int has_camera;  /* known camera stored beside it (<file>.camera.json, common/camera_json.h) */
} session_image;

struct ws_client;

typedef struct session {
    char id[37];
    char dir[512];
    char image_dir[600];
    session_config cfg;
    /* Guarded by lock: */
    pthread_mutex_t lock;
    session_status status;
    double created_at, last_activity; /* wall-clock epoch seconds */
    char *error_message;
    int image_count, image_cap;
    session_image *images;
    int job_slot;          /* shm job slot while a job is queued or running, else -1 */
    uint64_t job_id;
    int job_finalize, job_incremental, job_images;
    double job_submitted;  /* monotonic */
    /* Guarded by write_lock: the attached socket, written to from other threads. */
    pthread_mutex_t write_lock;
    struct ws_client *client;
    /* Guarded by the registry lock: */
    int refs;
    int deleted;
} session;

/* Loads every persisted session from data_dir; sessions that were processing become active.
 * Returns the number loaded, or -1 if data_dir cannot be created. */
int sessions_init(const char *data_dir, int max_sessions, int server_max_images, int fsync_writes);

/* Creates a session (and its folder). Returns it with one reference, or NULL with *http_status
 * (503 when at max sessions, 500 on I/O errors) and a message in err. */
session *sessions_create(const session_config *cfg, int *http_status, char *err, size_t errlen);

/* Looks a session up and takes a reference; NULL when unknown (or not a uuid). */
session *sessions_get(const char *id);

/* Drops a reference; the last one frees a deleted session. */
void sessions_put(session *s);

/* Removes a session from the registry and the disk. Returns the (still referenced) session so
 * the caller can detach its socket and cancel its job, then sessions_put; NULL when unknown. */
session *sessions_remove(const char *id);

/* Collects (with a reference each) up to max sessions idle for more than timeout_s and not
 * processing; returns how many. */
int sessions_expired(double now, double timeout_s, session **out, int max);

/* Collects (with a reference each) up to max live sessions; returns how many. */
int sessions_snapshot(session **out, int max);

/* Number of live sessions. */
int sessions_count(void);

/* Stores an image for the session (caller holds s->lock): validates it, writes it (and its known
 * camera, when cam is not NULL) under server-chosen names, persists session.json. A session's
 * images come all with cameras or all without: a mix is refused. Returns 0 with stored_name
 * filled, or -1 with a client message in err; nothing is changed on error. */
int session_add_image(session *s, const uint8_t *data, size_t len, const char *display,
                      const known_camera *cam, char *stored_name, size_t name_cap, char *err, size_t errlen);

/* Persists session.json (caller holds s->lock). Returns 0 or -1. */
int session_save(session *s);

/* Marks activity now (caller holds s->lock). */
void session_touch(session *s);

/* "active", "processing", "completed" or "error". */
const char *session_status_name(session_status st);

/* The GET /ws/session/{id} body (caller holds s->lock). */
json_t *session_info_json(const session *s);

/* The GET /ws/sessions body: stats + per-session summaries. */
json_t *sessions_list_json(double session_timeout);

#endif
