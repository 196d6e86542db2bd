#include "frontend/ws.h"

#include <jansson.h>
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
#include "frontend/ws_frame.h"

#define WS_PREFIX "/ws/reconstruct/"

/* A connection's handler-side state, reached through conn_user(). */
typedef struct {
    uint64_t id;
    session *s;        /* referenced while attached; NULL for an unknown session */
} ws_client;

static void send_text(uint64_t id, const char *text) {
    if (text) conn_send_text(id, text, strlen(text));
}

static void send_error(uint64_t id, const char *message) {
    char *m = msg_error(message);
    send_text(id, m);
    free(m);
}

static void on_open(uint64_t id, const char *target) {
    const char *sid = strncmp(target, WS_PREFIX, strlen(WS_PREFIX)) ? "" : target + strlen(WS_PREFIX);
    session *s = sessions_get(sid);
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
    c->s = s;
    *conn_user(id) = c;
    pthread_mutex_lock(&s->lock);
    session_touch(s);
    int count = s->image_count, max = s->cfg.max_images;
    pthread_mutex_unlock(&s->lock);
    /* "connected" is queued before the attachment is visible, so it always comes first. */
    char *m = msg_connected(s->id, count, max);
    send_text(id, m);
    free(m);
    /* A reconnect takes over the session: the previous socket (often a dead one the client gave
     * up on) is told and closed, so results always go to the newest connection. */
    uint64_t old = attach_set(s->id, id);
    if (old && old != id) {
        send_error(old, "Another connection took over this session");
        conn_close(old, WS_CLOSE_NORMAL, "Another connection took over this session");
    }
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
            touch_session(c);
            handle_image_base64(c, data, data_len, rest);
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
    touch_session(c);
    if (type && !strcmp(type, "image")) {
        json_t *d = json_object_get(msg, "data");
        handle_image_base64(c, json_string_value(d), json_string_length(d), msg);
    } else if (type && !strcmp(type, "generate")) {
        handle_generate(c, 0, json_is_true(json_object_get(msg, "incremental")));
    } else if (type && !strcmp(type, "finalize")) {
        handle_generate(c, 1, 0);
    } else if (type && !strcmp(type, "ping")) {
        char *m = msg_pong(c->s->id);
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
    if (opcode == WS_OP_BINARY) handle_image(c, data, len, NULL, NULL);
    else handle_text(c, (const char *)data, len);
}

static void on_closed(uint64_t id) {
    ws_client *c = *conn_user(id);
    *conn_user(id) = NULL;
    if (!c) return;
    session *s = c->s;
    attach_clear(s->id, id);
    pthread_mutex_lock(&s->lock);
    session_touch(s); /* the idle timeout counts from the disconnect */
    pthread_mutex_unlock(&s->lock);
    sessions_put(s);
    free(c);
}

const conn_handlers ws_handlers = {on_open, on_message, on_closed};
