#include "frontend/messages.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/b64.h"

/* Compact separators like the reference (Starlette send_json), UTF-8 kept as is. */
static char *dump(json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    return s;
}

char *msg_connected(const char *session_id, int image_count, int max_images) {
    return dump(json_pack("{s:s,s:s,s:i,s:i}", "type", "connected", "session_id", session_id,
                          "image_count", image_count, "max_images", max_images));
}

char *msg_ack(const char *session_id, int image_count, const char *image_path, const char *filename,
              int has_camera, int filename_truncated) {
    json_t *o = json_pack("{s:s,s:i,s:s,s:s}", "type", "ack", "image_count", image_count,
                          "session_id", session_id, "image_path", image_path);
    if (o && filename) json_object_set_new(o, "filename", json_string(filename));
    if (o && has_camera) json_object_set_new(o, "camera", json_true());
    if (o && filename_truncated) json_object_set_new(o, "filename_truncated", json_true());
    return dump(o);
}

char *msg_progress(const char *stage, double progress, const char *message) {
    return dump(json_pack("{s:s,s:s,s:f,s:s}", "type", "progress", "stage", stage, "progress",
                          progress, "message", message));
}

char *msg_error(const char *message) {
    /* json_string rejects invalid UTF-8; fall back to a lossless-enough ASCII copy. */
    json_t *text = json_string(message);
    if (!text) {
        char *copy = strdup(message);
        for (char *p = copy; p && *p; p++)
            if ((unsigned char)*p >= 0x80) *p = '?';
        text = json_string(copy ? copy : "error");
        free(copy);
    }
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("error"));
    json_object_set_new(o, "message", text);
    return dump(o);
}

char *msg_pong(const char *session_id) {
    return dump(json_pack("{s:s,s:o}", "type", "pong", "session_id", session_id ? json_string(session_id) : json_null()));
}

char *msg_session_created(const char *session_id, int max_images, json_t *config, int resumed, int image_count) {
    json_t *o = json_pack("{s:s,s:s,s:i,s:o}", "type", "session_created", "session_id", session_id, "max_images",
                          max_images, "config", config ? config : json_object());
    if (o && resumed) {
        json_object_set_new(o, "resumed", json_true());
        json_object_set_new(o, "image_count", json_integer(image_count));
    }
    return dump(o);
}

char *msg_auto_generating(int image_count) {
    char text[64];
    snprintf(text, sizeof text, "Auto-generating after %d images", image_count);
    return dump(json_pack("{s:s,s:i,s:s}", "type", "auto_generating", "image_count", image_count, "message", text));
}

char *msg_result(const char *type, int image_count, const uint8_t *glb, size_t glb_len,
                 const char *meta_json, size_t meta_len, const char *session_id,
                 const double *queue_and_glb_ms, int auto_generated, size_t *len) {
    json_error_t jerr;
    json_t *meta = json_loadb(meta_json, meta_len, 0, &jerr);
    if (!json_is_object(meta)) {
        json_decref(meta);
        return NULL;
    }
    json_object_set_new(meta, "session_id", json_string(session_id));
    json_object_set_new(meta, "glb_size_bytes", json_integer((json_int_t)glb_len));
    if (queue_and_glb_ms) {
        json_t *timing = json_object_get(meta, "timing");
        if (!json_is_object(timing)) json_object_set_new(meta, "timing", timing = json_object());
        json_object_set_new(timing, "queue_ms", json_real(queue_and_glb_ms[0]));
        json_object_set_new(timing, "glb_ms", json_real(queue_and_glb_ms[1]));
    }
    if (auto_generated) json_object_set_new(meta, "auto_generated", json_true());
    if (!json_object_get(meta, "num_frames")) json_object_set_new(meta, "num_frames", json_integer(image_count));
    char *meta_text = json_dumps(meta, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(meta);
    if (!meta_text) return NULL;

    /* The base64 text is tens of MB: write it once, in place, between a JSON head and tail
     * assembled by hand (base64 needs no JSON escaping). */
    char head[128];
    int head_len = snprintf(head, sizeof head, "{\"type\":\"%s\",\"image_count\":%d,\"glb_base64\":\"",
                            type, image_count);
    static const char mid[] = "\",\"metadata\":";
    size_t b64_len = b64_encoded_len(glb_len), meta_text_len = strlen(meta_text);
    size_t total = (size_t)head_len + b64_len + sizeof mid - 1 + meta_text_len + 1;
    char *out = malloc(total + 1);
    if (out) {
        char *p = out;
        memcpy(p, head, (size_t)head_len);
        p += head_len;
        p += b64_encode(glb, glb_len, p);
        memcpy(p, mid, sizeof mid - 1);
        p += sizeof mid - 1;
        memcpy(p, meta_text, meta_text_len);
        p += meta_text_len;
        *p++ = '}';
        *p = 0;
        *len = (size_t)(p - out);
    }
    free(meta_text);
    return out;
}
