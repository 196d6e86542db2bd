/* Fuzzes the WebSocket text-message path of frontend/ws.c's handle_text, which is static and bound
 * to the server (sessions, sockets), so this harness calls the same parsers in the same order:
 *   1. image_message_split (frontend/image_message.c), the fast path for image uploads — called
 *      on every input here, not only above 4096 bytes as in ws.c, so short inputs reach it;
 *   2. json_loadb_bounded, the general path;
 *   3. per "type": "image" -> camera_from_json on extrinsics/intrinsics, the data-URL prefix cut
 *      and b64_decode into a buffer of b64_decoded_max bytes; "init" -> session_config_set for
 *      every parameter present, then session_config_finish (as create_session does).
 * Invariants of the fast path: the data span lies inside the text between two quotes with no
 * quote or backslash in it; the rest parses to an object whose "data" is ""; and whenever the
 * whole message also parses, both paths see the same message (same data string, same other
 * fields) — a differential that would catch the fast path reading another key than the parser. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/b64.h"
#include "common/camera_json.h"
#include "common/json_bounded.h"
#include "frontend/image_message.h"
#include "frontend/session_config.h"
#include "fuzz_util.h"

#define SERVER_MAX_IMAGES 1000 /* --max-images default */

/* handle_image_base64's parsing, without the storing. */
static void image_fields(const char *data, size_t n, const json_t *msg) {
    const json_t *ext = json_object_get(msg, "extrinsics"), *intr = json_object_get(msg, "intrinsics");
    if (json_is_null(ext)) ext = NULL;
    if (json_is_null(intr)) intr = NULL;
    if (ext || intr) {
        known_camera cam;
        char why[300];
        if (camera_from_json(ext, intr, &cam, why, sizeof why) == 0) {
            for (int i = 0; i < 16; i++) FUZZ_ASSERT(isfinite(cam.extrinsics[i]));
            FUZZ_ASSERT(cam.intrinsics[0] > 0 && cam.intrinsics[4] > 0);
        }
    }
    (void)json_string_value(json_object_get(msg, "filename"));
    if (!data || n == 0) return;
    if (n > 5 && !strncmp(data, "data:", 5)) {
        const char *comma = memchr(data, ',', n < 256 ? n : 256);
        if (comma) {
            n -= (size_t)(comma + 1 - data);
            data = comma + 1;
        }
    }
    size_t cap = b64_decoded_max(n);
    uint8_t *bytes = malloc(cap);
    FUZZ_ASSERT(bytes);
    char err[200];
    long len = b64_decode(data, n, bytes, err, sizeof err);
    FUZZ_ASSERT(len < 0 || (size_t)len <= cap);
    free(bytes);
}

/* create_session's parsing of a v2 init. */
static void init_fields(const json_t *msg, int v2) {
    session_config cfg;
    session_config_default_client(&cfg, SERVER_MAX_IMAGES, v2);
    char why[256];
    for (size_t i = 0; i < session_config_name_count; i++) {
        json_t *v = json_object_get(msg, session_config_names[i]);
        if (v && !json_is_null(v) &&
            session_config_set(&cfg, session_config_names[i], NULL, v, SERVER_MAX_IMAGES, why, sizeof why))
            return;
    }
    if (session_config_finish(&cfg, why, sizeof why)) return;
    FUZZ_ASSERT(cfg.max_images >= 1 && cfg.max_images <= SERVER_MAX_IMAGES);
    FUZZ_ASSERT(cfg.overlap >= 1 && cfg.overlap < cfg.chunk_size);
}

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t len) {
    const char *text = (const char *)bytes;
    const char *data;
    size_t data_len;
    json_t *rest;
    if (image_message_split(text, len, &data, &data_len, &rest) == 0) {
        FUZZ_ASSERT(data > text && data + data_len < text + len);
        FUZZ_ASSERT(data[-1] == '"' && data[data_len] == '"');
        FUZZ_ASSERT(!memchr(data, '"', data_len) && !memchr(data, '\\', data_len));
        FUZZ_ASSERT(json_is_object(rest));
        json_t *d = json_object_get(rest, "data");
        FUZZ_ASSERT(json_is_string(d) && json_string_length(d) == 0);
        json_t *full = json_loadb_bounded(text, len, JSON_MAX_DEPTH_CLIENT, NULL);
        if (full) {
            json_t *fd = json_object_get(full, "data");
            FUZZ_ASSERT(json_is_string(fd) && json_string_length(fd) == data_len);
            FUZZ_ASSERT(memcmp(json_string_value(fd), data, data_len) == 0);
            json_object_set_new(full, "data", json_string(""));
            FUZZ_ASSERT(json_equal(full, rest));
            json_decref(full);
        }
        const char *type = json_string_value(json_object_get(rest, "type"));
        if (type && !strcmp(type, "image")) image_fields(data, data_len, rest);
        json_decref(rest);
    }

    json_error_t jerr;
    json_t *msg = json_loadb_bounded(text, len, JSON_MAX_DEPTH_CLIENT, &jerr);
    if (!msg) return 0;
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (json_is_object(msg) && type) {
        if (!strcmp(type, "image")) {
            json_t *d = json_object_get(msg, "data");
            image_fields(json_string_value(d), json_string_length(d), msg);
        } else if (!strcmp(type, "init")) {
            init_fields(msg, 1);
        } else if (!strcmp(type, "generate")) {
            (void)json_is_true(json_object_get(msg, "incremental"));
        }
    }
    json_decref(msg);
    return 0;
}
