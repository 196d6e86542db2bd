/* json_loadb_bounded refuses nesting beyond its limit before Jansson recurses (brackets in strings
 * and escapes do not fool it), and otherwise parses exactly what json_loadb parses. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/json_bounded.h"
#include "tests/unit/check.h"

static const char *too_deep_32 = "JSON nested deeper than 32 levels";

/* "[[[...]]]" with `depth` levels (arrays) or {"a":{"a":...1}} (objects); caller frees. */
static char *nested(int depth, int objects, int closed) {
    size_t cap = (size_t)depth * 6 + 8, n = 0;
    char *t = malloc(cap);
    for (int i = 0; i < depth; i++) n += (size_t)sprintf(t + n, "%s", objects ? "{\"a\":" : "[");
    n += (size_t)sprintf(t + n, "1");
    for (int i = 0; closed && i < depth; i++) t[n++] = objects ? '}' : ']';
    t[n] = 0;
    return t;
}

static void test_limits(void) {
    for (int objects = 0; objects < 2; objects++) {
        json_error_t err;
        char *at = nested(JSON_MAX_DEPTH_CLIENT, objects, 1), *over = nested(JSON_MAX_DEPTH_CLIENT + 1, objects, 1);
        json_t *o = json_loadb_bounded(at, strlen(at), JSON_MAX_DEPTH_CLIENT, &err);
        CHECK_MSG(o != NULL, "depth 32 (%s) refused: %s", objects ? "objects" : "arrays", err.text);
        json_decref(o);
        o = json_loadb_bounded(over, strlen(over), JSON_MAX_DEPTH_CLIENT, &err);
        CHECK_MSG(o == NULL && !strcmp(err.text, too_deep_32), "depth 33: %s", o ? "parsed" : err.text);
        CHECK(err.position == (objects ? 5 * 32 : 32) && err.line == 1);
        json_decref(o);
        CHECK(json_nesting_depth(at, strlen(at), 1000) == 32);
        CHECK(json_nesting_depth(over, strlen(over), 10) == 11); /* stops early */
        free(at);
        free(over);
    }
    /* Scalars and empty containers. */
    json_error_t err;
    json_t *o = json_loadb_bounded("[7]", 3, 1, &err);
    CHECK(json_integer_value(json_array_get(o, 0)) == 7);
    json_decref(o);
    o = json_loadb_bounded("7", 1, 1, &err); /* flags 0, as json_loadb(..., 0, ...): a container only */
    CHECK(o == NULL && strstr(err.text, "deeper") == NULL);
    o = json_loadb_bounded("[]", 2, 1, &err);
    CHECK(json_is_array(o));
    json_decref(o);
    o = json_loadb_bounded("[[]]", 4, 1, &err);
    CHECK(o == NULL && strstr(err.text, "deeper than 1 level"));
    /* A NULL err is allowed; a max_depth under 1 means 1. */
    o = json_loadb_bounded("[[]]", 4, 0, NULL);
    CHECK(o == NULL);
    /* Malformed input still gets Jansson's own message. */
    o = json_loadb_bounded("[1,", 3, 4, &err);
    CHECK(o == NULL && strstr(err.text, "deeper") == NULL && err.text[0]);
    o = json_loadb_bounded("]]]]]][", 7, 1, &err); /* stray closers never make depth negative */
    CHECK(o == NULL && strstr(err.text, "deeper") == NULL);
    /* The error names the line and column of the bracket that went too deep. */
    o = json_loadb_bounded("[\n [\n  [", 8, 2, &err);
    CHECK_MSG(o == NULL && err.line == 3 && err.column == 3 && err.position == 7, "line %d col %d pos %d", err.line,
              err.column, err.position);
}

static void expect_parses(const char *text, int max_depth) {
    json_error_t err;
    json_t *o = json_loadb_bounded(text, strlen(text), max_depth, &err);
    CHECK_MSG(o != NULL, "%s refused at depth %d: %s", text, max_depth, err.text);
    json_decref(o);
}

static void expect_too_deep(const char *text, int max_depth) {
    json_error_t err;
    json_t *o = json_loadb_bounded(text, strlen(text), max_depth, &err);
    CHECK_MSG(o == NULL && strstr(err.text, "nested deeper"), "%s not refused at depth %d", text, max_depth);
    json_decref(o);
}

