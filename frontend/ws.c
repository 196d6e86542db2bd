#include "frontend/ws.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/b64.h"
#include "common/json_bounded.h"
#include "common/log.h"
#include "frontend/attach.h"
#include "frontend/conn.h"
#include "frontend/image_message.h"
#include "frontend/jobs.h"
#include "frontend/session.h"
#include "frontend/messages.h"
#include "frontend/server.h"
#include "frontend/session_config.h"
#include "frontend/ws_frame.h"

/* v1: the session is named in the path (created over HTTP first). v2: the bare path, and the
 * session comes from the client's first message, init (create, or resume by id). */
#define WS_V1_PREFIX "/ws/reconstruct/"
#define WS_V2_PATH "/ws/reconstruct"

static const char NO_SESSION[] = "No session initialized. Send 'init' message first.";

/* A connection's handler-side state, reached through conn_user(). */
typedef struct {
    uint64_t id;
    int v2;            /* opened on WS_V2_PATH */
    api_identity who;  /* the key the upgrade presented (frontend/api_keys.h) */
    char client[64];   /* the client's address (frontend/client_limits.h) */
    session *s;        /* referenced while attached; NULL before a v2 init */
    uint64_t seq;      /* when it asked for its session (attach.h): the later asker wins */
} ws_client;

/* Orders the requests for sessions (v1 opens, v2 inits) across handler threads. */
static atomic_ullong ask_seq;

static void send_text(uint64_t id, const char *text) {
    if (text) conn_send_text(id, text, strlen(text));
}

static void send_error(uint64_t id, const char *message) {
    char *m = msg_error(message);
    send_text(id, m);
    free(m);
}

/* Makes c the session's connection (c takes over the reference to s). A reconnect takes over the
 * session: the previous socket (often a dead one the client gave up on) is told and closed, so
 * results always go to the newest connection. The caller has queued its greeting already, so it
 * always comes first. "Newest" is the order of asking (c->seq, taken before the greeting): a
 * client that reconnects on seeing the old socket's greeting must win even when the old socket's
 * handler thread attaches after the new one's (found by make soak: 1 takeover in ~300). */
static void attach_client(ws_client *c, session *s) {
    uint64_t lost = attach_set(s->id, c->id, c->seq);
    if (lost == c->id) { /* a later connection holds the session: this one is the old one */
        sessions_put(s);
        send_error(c->id, "Another connection took over this session");
        conn_close(c->id, WS_CLOSE_NORMAL, "Another connection took over this session");
        return;
    }
    c->s = s;
    if (lost) {
        send_error(lost, "Another connection took over this session");
        conn_close(lost, WS_CLOSE_NORMAL, "Another connection took over this session");
    }
    if (s->cfg.streaming) { /* a chunk that waited for its client (e.g. across a restart) */
        pthread_mutex_lock(&s->lock);
        jobs_start_due(s);
        pthread_mutex_unlock(&s->lock);
    }
}

/* The target's path: up to a query string, if any. */
static int path_is(const char *target, const char *path) {
    size_t n = strlen(path);
    return !strncmp(target, path, n) && (target[n] == 0 || target[n] == '?');
}

/* The session named id, if it exists and belongs to who; another key's session is "not found"
 * (never "forbidden", which would confirm it exists). */
static session *session_of(const char *id, const api_identity *who) {
    session *s = sessions_get(id);
    if (s && !api_identity_owns(who, s->owner)) {
        sessions_put(s);
        s = NULL;
    }
    return s;
}

