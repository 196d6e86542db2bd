/* Sessions: the registry (bounded, reference-counted: session_registry.c), their on-disk state
 * under <data-dir>/sessions/<id>/ (session_store.c), image intake (session_images.c) and the JSON
 * views of the HTTP API (session_json.c).
 *
 * Locks: the registry lock is a leaf: it is never held while any other lock is taken, so any
 * thread may call sessions_get/sessions_put while holding a session's lock. A session's `lock`
 * guards its state. A session's job lives in the shared job table (frontend/jobs.h) and its
 * socket in the attach map (frontend/attach.h): neither is stored here. */
#ifndef DA3_SESSION_H
#define DA3_SESSION_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/camera_json.h"
#include "common/protocol.h"
#include "frontend/session_config.h"

typedef enum { SESSION_ACTIVE = 0, SESSION_PROCESSING, SESSION_COMPLETED, SESSION_ERROR } session_status;

typedef struct {
    char file[16];   /* stored name chosen by the server, e.g. "000003.jpg" */
    char *display;   /* the client's filename (at most PROTOCOL_MAX_FILENAME_BYTES), display text only (may be NULL) */
    int has_camera;  /* known camera stored beside it (<file>.camera.json, common/camera_json.h) */
} session_image;


typedef struct session {
    char id[37];
    char dir[512];
    char image_dir[600];
    char owner[64];   /* the API key name that created it (frontend/api_keys.h); "" without keys */
    char client[64];  /* the address it was created from (per-client session limit) */
    session_config cfg;
    int fsync_writes; /* --fsync: every file of this session is fsync'ed before it is renamed in */
    /* Guarded by lock: */
    pthread_mutex_t lock;
    session_status status;
    double created_at, last_activity; /* wall-clock epoch seconds */
    char *error_message;
    int image_count, image_cap;
    unsigned long long stored_bytes; /* the images' bytes on disk (--max-session-mb), recounted at reload */
    int last_auto_count;   /* image_count when the last automatic run (auto_generate_after) began */
    int stream_done;       /* streaming: images [0, stream_done) are in the session's chunk stream */
    session_image *images;
    int deleted;           /* set (under lock) by sessions_remove; nothing is written after it */
    /* Guarded by the registry lock: */
    int refs;
} session;

/* ---- registry (session_registry.c) ---- */

/* Loads every persisted session from data_dir (removing tombstones of deletions a crash
 * interrupted); sessions that were processing become active. Returns the number loaded, or -1
 * if data_dir cannot be created. */
int sessions_init(const char *data_dir, int max_sessions, int server_max_images, int fsync_writes);

/* Frees every session and the registry (tests, clean exit): only when no other thread can
 * still reach a session. */
void sessions_shutdown(void);

/* Creates a session (and its folder) owned by `owner` (an API key name, "" without keys) for a
 * client at address `client`. Returns it with one reference, or NULL with *http_status (503 when
 * at max sessions, 429 when the client has --max-sessions-per-client, 500 on I/O errors) and a
 * message in err. */
session *sessions_create(const session_config *cfg, const char *owner, const char *client, int *http_status,
                         char *err, size_t errlen);

/* Sessions one client address may have open at once (0: no limit); set before serving. */
void sessions_set_client_limit(int max_per_client);

/* Looks a session up and takes a reference; NULL when unknown (or not a uuid). */
session *sessions_get(const char *id);

/* Drops a reference; the last one frees a removed session. NULL is a no-op. */
void sessions_put(session *s);

/* Removes a session from the registry and the disk, whatever is in flight: marks it deleted
 * under s->lock (so an upload finishes first or sees `deleted`), renames its folder to a
 * tombstone and removes that. The caller must not hold s->lock. Returns the (still referenced)
 * session so the caller can detach its socket and cancel its job, then sessions_put; NULL when
 * unknown. */
session *sessions_remove(const char *id);

/* Collects (with a reference each) up to max sessions idle for more than timeout_s and not
 * processing; returns how many. */
int sessions_expired(double now, double timeout_s, session **out, int max);

/* sessions_remove, but only if the session is still idle for more than timeout_s and not
 * processing, checked under its lock (the expiry sweep's candidates may have woken up). */
session *sessions_remove_idle(const char *id, double now, double timeout_s);

/* Collects (with a reference each) up to max live sessions; returns how many. */
int sessions_snapshot(session **out, int max);

/* Number of live sessions. */
int sessions_count(void);

/* --max-sessions. */
int sessions_capacity(void);

/* Marks activity now (caller holds s->lock). */
void session_touch(session *s);

/* ---- persistence (session_store.c) ---- */

/* Persists session.json: config, status, timestamps; not the images, which have one small file
 * each (caller holds s->lock). Does nothing for a deleted session. Returns 0 or -1. */
int session_save(session *s);

/* ---- image intake (session_images.c) ---- */

/* One upload as received. */
typedef struct {
    const uint8_t *data;
    size_t len;
    const char *filename;     /* the client's, any length (NULL: none) */
    const known_camera *cam;  /* NULL: sent without a camera */
} session_upload;

/* What was stored, for the ack. */
typedef struct {
    char stored_name[32];                                /* "000003.jpg" (the ack's image_path) */
    char filename[PROTOCOL_MAX_FILENAME_BYTES + 1];      /* display name as stored */
    int has_filename;
    int filename_truncated;                              /* the client's was longer: cut */
    int image_count;                                     /* the session's count after this one */
} session_stored;

/* Checks an upload's bytes without touching any session (call it without holding s->lock: it
 * decodes, and waits for a validation slot): a complete JPEG/PNG/HEIC/WebP within the limits, and upright
 * when it comes with a camera. Returns 0, or -1 with a client message in err. */
int session_validate_upload(const uint8_t *data, size_t len, const known_camera *cam, char *err, size_t errlen);

/* Stores an upload that session_validate_upload accepted (caller holds s->lock): re-checks
 * `deleted`, the image limit and the all-or-none camera rule, writes the camera, a small meta
 * file (display name, camera flag) and the image under server-chosen names, in that order (the
 * image file is what makes the upload count). The cost does not grow with the session. Returns
 * 0 with *out filled, or -1 with a client message in err; nothing is changed on error. */
int session_store_image(session *s, const session_upload *up, session_stored *out, char *err, size_t errlen);

/* Uploads are refused (and nothing is written) while the file system under --data-dir would
 * have less than `bytes` free after storing them (--min-free-mb): a full disk must not corrupt
 * what is already stored. 0 turns the check off. Set before uploads start. */
void session_images_set_min_free(unsigned long long bytes);

/* Uploads are refused (and nothing is written) when they would take a session's stored image
 * bytes past `bytes` (--max-session-mb); 0 turns the check off. Set before uploads start. */
void session_images_set_max_session(unsigned long long bytes);

/* Length in bytes of the longest prefix of name that fits max bytes and ends on a UTF-8
 * character boundary (strlen(name) when it already fits). */
size_t session_filename_bound(const char *name, size_t max);

/* ---- JSON views (session_json.c) ---- */

/* "active", "processing", "completed" or "error". */
const char *session_status_name(session_status st);

/* The status named by text; SESSION_ACTIVE when unknown. */
session_status session_status_parse(const char *text);

/* The GET /ws/session/{id} body (caller holds s->lock). */
json_t *session_info_json(const session *s);

/* The GET /ws/sessions body: stats + per-session summaries, of the sessions `owner` has (NULL:
 * all of them). */
json_t *sessions_list_json(double session_timeout, const char *owner);

#endif