static void test_strings(void) {
    /* Brackets inside strings do not count, escaped quotes do not end strings. */
    expect_parses("[\"[[[[[[[[[[{{{{{{{{\"]", 1);
    expect_parses("{\"[[[[\":\"]]]]{{{{\"}", 1);
    expect_parses("[\"\\\"[[[[[\"]", 1);          /* ["\"[[[[["] */
    expect_parses("[\"\\\\\",\"[[[[\"]", 1);      /* ["\\","[[[["]: the second quote ends the first string */
    expect_too_deep("[\"\\\\\",[[1]]]", 2);        /* ["\\",[[1]]]: real brackets after an escaped backslash */
    expect_parses("[\"\\u005b\\u005b\\u005b\"]", 1);
    expect_too_deep("[\"a\",[\"b\",[\"c\"]]]", 2);
    expect_parses("[\"a\",[\"b\",[\"c\"]]]", 3);
    /* An unterminated string swallows the rest: Jansson refuses it, nothing is counted. */
    json_error_t err;
    const char *open = "[\"[[[[[[[[[[[[";
    json_t *o = json_loadb_bounded(open, strlen(open), 2, &err);
    CHECK(o == NULL && strstr(err.text, "deeper") == NULL);
    /* A backslash as the very last byte. */
    o = json_loadb_bounded("[\"\\", 3, 2, &err);
    CHECK(o == NULL);
}

/* A bounded parse must not recurse: 100,000 levels on a 512 KB stack (Jansson needs megabytes for
 * that; the stack is not smaller because libtorch's static TLS, linked into the test, comes out of it). */
static void *deep_on_small_stack(void *arg) {
    (void)arg;
    char *t = nested(100000, 1, 0);
    json_error_t err;
    json_t *o = json_loadb_bounded(t, strlen(t), JSON_MAX_DEPTH_CLIENT, &err);
    free(t);
    return o == NULL && !strcmp(err.text, too_deep_32) ? (void *)1 : NULL;
}

static void test_huge(void) {
    size_t n = 10u << 20;
    char *t = malloc(n);
    memset(t, '[', n);
    json_error_t err;
    json_t *o = json_loadb_bounded(t, n, JSON_MAX_DEPTH_CLIENT, &err);
    /* The refusal names the byte where the scan stopped: it read no further than the limit. */
    CHECK(o == NULL && !strcmp(err.text, too_deep_32) && err.position == 32);
    /* The same inside one string: scanned to the end (linear), then parsed as one string. */
    t[1] = '"';
    t[n - 2] = '"';
    t[n - 1] = ']';
    o = json_loadb_bounded(t, n, 1, &err);
    CHECK_MSG(json_is_string(json_array_get(o, 0)) && json_string_length(json_array_get(o, 0)) == n - 4,
              "10 MB string: %s", err.text);
    json_decref(o);
    free(t);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 512 << 10);
    pthread_t th;
    void *ok = NULL;
    int rc = pthread_create(&th, &attr, deep_on_small_stack, NULL);
    CHECK_MSG(rc == 0, "pthread_create: %s", strerror(rc));
    CHECK(rc == 0 && pthread_join(th, &ok) == 0 && ok);
    pthread_attr_destroy(&attr);
}

static uint32_t rng = 12345;
static uint32_t next(void) { return rng = rng * 1103515245u + 12345u, rng >> 8; }

/* A random string with the characters that matter to the scanner. */
static json_t *random_string(void) {
    static const char *pieces[] = {"[", "]", "{", "}", "\"", "\\", "a", ":", ",", "\xc3\xa9", "\n", " "};
    char buf[64];
    int n = (int)(next() % 12), len = 0;
    for (int i = 0; i < n; i++) len += snprintf(buf + len, sizeof buf - (size_t)len, "%s", pieces[next() % 12]);
    buf[len] = 0;
    return json_string(buf);
}

/* A random document of at most max_depth levels; *depth gets its real depth. */
static json_t *random_doc(int max_depth, int *depth) {
    *depth = 0;
    int kind = (int)(next() % (max_depth > 0 ? 6 : 3));
    if (kind == 0) return random_string();
    if (kind == 1) return json_integer((json_int_t)next() - (1 << 23));
    if (kind == 2) return next() % 2 ? json_real((double)next() / 7.0) : json_null();
    json_t *c = kind % 2 ? json_array() : json_object();
    int n = (int)(next() % 4), inner = 0;
    for (int i = 0; i < n; i++) {
        int d;
        json_t *v = random_doc(max_depth - 1, &d);
        if (d > inner) inner = d;
        if (json_is_array(c)) {
            json_array_append_new(c, v);
        } else {
            json_t *k = random_string();
            json_object_set_new(c, json_string_value(k), v);
            json_decref(k);
        }
    }
    *depth = inner + 1;
    return c;
}

