/* A linear pre-scan that bounds JSON nesting before Jansson (which recurses per level) runs. */
#include "common/json_bounded.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Where the scan stopped and why, for the error report. */
typedef struct {
    int depth;       /* deepest level reached (capped at stop_above + 1) */
    size_t position; /* offset of the bracket that went too deep */
    int line, column;
} scan_result;

static void scan(const char *t, size_t n, int stop_above, scan_result *r) {
    int depth = 0, line = 1, column = 0;
    int in_string = 0;
    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        column++;
        if (in_string) {
            if (c == '\\') {
                i++; /* the escaped character cannot end the string; \uXXXX's digits are plain */
                column++;
            } else if (c == '"') {
                in_string = 0;
            } else if (c == '\n') { /* invalid in JSON, but keep the position honest */
                line++;
                column = 0;
            }
            continue;
        }
        switch (c) {
        case '"': in_string = 1; break;
        case '[':
        case '{':
            if (++depth > r->depth) r->depth = depth;
            if (depth > stop_above) {
                r->position = i;
                r->line = line;
                r->column = column;
                return;
            }
            break;
        case ']':
        case '}':
            if (depth > 0) depth--; /* a stray closer is the parser's to refuse */
            break;
        case '\n':
            line++;
            column = 0;
            break;
        default: break;
        }
    }
}

int json_nesting_depth(const char *text, size_t len, int stop_above) {
    scan_result r;
    scan(text, len, stop_above, &r);
    return r.depth;
}

static void fill_error(json_error_t *err, int line, int column, size_t position, const char *msg) {
    if (!err) return;
    memset(err, 0, sizeof *err);
    err->line = line;
    err->column = column;
    err->position = (int)(position > 0x7fffffff ? 0x7fffffff : position);
    snprintf(err->source, sizeof err->source, "<buffer>");
    snprintf(err->text, sizeof err->text, "%s", msg);
}

json_t *json_loadb_bounded(const char *text, size_t len, int max_depth, json_error_t *err) {
    if (!text) {
        fill_error(err, -1, -1, 0, "no JSON text");
        return NULL;
    }
    if (max_depth < 1) max_depth = 1;
    scan_result r;
    scan(text, len, max_depth, &r);
    if (r.depth > max_depth) {
        char msg[96];
        snprintf(msg, sizeof msg, "JSON nested deeper than %d levels", max_depth);
        fill_error(err, r.line, r.column, r.position, msg);
        return NULL;
    }
    json_error_t local;
    return json_loadb(text, len, 0, err ? err : &local);
}

json_t *json_load_file_bounded(const char *path, size_t max_bytes, int max_depth, json_error_t *err) {
    char msg[160];
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(msg, sizeof msg, "cannot open: %s", strerror(errno));
        fill_error(err, -1, -1, 0, msg);
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size < 0 || (unsigned long long)st.st_size > max_bytes) {
        snprintf(msg, sizeof msg, "file larger than %zu bytes", max_bytes);
        fill_error(err, -1, -1, 0, msg);
        fclose(f);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size ? size : 1);
    size_t got = buf ? fread(buf, 1, size, f) : 0;
    fclose(f);
    if (!buf || got != size) {
        fill_error(err, -1, -1, 0, buf ? "short read" : "out of memory");
        free(buf);
        return NULL;
    }
    json_t *o = json_loadb_bounded(buf, size, max_depth, err);
    if (err && !o) snprintf(err->source, sizeof err->source, "%.*s", (int)sizeof err->source - 1, path);
    free(buf);
    return o;
}
