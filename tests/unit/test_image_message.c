/* The image-message fast path finds exactly the top-level "data" value, and declines anything
 * it cannot handle safely so the full parser decides. */
#include <string.h>

#include "frontend/image_message.h"
#include "tests/unit/check.h"

static void accepts(const char *text, const char *expect_data, const char *expect_filename) {
    const char *data;
    size_t n;
    json_t *rest = NULL;
    int rc = image_message_split(text, strlen(text), &data, &n, &rest);
    CHECK_MSG(rc == 0, "should split: %s", text);
    if (rc) return;
    CHECK_MSG(n == strlen(expect_data) && !memcmp(data, expect_data, n), "data of %s", text);
    CHECK(!strcmp(json_string_value(json_object_get(rest, "type")), "image"));
    const char *fn = json_string_value(json_object_get(rest, "filename"));
    CHECK_MSG(expect_filename ? fn && !strcmp(fn, expect_filename) : fn == NULL, "filename of %s", text);
    json_decref(rest);
}

static void declines(const char *text) {
    const char *data;
    size_t n;
    json_t *rest = NULL;
    CHECK_MSG(image_message_split(text, strlen(text), &data, &n, &rest) == -1, "should decline: %s", text);
}

int main(void) {
    accepts("{\"type\":\"image\",\"data\":\"QUJD\",\"filename\":\"a.jpg\"}", "QUJD", "a.jpg");
    accepts("{ \"filename\" : \"x\\\"data\\\":\\\"no\", \"type\":\"image\", \"data\" : \"QUJD\" }", "QUJD", "x\"data\":\"no");
    accepts("{\"meta\":{\"data\":\"nested\"},\"type\":\"image\",\"data\":\"Zm9v\"}", "Zm9v", NULL);
    accepts("{\"type\":\"image\",\"data\":\"\"}", "", NULL);
    declines("{\"type\":\"image\"}");
    declines("{\"type\":\"image\",\"data\":\"QU\\/JD\"}"); /* escaped: general path */
    declines("{\"type\":\"image\",\"data\":12}");
    declines("{\"type\":\"image\",\"data\":\"QUJD\",\"data\":\"x\"}"); /* duplicate key: let jansson decide */
    declines("{\"type\":\"image\",\"data\":\"QUJD\"");              /* truncated */
    declines("[\"data\",\"QUJD\"]");
    declines("{\"type\":\"image\",\"data\":\"QUJD");
    CHECK_DONE("test_image_message");
}