/* The nesting depth of a parsed document (a duplicate key may have replaced a deeper value). */
static int doc_depth(json_t *v) {
    int inner = 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = doc_depth(json_array_get(v, i));
            if (d > inner) inner = d;
        }
        return inner + 1;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            int d = doc_depth(x);
            if (d > inner) inner = d;
        }
        return inner + 1;
    }
    return 0;
}

/* Valid documents round-trip exactly as with json_loadb, and are refused exactly when deeper. */
static void test_round_trips(void) {
    for (int iter = 0; iter < 3000; iter++) {
        int depth;
        json_t *doc = random_doc(8, &depth);
        depth = doc_depth(doc);
        char *text = json_dumps(doc, JSON_ENCODE_ANY | (iter % 2 ? JSON_INDENT(1) : JSON_COMPACT));
        json_error_t e1, e2;
        json_t *plain = json_loadb(text, strlen(text), JSON_DECODE_ANY, &e1);
        CHECK(plain != NULL);
        int limit = (int)(next() % 9) + 1;
        CHECK_MSG(json_nesting_depth(text, strlen(text), 100) == depth, "depth of %s: %d vs %d", text,
                  json_nesting_depth(text, strlen(text), 100), depth);
        json_t *bounded = json_loadb_bounded(text, strlen(text), limit, &e2);
        if (depth > limit) {
            CHECK_MSG(bounded == NULL && strstr(e2.text, "nested deeper"), "depth %d over %d accepted: %s", depth, limit,
                      text);
        } else if (depth > 0) { /* json_loadb_bounded takes containers (no JSON_DECODE_ANY), like json_loadb(0) */
            CHECK_MSG(bounded && json_equal(bounded, plain), "round trip differs: %s", text);
        }
        json_decref(bounded);
        json_decref(plain);
        json_decref(doc);
        free(text);
    }
}

/* Random bytes from the scanner's alphabet: whatever Jansson accepts within the limit, the bounded
 * parse accepts with the same value; whatever it refuses, so does the bounded parse. */
static void test_fuzz(void) {
    static const char alphabet[] = "[]{}\"\\:,a1 \n";
    char text[96];
    int agreed = 0;
    for (int iter = 0; iter < 200000; iter++) {
        size_t n = next() % (sizeof text);
        for (size_t i = 0; i < n; i++) text[i] = alphabet[next() % (sizeof alphabet - 1)];
        json_error_t e1, e2;
        json_t *plain = json_loadb(text, n, 0, &e1);
        json_t *bounded = json_loadb_bounded(text, n, 4, &e2);
        int depth = json_nesting_depth(text, n, 100);
        if (plain && depth <= 4) {
            CHECK_MSG(bounded && json_equal(bounded, plain), "%.*s", (int)n, text);
            agreed++;
        } else {
            CHECK_MSG(bounded == NULL, "%.*s", (int)n, text);
        }
        json_decref(plain);
        json_decref(bounded);
    }
    CHECK(agreed > 0);
}

static void test_files(void) {
    char dir[] = "/tmp/da3-json-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/a.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"name\":\"x\",\"n\":[1,[2]]}", f);
    fclose(f);
    json_error_t err;
    json_t *o = json_load_file_bounded(path, 1024, 4, &err);
    CHECK(o && !strcmp(json_string_value(json_object_get(o, "name")), "x"));
    json_decref(o);
    o = json_load_file_bounded(path, 10, 4, &err);
    CHECK(o == NULL && strstr(err.text, "larger than 10 bytes"));
    o = json_load_file_bounded(path, 1024, 1, &err);
    CHECK(o == NULL && strstr(err.text, "deeper than 1 level"));
    unlink(path);
    o = json_load_file_bounded(path, 1024, 4, &err);
    CHECK(o == NULL && strstr(err.text, "cannot open"));
    rmdir(dir);
}

int main(void) {
    test_limits();
    test_strings();
    test_huge();
    test_round_trips();
    test_fuzz();
    test_files();
    CHECK_DONE("test_json_bounded");
}
