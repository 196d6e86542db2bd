/* Server messages: exact field sets and texts of protocol v1, and the result message built
 * around an in-place base64 body. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/b64.h"
#include "frontend/messages.h"
#include "tests/unit/check.h"

static json_t *parse(char *text) {
    json_error_t e;
    json_t *o = json_loads(text, 0, &e);
    CHECK_MSG(o != NULL, "not JSON: %s", text);
    free(text);
    return o;
}

static int keys_are(json_t *o, const char *const *keys, size_t n) {
    if (json_object_size(o) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!json_object_get(o, keys[i])) return 0;
    return 1;
}

int main(void) {
    const char *sid = "0b1c7c1e-7f5e-4c0a-9f6e-2b9f1d2e3a4b";
    json_t *o = parse(msg_connected(sid, 3, 100));
    static const char *ck[] = {"type", "session_id", "image_count", "max_images"};
    CHECK(keys_are(o, ck, 4));
    CHECK(!strcmp(json_string_value(json_object_get(o, "type")), "connected"));
    CHECK(json_integer_value(json_object_get(o, "image_count")) == 3);
    json_decref(o);

    o = parse(msg_ack(sid, 2, "000001.png", NULL, 0, 0));
    static const char *ak[] = {"type", "image_count", "session_id", "image_path"};
    CHECK(keys_are(o, ak, 4));
    json_decref(o);
    o = parse(msg_ack(sid, 2, "000001.png", "my photo.png", 1, 1));
    CHECK(!strcmp(json_string_value(json_object_get(o, "filename")), "my photo.png"));
    CHECK(json_is_true(json_object_get(o, "camera")));
    CHECK(json_is_true(json_object_get(o, "filename_truncated")));
    json_decref(o);

    o = parse(msg_progress("inference", 0.3, "Processing 4 images..."));
    CHECK(json_real_value(json_object_get(o, "progress")) == 0.3);
    CHECK(!strcmp(json_string_value(json_object_get(o, "stage")), "inference"));
    json_decref(o);

    char *text = msg_error("Session x not found");
    CHECK(!strcmp(text, "{\"type\":\"error\",\"message\":\"Session x not found\"}"));
    free(text);
    /* Invalid UTF-8 in a message (e.g. from a client filename) still yields valid JSON. */
    o = parse(msg_error("bad \xff\xfe name"));
    CHECK(o && strstr(json_string_value(json_object_get(o, "message")), "bad") != NULL);
    json_decref(o);

    text = msg_pong(sid);
    CHECK(!strncmp(text, "{\"type\":\"pong\"", 14));
    free(text);

    /* Result: base64 body, metadata merged with session_id and glb_size_bytes. */
    uint8_t glb[1000];
    for (int i = 0; i < 1000; i++) glb[i] = (uint8_t)(i * 7);
    const char *meta = "{\"num_frames\":2,\"intrinsics\":[[[1,0,2],[0,1,2],[0,0,1]]]}";
    size_t len = 0;
    double extra[2] = {12.5, 3.25};
    text = msg_result("delta", 2, glb, sizeof glb, meta, strlen(meta), sid, extra, 0, &len);
    CHECK(text && strlen(text) == len);
    o = parse(text);
    CHECK(!strcmp(json_string_value(json_object_get(o, "type")), "delta"));
    CHECK(json_integer_value(json_object_get(o, "image_count")) == 2);
    const char *b64 = json_string_value(json_object_get(o, "glb_base64"));
    uint8_t back[1100];
    char err[64];
    CHECK(b64 && b64_decode(b64, strlen(b64), back, err, sizeof err) == 1000 && !memcmp(back, glb, 1000));
    json_t *m = json_object_get(o, "metadata");
    CHECK(json_integer_value(json_object_get(m, "glb_size_bytes")) == 1000);
    CHECK(!strcmp(json_string_value(json_object_get(m, "session_id")), sid));
    CHECK(json_integer_value(json_object_get(m, "num_frames")) == 2);
    CHECK(json_array_size(json_object_get(m, "intrinsics")) == 1);
    CHECK(json_real_value(json_object_get(json_object_get(m, "timing"), "queue_ms")) == 12.5);
    CHECK(json_object_get(m, "auto_generated") == NULL);
    json_decref(o);
    CHECK(msg_result("complete", 1, glb, 10, "not json", 8, sid, NULL, 0, &len) == NULL);
    /* An automatic run says so in its metadata. */
    text = msg_result("delta", 2, glb, 10, meta, strlen(meta), sid, NULL, 1, &len);
    o = parse(text);
    CHECK(json_is_true(json_object_get(json_object_get(o, "metadata"), "auto_generated")));
    json_decref(o);

    /* v2: pong before init has a null session_id; session_created echoes the config. */
    text = msg_pong(NULL);
    o = parse(text);
    CHECK(json_is_null(json_object_get(o, "session_id")) && json_object_get(o, "session_id") != NULL);
    json_decref(o);
    text = msg_session_created(sid, 7, json_pack("{s:i}", "process_res", 280), 0, 0);
    o = parse(text);
    CHECK(!strcmp(json_string_value(json_object_get(o, "type")), "session_created"));
    CHECK(json_integer_value(json_object_get(o, "max_images")) == 7);
    CHECK(json_integer_value(json_object_get(json_object_get(o, "config"), "process_res")) == 280);
    CHECK(json_object_get(o, "resumed") == NULL);
    json_decref(o);
    text = msg_session_created(sid, 7, NULL, 1, 5);
    o = parse(text);
    CHECK(json_is_true(json_object_get(o, "resumed")) && json_integer_value(json_object_get(o, "image_count")) == 5);
    json_decref(o);
    text = msg_auto_generating(12);
    CHECK(!strcmp(text, "{\"type\":\"auto_generating\",\"image_count\":12,\"message\":\"Auto-generating after 12 images\"}"));
    free(text);
    CHECK_DONE("test_messages");
}
