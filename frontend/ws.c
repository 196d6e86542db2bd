#include "frontend/ws.h"

#include <civetweb.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/b64.h"
#include "common/log.h"
#include "frontend/image_message.h"
#include "frontend/jobs.h"
#include "frontend/messages.h"
#include "frontend/server.h"

#define WS_PREFIX "/ws/reconstruct/"
#define CLOSE_NORMAL 1000
#define CLOSE_TOO_BIG 1009

/* One WebSocket connection. Owned by its CivetWeb thread; other threads reach the socket only
 * through session->client under session->write_lock. */
typedef struct ws_client {
    struct mg_connection *conn;
    session *s;        /* referenced while attached; NULL for an unknown session */
    char session_id[64];
    uint8_t *msg;      /* reassembly of a fragmented message */
    size_t msg_len, msg_cap;
    int msg_opcode;    /* opcode of the first frame, 0 when no message is open */
    int closing;
} ws_client;

static void send_text(struct mg_connection *conn, const char *text) {
    if (text) mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_TEXT, text, strlen(text));
}

static void send_error(struct mg_connection *conn, const char *message) {
    char *m = msg_error(message);
    send_text(conn, m);
    free(m);
}

static void send_close(struct mg_connection *conn, int code, const char *reason) {
    char payload[125];
    size_t rlen = strlen(reason);
    if (rlen > sizeof payload - 2) rlen = sizeof payload - 2;
    payload[0] = (char)(code >> 8);
    payload[1] = (char)(code & 0xff);
    memcpy(payload + 2, reason, rlen);
    mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, payload, rlen + 2);
}

