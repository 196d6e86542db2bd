/* Fuzzes the HTTP create parameters (frontend/http_api.c's handle_create, static and bound to
 * CivetWeb's connection, so its parsing is repeated here in its order): the input is a query
 * string, then optionally a NUL byte and a JSON body. Each parameter name is looked up in the
 * query with CivetWeb's mg_get_var (URL-decoding into 256 bytes) and applied as text with
 * session_config_set; the body is parsed with json_loadb_bounded and each parameter present
 * applied as a JSON value; then session_config_finish. Invariants of an accepted configuration:
 * every setting in its documented range, overlap < chunk_size, not streaming with
 * auto_generate_after; session_config_json and session_config_from_json (what session.json
 * stores and a restart reads) give back the same settings (chunking only for a streaming
 * session, the only one that stores and uses it); session_config_equal is reflexive. */
#include <civetweb.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_bounded.h"
#include "common/protocol.h"
#include "frontend/session_config.h"
#include "fuzz_util.h"

#define SERVER_MAX_IMAGES 1000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t qlen = nul ? (size_t)(nul - data) : size;
    char *qs = malloc(qlen + 1);
    FUZZ_ASSERT(qs);
    memcpy(qs, data, qlen);
    qs[qlen] = 0;
    const char *body = nul ? (const char *)nul + 1 : NULL;
    size_t blen = nul ? size - qlen - 1 : 0;

    session_config cfg;
    session_config_default_client(&cfg, SERVER_MAX_IMAGES, 0);
    char err[256], value[256];
    int refused = 0;
    for (size_t i = 0; i < session_config_name_count && !refused; i++) {
        int got = mg_get_var(qs, qlen, session_config_names[i], value, sizeof value);
        FUZZ_ASSERT(got < (int)sizeof value);
        if (got >= 0) {
            FUZZ_ASSERT(memchr(value, 0, sizeof value) != NULL);
            if (session_config_set(&cfg, session_config_names[i], value, NULL, SERVER_MAX_IMAGES, err, sizeof err)) {
                FUZZ_ASSERT(err[0] != 0);
                refused = 1;
            }
        }
    }
    free(qs);
    if (!refused && body && blen > 0) {
        json_error_t jerr;
        json_t *o = json_loadb_bounded(body, blen, JSON_MAX_DEPTH_CLIENT, &jerr);
        if (!json_is_object(o)) refused = 1;
        for (size_t i = 0; i < session_config_name_count && !refused; i++) {
            json_t *v = json_object_get(o, session_config_names[i]);
            if (v && !json_is_null(v) &&
                session_config_set(&cfg, session_config_names[i], NULL, v, SERVER_MAX_IMAGES, err, sizeof err))
                refused = 1;
        }
        json_decref(o);
    }
    if (refused || session_config_finish(&cfg, err, sizeof err)) return 0;

    FUZZ_ASSERT(cfg.max_images >= 1 && cfg.max_images <= SERVER_MAX_IMAGES);
    FUZZ_ASSERT(cfg.process_res >= DA3_PATCH_SIZE && cfg.process_res <= SESSION_MAX_PROCESS_RES);
    FUZZ_ASSERT(cfg.conf_thresh_percentile >= 0 && cfg.conf_thresh_percentile <= 100);
    FUZZ_ASSERT(cfg.num_max_points >= 1 && cfg.num_max_points <= SESSION_MAX_POINTS);
    FUZZ_ASSERT(cfg.auto_generate_after >= 0 && cfg.auto_generate_after <= SESSION_MAX_AUTO_GENERATE_AFTER);
    FUZZ_ASSERT(cfg.chunk_size >= 2 && cfg.chunk_size <= SESSION_MAX_CHUNK_SIZE);
    FUZZ_ASSERT(cfg.overlap >= 1 && cfg.overlap < cfg.chunk_size);
    FUZZ_ASSERT(!(cfg.streaming && cfg.auto_generate_after > 0));
    FUZZ_ASSERT(cfg.show_cameras == 0 || cfg.show_cameras == 1);
    FUZZ_ASSERT(strcmp(resize_method_name(cfg.method), "unknown") != 0);
    FUZZ_ASSERT(session_config_equal(&cfg, &cfg));

    /* Stored in session.json, read back at the next start. */
    json_t *j = session_config_json(&cfg);
    FUZZ_ASSERT(j);
    char *text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(j);
    FUZZ_ASSERT(text);
    json_t *parsed = json_loadb_bounded(text, strlen(text), JSON_MAX_DEPTH_CLIENT, NULL);
    free(text);
    FUZZ_ASSERT(parsed);
    json_t *max = json_integer(cfg.max_images);
    session_config back;
    session_config_default(&back, SERVER_MAX_IMAGES);
    session_config_from_json(&back, parsed, max);
    json_decref(max);
    json_decref(parsed);
    /* Chunking is stored only for a streaming session; the others never use it. */
    if (!cfg.streaming) {
        back.chunk_size = cfg.chunk_size;
        back.overlap = cfg.overlap;
    }
    FUZZ_ASSERT(session_config_equal(&back, &cfg));
    return 0;
}
