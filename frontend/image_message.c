#include "frontend/image_message.h"

#include <stdlib.h>
#include <string.h>

#include "common/json_bounded.h"

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Returns the offset of the opening quote of the top-level "data" value, or -1. Walks the text
 * as JSON tokens only until that key, so the cost is the size of the keys before it. */
static long find_data_value(const char *t, size_t n) {
    int depth = 0;
    char prev = 0; /* last structural character outside strings */
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (is_space(c)) continue;
        if (c == '"') {
            size_t start = i + 1, j = start;
            while (j < n && t[j] != '"') j += t[j] == '\\' ? 2 : 1;
            if (j >= n) return -1;
            int is_key = depth == 1 && (prev == '{' || prev == ',');
            if (is_key && j - start == 4 && !memcmp(t + start, "data", 4)) {
                size_t k = j + 1;
                while (k < n && is_space(t[k])) k++;
                if (k >= n || t[k] != ':') return -1;
                k++;
                while (k < n && is_space(t[k])) k++;
                return k < n && t[k] == '"' ? (long)k : -1;
            }
            i = j;
            prev = '"';
            continue;
        }
        if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') depth--;
        prev = c;
    }
    return -1;
}

int image_message_split(const char *text, size_t len, const char **data, size_t *data_len,
                        json_t **rest) {
    long open = find_data_value(text, len);
    if (open < 0) return -1;
    const char *start = text + open + 1;
    const char *close = memchr(start, '"', len - (size_t)(open + 1));
    /* Base64 never needs escapes; anything escaped takes the general path. */
    if (!close || memchr(start, '\\', (size_t)(close - start))) return -1;
    size_t head = (size_t)(start - text), tail = len - (size_t)(close - text);
    char *copy = malloc(head + tail);
    if (!copy) return -1;
    memcpy(copy, text, head);
    memcpy(copy + head, close, tail);
    /* Bounded like json_loadb_bounded (the same pre-scan), but duplicate keys refused: the span
     * above is the first top-level "data", while Jansson (the general path) keeps the last one,
     * so {"data":"A...","data":""} would store an image no JSON reader of the message sees.
     * Such a message takes the general path, where every reader agrees. */
    json_error_t jerr;
    json_t *o = json_nesting_depth(copy, head + tail, JSON_MAX_DEPTH_CLIENT) > JSON_MAX_DEPTH_CLIENT
                    ? NULL
                    : json_loadb(copy, head + tail, JSON_REJECT_DUPLICATES, &jerr);
    free(copy);
    json_t *d = json_object_get(o, "data");
    if (!json_is_object(o) || !json_is_string(d) || json_string_length(d) != 0) {
        json_decref(o);
        return -1;
    }
    *data = start;
    *data_len = (size_t)(close - start);
    *rest = o;
    return 0;
}