int ws_send_to_session(session *s, const char *text, size_t len) {
    int rc = -1;
    pthread_mutex_lock(&s->write_lock);
    if (s->client && !s->client->closing)
        rc = mg_websocket_write(s->client->conn, MG_WEBSOCKET_OPCODE_TEXT, text, len) > 0 ? 0 : -1;
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

void ws_close_session_socket(session *s, const char *message, int code) {
    pthread_mutex_lock(&s->write_lock);
    ws_client *c = s->client;
    if (c && !c->closing) {
        send_error(c->conn, message);
        send_close(c->conn, code, message);
        c->closing = 1;
    }
    s->client = NULL;
    pthread_mutex_unlock(&s->write_lock);
}

static int on_connect(const struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    ws_client *c = calloc(1, sizeof *c);
    if (!c) return 1;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *uri = ri->local_uri ? ri->local_uri : "";
    const char *id = strncmp(uri, WS_PREFIX, strlen(WS_PREFIX)) ? "" : uri + strlen(WS_PREFIX);
    snprintf(c->session_id, sizeof c->session_id, "%s", id);
    mg_set_user_connection_data(conn, c);
    return 0; /* accept always, then report an unknown session in-band like the reference */
}

static void on_ready(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    ws_client *c = mg_get_user_connection_data(conn);
    c->conn = conn;
    session *s = sessions_get(c->session_id);
    if (!s) {
        char msg[160];
        snprintf(msg, sizeof msg, "Session %s not found", c->session_id);
        send_error(conn, msg);
        send_close(conn, CLOSE_NORMAL, "");
        c->closing = 1;
        return;
    }
    c->s = s;
    /* A reconnect takes over the session: the previous socket (often a dead one the client gave
     * up on) is told and closed, so results always go to the newest connection. */
    ws_close_session_socket(s, "Another connection took over this session", CLOSE_NORMAL);
    pthread_mutex_lock(&s->lock);
    session_touch(s);
    int count = s->image_count, max = s->cfg.max_images;
    pthread_mutex_unlock(&s->lock);
    char *m = msg_connected(s->id, count, max);
    pthread_mutex_lock(&s->write_lock);
    s->client = c;
    send_text(conn, m);
    pthread_mutex_unlock(&s->write_lock);
    free(m);
}

/* Stores one image (bytes already decoded) and answers ack or error. */
static void handle_image(ws_client *c, const uint8_t *data, size_t len, const char *filename,
                         const known_camera *cam) {
    session *s = c->s;
    char stored[32], err[512], msg[600];
    pthread_mutex_lock(&s->lock);
    int rc = s->deleted ? -1
                        : session_add_image(s, data, len, filename, cam, stored, sizeof stored, err, sizeof err);
    if (s->deleted) snprintf(err, sizeof err, "Session %s not found", s->id);
    int count = s->image_count;
    pthread_mutex_unlock(&s->lock);
    if (rc) {
        snprintf(msg, sizeof msg, "Failed to process image: %s", err);
        send_error(c->conn, msg);
        return;
    }
    char *m = msg_ack(s->id, count, stored, filename, cam != NULL);
    send_text(c->conn, m);
    free(m);
}

/* Decodes base64 image data (a data: URL prefix is accepted) and stores it with the message's
 * known camera, if it has one (`msg` holds the other fields). */
static void handle_image_base64(ws_client *c, const char *data, size_t n, const json_t *msg) {
    if (!data || n == 0) {
        send_error(c->conn, "Failed to process image: Missing 'data' field");
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
            send_error(c->conn, text);
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
        send_error(c->conn, msg_text);
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
    int rc, refused = 1; /* refused = the request was not valid now, as opposed to failing */
    if (s->deleted) {
        snprintf(err, sizeof err, "Session %s not found", s->id);
        rc = -1;
    } else if (s->image_count == 0) {
        snprintf(err, sizeof err, "No images in session");
        rc = -1;
    } else if (s->job_slot >= 0) {
        snprintf(err, sizeof err, "A reconstruction is already running for this session; wait for its result");
        rc = -1;
    } else {
        /* The first progress goes out before the job is queued so that it always precedes the
         * worker's own progress messages. */
        char *m = finalize ? msg_progress("finalizing", 0.1, "Generating final 3D model...")
                           : msg_progress("loading_model", 0.1, "Loading model...");
        send_text(c->conn, m);
        free(m);
        refused = 0;
        rc = jobs_submit(s, finalize, incremental, err, sizeof err);
    }
    pthread_mutex_unlock(&s->lock);
    if (rc) {
        /* A refusal is sent bare ("No images in session", as the reference does); a failure
         * says what failed. */
        if (refused)
            snprintf(msg, sizeof msg, "%s", err);
        else
            snprintf(msg, sizeof msg, "%s: %s", finalize ? "Failed to finalize" : "Failed to generate point cloud", err);
        send_error(c->conn, msg);
    }
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
    json_t *msg = json_loadb(text, len, 0, &jerr);
    char buf[300];
    if (!msg) {
        snprintf(buf, sizeof buf, "Invalid message format: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        send_error(c->conn, buf);
        return;
    }
    if (!json_is_object(msg)) {
        send_error(c->conn, "Invalid message format: expected a JSON object");
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
        send_text(c->conn, m);
        free(m);
    } else {
        char *shown = type ? NULL : json_dumps(type_v, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(buf, sizeof buf, "Unknown message type: %.200s", type ? type : (shown ? shown : "None"));
        free(shown);
        send_error(c->conn, buf);
    }
    json_decref(msg);
}

static int on_data(struct mg_connection *conn, int bits, char *data, size_t len, void *cbdata) {
    (void)cbdata;
    ws_client *c = mg_get_user_connection_data(conn);
    int opcode = bits & 0x0f, fin = bits & 0x80;
    if (opcode == MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE) {
        if (!c->closing) send_close(conn, CLOSE_NORMAL, ""); /* CivetWeb does not echo it */
        return 0;
    }
    if (opcode == MG_WEBSOCKET_OPCODE_PING) {
        mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_PONG, data, len);
        return 1;
    }
    if (opcode == MG_WEBSOCKET_OPCODE_PONG) return 1;
    if (c->closing || !c->s) return 1; /* already refused; wait for the peer to close */

    if (opcode == MG_WEBSOCKET_OPCODE_CONTINUATION ? c->msg_opcode == 0 : c->msg_opcode != 0) {
        send_error(conn, "Invalid message format: unexpected WebSocket continuation frame");
        send_close(conn, 1002, "protocol error");
        return 0;
    }
    size_t limit = (size_t)g_server.opt.max_message_mb << 20;
    if (c->msg_len + len > limit) {
        char msg[200];
        snprintf(msg, sizeof msg, "Message too large: the limit is %d MB (--max-message-mb)",
                 g_server.opt.max_message_mb);
        send_error(conn, msg);
        send_close(conn, CLOSE_TOO_BIG, "message too big");
        c->closing = 1;
        return 0;
    }
    if (opcode != MG_WEBSOCKET_OPCODE_CONTINUATION) c->msg_opcode = opcode;
    const char *body = data;
    size_t body_len = len;
    if (!fin || c->msg_len) { /* fragmented: accumulate; a single-frame message is used in place */
        if (c->msg_len + len > c->msg_cap) {
            size_t cap = c->msg_cap ? c->msg_cap : 65536;
            while (cap < c->msg_len + len) cap *= 2;
            uint8_t *grown = realloc(c->msg, cap);
            if (!grown) {
                send_error(conn, "Message too large: out of memory");
                send_close(conn, CLOSE_TOO_BIG, "out of memory");
                return 0;
            }
            c->msg = grown;
            c->msg_cap = cap;
        }
        memcpy(c->msg + c->msg_len, data, len);
        c->msg_len += len;
        if (!fin) return 1;
        body = (const char *)c->msg;
        body_len = c->msg_len;
    }
    if (c->msg_opcode == MG_WEBSOCKET_OPCODE_BINARY) {
        handle_image(c, (const uint8_t *)body, body_len, NULL, NULL);
    } else {
        handle_text(c, body, body_len);
    }
    c->msg_opcode = 0;
    c->msg_len = 0;
    if (c->msg_cap > (8u << 20)) { /* don't keep a huge buffer per idle socket */
        free(c->msg);
        c->msg = NULL;
        c->msg_cap = 0;
    }
    return 1;
}

static void on_close(const struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    ws_client *c = mg_get_user_connection_data(conn);
    if (!c) return;
    session *s = c->s;
    if (s) {
        pthread_mutex_lock(&s->write_lock);
        if (s->client == c) s->client = NULL;
        pthread_mutex_unlock(&s->write_lock);
        pthread_mutex_lock(&s->lock);
        session_touch(s); /* the idle timeout counts from the disconnect */
        pthread_mutex_unlock(&s->lock);
        sessions_put(s);
    }
    free(c->msg);
    free(c);
}

void ws_register(struct mg_context *ctx) {
    mg_set_websocket_handler(ctx, "/ws/reconstruct", on_connect, on_ready, on_data, on_close, NULL);
}
