/* Fuzzes common/json_bounded.c, the depth pre-scan every parse of client input goes through:
 * json_nesting_depth, json_loadb_bounded and json_load_file_bounded (through a memfd, so nothing
 * touches the disk). Invariants:
 *   - the scan's depth is capped at stop_above + 1, and a lower cap gives the same answer capped;
 *   - text deeper than the limit is refused with the "nested deeper" message at a real bracket;
 *   - otherwise the bounded parse agrees with Jansson's own (both fail, or both give equal values),
 *     and the scan's depth is exactly the parsed value's depth (strings and escapes skipped right)
 *     when the text has no duplicate keys (else at least it: Jansson keeps the last duplicate);
 *   - an accepted value dumps and parses back equal;
 *   - the file reader gives the same answer as the buffer parser, and refuses a file one byte
 *     over its size limit (checked for one input in 16, see below). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/json_bounded.h"
#include "fuzz_util.h"

/* Depth of a parsed value, counted as the scan counts brackets. Recursion is bounded by Jansson's
 * own parser limit on what it could have built. */
static int value_depth(const json_t *v) {
    int deepest = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = value_depth(json_array_get(v, i));
            if (d > deepest) deepest = d;
        }
        return deepest + 1;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            int d = value_depth(x);
            if (d > deepest) deepest = d;
        }
        return deepest + 1;
    }
    return 0;
}

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    memfd = memfd_create("fuzz-json", MFD_CLOEXEC);
    if (memfd < 0) abort();
    return 0;
}

/* Replaces the memfd's whole content with data and returns a path that opens it. */
static const char *memfd_path(const uint8_t *data, size_t size, char *path, size_t cap) {
    FUZZ_ASSERT(ftruncate(memfd, 0) == 0);
    FUZZ_ASSERT(pwrite(memfd, data, size, 0) == (ssize_t)size);
    snprintf(path, cap, "/proc/self/fd/%d", memfd);
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *t = (const char *)data;
    const int max = JSON_MAX_DEPTH_CLIENT;
    int d = json_nesting_depth(t, size, max);
    FUZZ_ASSERT(d >= 0 && d <= max + 1);
    int d4 = json_nesting_depth(t, size, 4);
    FUZZ_ASSERT(d4 == (d > 4 ? 5 : d));

    json_error_t err;
    json_t *o = json_loadb_bounded(t, size, max, &err);
    if (d > max) {
        FUZZ_ASSERT(!o);
        FUZZ_ASSERT(strstr(err.text, "nested deeper") != NULL);
        FUZZ_ASSERT(err.position >= 0 && (size_t)err.position < size);
        FUZZ_ASSERT(t[err.position] == '[' || t[err.position] == '{');
    } else {
        json_error_t ref_err;
        json_t *ref = json_loadb(t, size, 0, &ref_err);
        FUZZ_ASSERT(!o == !ref);
        if (o) {
            FUZZ_ASSERT(json_equal(o, ref));
            /* The scan measures the text; Jansson keeps the last of duplicate keys, so a deeper
             * earlier duplicate leaves the value shallower than the text (found by this harness:
             * corpus regress-duplicate-key-depth). Equal when the text has no duplicates. */
            FUZZ_ASSERT(value_depth(o) <= d);
            json_t *strict = json_loadb(t, size, JSON_REJECT_DUPLICATES, &ref_err);
            if (strict) FUZZ_ASSERT(value_depth(o) == d);
            json_decref(strict);
        }
        json_decref(ref);
    }
    if (o) {
        char *text = json_dumps(o, JSON_COMPACT);
        FUZZ_ASSERT(text != NULL);
        json_t *again = json_loadb_bounded(text, strlen(text), max, NULL);
        FUZZ_ASSERT(again && json_equal(again, o));
        json_decref(again);
        free(text);
    }

    /* The file reader's own part is a few lines around the same parser, and its system calls cost
     * five times the parse: only one input in 16 (chosen by its bytes, so a rerun takes the same
     * path) goes through it, to spend the executions on the scan. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 16777619u;
    if (h % 16) {
        json_decref(o);
        return 0;
    }
    char path[64];
    memfd_path(data, size, path, sizeof path);
    json_error_t ferr;
    json_t *f = json_load_file_bounded(path, size, max, &ferr);
    FUZZ_ASSERT(!f == !o);
    if (f) FUZZ_ASSERT(json_equal(f, o));
    json_decref(f);
    if (size > 0) {
        json_t *over = json_load_file_bounded(path, size - 1, max, &ferr);
        FUZZ_ASSERT(!over && strstr(ferr.text, "larger than") != NULL);
    }
    json_decref(o);
    return 0;
}