static void on_open(uint64_t id, const char *target, const api_identity *who, const char *client) {
    if (path_is(target, WS_V2_PATH)) {
        /* v2: nothing is sent until the client's init, as the reference does. */
        ws_client *c = calloc(1, sizeof *c);
        if (!c) {
            conn_close(id, WS_CLOSE_INTERNAL, "out of memory");
            return;
        }
        c->id = id;
        c->v2 = 1;
        c->who = *who;
        snprintf(c->client, sizeof c->client, "%s", client);
        *conn_user(id) = c;
        return;
    }
    uint64_t seq = atomic_fetch_add(&ask_seq, 1) + 1;
    char sid[64] = "";
    if (!strncmp(target, WS_V1_PREFIX, strlen(WS_V1_PREFIX)))
        snprintf(sid, sizeof sid, "%.*s", (int)strcspn(target + strlen(WS_V1_PREFIX), "?"), target + strlen(WS_V1_PREFIX));
    session *s = session_of(sid, who);
    if (!s) {
        /* Like the reference: accept, then report an unknown session in-band. */
        char msg[160];
        snprintf(msg, sizeof msg, "Session %.64s not found", sid);
        send_error(id, msg);
        conn_close(id, WS_CLOSE_NORMAL, "");
        return;
    }
    ws_client *c = calloc(1, sizeof *c);
    if (!c) {
        sessions_put(s);
        conn_close(id, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    c->id = id;
    c->who = *who;
    c->seq = seq;
    *conn_user(id) = c;
    pthread_mutex_lock(&s->lock);
    session_touch(s);
    int count = s->image_count, max = s->cfg.max_images;
    pthread_mutex_unlock(&s->lock);
    char *m = msg_connected(s->id, count, max);
    send_text(id, m);
    free(m);
    attach_client(c, s);
}

/* v2 init with a session_id: resumes that session (an extension: the reference deletes a v2
 * session when its socket drops). Settings sent with it must match the session's: they cannot
 * change under images already taken. Returns the session with a reference, or NULL with err. */
static session *resume_session(const char *sid, const json_t *msg, const api_identity *who, char *err, size_t errlen) {
    session *s = session_of(sid, who);
    if (!s) {
        snprintf(err, errlen, "Failed to resume session: Session %.64s not found", sid);
        return NULL;
    }
    pthread_mutex_lock(&s->lock);
    session_config cfg = s->cfg;
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < session_config_name_count; i++) {
        json_t *v = json_object_get(msg, session_config_names[i]);
        if (!v || json_is_null(v)) continue;
        session_config asked = cfg;
        char why[256];
        if (session_config_set(&asked, session_config_names[i], NULL, v, g_server.opt.max_images, why, sizeof why)) {
            snprintf(err, errlen, "Failed to resume session: %s", why);
        } else if (!session_config_equal(&asked, &cfg)) {
            snprintf(err, errlen, "Failed to resume session: %s cannot be changed when resuming a session",
                     session_config_names[i]);
        } else {
            continue;
        }
        sessions_put(s);
        return NULL;
    }
    return s;
}

/* v2 init without a session_id: a new session from the message's settings, each validated like
 * the HTTP create parameters. Returns it with a reference, or NULL with err. */
static session *create_session(const json_t *msg, const ws_client *c, char *err, size_t errlen) {
    session_config cfg;
    session_config_default_client(&cfg, g_server.opt.max_images, 1);
    char why[256];
    for (size_t i = 0; i < session_config_name_count; i++) {
        json_t *v = json_object_get(msg, session_config_names[i]);
        if (v && !json_is_null(v) &&
            session_config_set(&cfg, session_config_names[i], NULL, v, g_server.opt.max_images, why, sizeof why)) {
            snprintf(err, errlen, "Failed to create session: %s", why);
            return NULL;
        }
    }
    if (session_config_finish(&cfg, why, sizeof why)) {
        snprintf(err, errlen, "Failed to create session: %s", why);
        return NULL;
    }
    int status;
    session *s = sessions_create(&cfg, c->who.name, c->client, &status, why, sizeof why);
    if (!s) snprintf(err, errlen, "Failed to create session: %s", why);
    return s;
}

static void handle_init(ws_client *c, const json_t *msg) {
    char err[400];
    if (!c->v2) {
        send_error(c->id, "Unknown message type: init (this is a protocol v1 connection: its session is named in the path)");
        return;
    }
    if (c->s) {
        /* The reference makes a new session and orphans the first one; refusing keeps one
         * session per socket, so nothing is stranded. */
        snprintf(err, sizeof err, "Failed to create session: this connection already has session %s; open another "
                 "WebSocket for another session", c->s->id);
        send_error(c->id, err);
        return;
    }
    const json_t *sid = json_object_get(msg, "session_id");
    if (sid && !json_is_null(sid) && !json_is_string(sid)) {
        send_error(c->id, "Failed to resume session: session_id must be a string");
        return;
    }
    int resumed = json_is_string(sid);
    c->seq = atomic_fetch_add(&ask_seq, 1) + 1;
    session *s = resumed ? resume_session(json_string_value(sid), msg, &c->who, err, sizeof err)
                         : create_session(msg, c, err, sizeof err);
    if (!s) {
        send_error(c->id, err);
        return;
    }
    pthread_mutex_lock(&s->lock);
    session_touch(s);
    int count = s->image_count, max = s->cfg.max_images;
    json_t *config = session_config_json(&s->cfg);
    pthread_mutex_unlock(&s->lock);
    char *m = msg_session_created(s->id, max, config, resumed, count);
    send_text(c->id, m);
    free(m);
    attach_client(c, s);
}

/* Stores one image (bytes already decoded) and answers ack or error. The bytes are validated
 * without the session lock (a decode takes milliseconds; GET /ws/session/{id} and the sweep must
 * not wait for it), then stored under it. */
static void handle_image(ws_client *c, const uint8_t *data, size_t len, const char *filename,
                         const known_camera *cam) {
    session *s = c->s;
    char err[512], msg[600];
    session_stored out;
    int rc = session_validate_upload(data, len, cam, err, sizeof err);
    if (rc == 0) {
        session_upload up = {.data = data, .len = len, .filename = filename, .cam = cam};
        pthread_mutex_lock(&s->lock);
        rc = session_store_image(s, &up, &out, err, sizeof err);
        pthread_mutex_unlock(&s->lock);
    }
    if (rc) {
        snprintf(msg, sizeof msg, "Failed to process image: %s", err);
        send_error(c->id, msg);
        return;
    }
    char *m = msg_ack(s->id, out.image_count, out.stored_name, out.has_filename ? out.filename : NULL,
                      cam != NULL, out.filename_truncated);
    send_text(c->id, m);
    free(m);
    if (s->cfg.auto_generate_after > 0 || s->cfg.streaming) { /* the config never changes after creation */
        pthread_mutex_lock(&s->lock);
        jobs_start_due(s);
        pthread_mutex_unlock(&s->lock);
    }
}

/* Decodes base64 image data (a data: URL prefix is accepted) and stores it with the message's
 * known camera, if it has one (`msg` holds the other fields). */
static void handle_image_base64(ws_client *c, const char *data, size_t n, const json_t *msg) {
    if (!data || n == 0) {
        send_error(c->id, "Failed to process image: Missing 'data' field");
        return;
    }
    /* null (Python's None for an optional field) means not given. */
    const json_t *ext = json_object_get(msg, "extrinsics"), *intr = json_object_get(msg, "intrinsics");
    if (json_is_null(ext)) ext = NULL;
    if (json_is_null(intr)) intr = NULL;
    known_camera cam;
    if (ext || intr) {
        char why[300], text[400];
        if (camera_from_json(ext, intr, &cam, why, sizeof why)) {
            snprintf(text, sizeof text, "Failed to process image: %s", why);
            send_error(c->id, text);
            return;
        }
    }
    const char *filename = json_string_value(json_object_get(msg, "filename"));
    /* Browsers hand out data URLs; accept them instead of failing on the prefix. */
    if (n > 5 && !strncmp(data, "data:", 5)) {
        const char *comma = memchr(data, ',', n < 256 ? n : 256);
        if (comma) {
            n -= (size_t)(comma + 1 - data);
            data = comma + 1;
        }
    }
    uint8_t *bytes = malloc(b64_decoded_max(n));
    char err[200], msg_text[300];
    long len = bytes ? b64_decode(data, n, bytes, err, sizeof err) : -1;
    if (!bytes) snprintf(err, sizeof err, "out of memory");
    if (len < 0) {
        snprintf(msg_text, sizeof msg_text, "Failed to process image: %s", err);
        send_error(c->id, msg_text);
    } else {
        handle_image(c, bytes, (size_t)len, filename, (ext || intr) ? &cam : NULL);
    }
    free(bytes);
}

static void touch_session(ws_client *c) {
    pthread_mutex_lock(&c->s->lock);
    session_touch(c->s);
    pthread_mutex_unlock(&c->s->lock);
}

static void handle_generate(ws_client *c, int finalize, int incremental) {
    session *s = c->s;
    char err[300], msg[400];
    pthread_mutex_lock(&s->lock);
    jobs_submit_result r = jobs_submit(s, finalize, incremental, err, sizeof err);
    pthread_mutex_unlock(&s->lock);
    if (r == JOBS_QUEUED) return;
    /* A refusal is sent bare ("No images in session", as the reference does); a failure says
     * what failed. */
    if (r == JOBS_REFUSED) snprintf(msg, sizeof msg, "%s", err);
    else snprintf(msg, sizeof msg, "%s: %s", finalize ? "Failed to finalize" : "Failed to generate point cloud", err);
    send_error(c->id, msg);
}

static void handle_text(ws_client *c, const char *text, size_t len) {
    /* Image uploads are nearly all base64: take them without a JSON parse of the payload. */
    const char *data;
    size_t data_len;
    json_t *rest;
    if (len > 4096 && image_message_split(text, len, &data, &data_len, &rest) == 0) {
        const char *type = json_string_value(json_object_get(rest, "type"));
        if (type && !strcmp(type, "image")) {
            if (!c->s) send_error(c->id, NO_SESSION);
            else {
                touch_session(c);
                handle_image_base64(c, data, data_len, rest);
            }
            json_decref(rest);
            return;
        }
        json_decref(rest);
    }
    json_error_t jerr;
    json_t *msg = json_loadb_bounded(text, len, JSON_MAX_DEPTH_CLIENT, &jerr);
    char buf[300];
    if (!msg) {
        snprintf(buf, sizeof buf, "Invalid message format: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        send_error(c->id, buf);
        return;
    }
    if (!json_is_object(msg)) {
        send_error(c->id, "Invalid message format: expected a JSON object");
        json_decref(msg);
        return;
    }
    json_t *type_v = json_object_get(msg, "type");
    const char *type = json_string_value(type_v);
    int needs_session = type && (!strcmp(type, "image") || !strcmp(type, "generate") || !strcmp(type, "finalize"));
    if (c->s) touch_session(c);
    if (needs_session && !c->s) {
        send_error(c->id, NO_SESSION);
    } else if (type && !strcmp(type, "init")) {
        handle_init(c, msg);
    } else if (type && !strcmp(type, "image")) {
        json_t *d = json_object_get(msg, "data");
        handle_image_base64(c, json_string_value(d), json_string_length(d), msg);
    } else if (type && !strcmp(type, "generate")) {
        handle_generate(c, 0, json_is_true(json_object_get(msg, "incremental")));
    } else if (type && !strcmp(type, "finalize")) {
        handle_generate(c, 1, 0);
    } else if (type && !strcmp(type, "ping")) {
        char *m = msg_pong(c->s ? c->s->id : NULL);
        send_text(c->id, m);
        free(m);
    } else {
        char *shown = type ? NULL : json_dumps(type_v, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(buf, sizeof buf, "Unknown message type: %.200s", type ? type : (shown ? shown : "None"));
        free(shown);
        send_error(c->id, buf);
    }
    json_decref(msg);
}

static void on_message(uint64_t id, int opcode, const uint8_t *data, size_t len) {
    ws_client *c = *conn_user(id);
    if (!c) return; /* refused at open: nothing to do until the peer closes */
    if (opcode == WS_OP_BINARY) {
        if (!c->s) send_error(id, NO_SESSION);
        else handle_image(c, data, len, NULL, NULL); /* storing it marks the activity */
    }
    else handle_text(c, (const char *)data, len);
}

static void on_closed(uint64_t id) {
    ws_client *c = *conn_user(id);
    *conn_user(id) = NULL;
    if (!c) return;
    session *s = c->s;
    if (!s) { /* v2, closed before init */
        free(c);
        return;
    }
    attach_clear(s->id, id);
    pthread_mutex_lock(&s->lock);
    session_touch(s); /* the idle timeout counts from the disconnect */
    pthread_mutex_unlock(&s->lock);
    sessions_put(s);
    free(c);
}

const conn_handlers ws_handlers = {on_open, on_message, on_closed};
