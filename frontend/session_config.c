#include "frontend/session_config.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void session_config_default(session_config *c, int server_max_images) {
    c->max_images = server_max_images;
    c->process_res = PROTOCOL_DEFAULT_PROCESS_RES;
    c->method = PROTOCOL_DEFAULT_RESIZE_METHOD;
    c->conf_thresh_percentile = PROTOCOL_DEFAULT_CONF_THRESH_PERCENTILE;
    c->num_max_points = PROTOCOL_DEFAULT_NUM_MAX_POINTS;
    c->show_cameras = PROTOCOL_DEFAULT_SHOW_CAMERAS;
    c->auto_generate_after = 0;
    c->streaming = 0;
    c->chunk_size = SESSION_DEFAULT_CHUNK_SIZE;
    c->overlap = 0;
}

void session_config_default_client(session_config *c, int server_max_images, int protocol_v2) {
    session_config_default(c, server_max_images);
    if (c->max_images > 100) c->max_images = 100;
    if (protocol_v2) c->num_max_points = PROTOCOL_V2_DEFAULT_NUM_MAX_POINTS;
}

const char *const session_config_names[] = {"max_images",     "process_res",  "process_res_method", "conf_thresh_percentile",
                                            "num_max_points", "show_cameras", "auto_generate_after",
                                            "streaming",      "chunk_size",   "overlap"};
const size_t session_config_name_count = sizeof session_config_names / sizeof *session_config_names;

/* Reads an integer from text or a JSON integer (a JSON real with no fraction is accepted). */
static int get_long(const char *text, json_t *v, long *out) {
    if (text) {
        char *end;
        long x = strtol(text, &end, 10);
        if (!*text || *end) return -1;
        *out = x;
        return 0;
    }
    if (json_is_integer(v)) {
        *out = (long)json_integer_value(v);
        return 0;
    }
    /* Range first: converting a double outside long's range (1e300) is undefined behaviour, not
     * a large number the checks below would refuse. LONG_MIN is a power of two, so both bounds
     * are exact doubles. */
    if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v) &&
        json_real_value(v) >= (double)LONG_MIN && json_real_value(v) < -(double)LONG_MIN) {
        *out = (long)json_real_value(v);
        return 0;
    }
    return -1;
}

static int get_double(const char *text, json_t *v, double *out) {
    if (text) {
        char *end;
        double x = strtod(text, &end);
        if (!*text || *end) return -1;
        *out = x;
        return 0;
    }
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    return 0;
}

/* FastAPI's bool parsing accepts true/false, 1/0, yes/no, on/off (any case). */
static int get_bool(const char *text, json_t *v, int *out) {
    if (!text) {
        if (!json_is_boolean(v)) return -1;
        *out = json_is_true(v);
        return 0;
    }
    static const char *yes[] = {"true", "1", "yes", "on"}, *no[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(text, yes[i])) return *out = 1, 0;
        if (!strcasecmp(text, no[i])) return *out = 0, 0;
    }
    return -1;
}

int session_config_set(session_config *c, const char *name, const char *text, json_t *value,
                       int server_max_images, char *err, size_t errlen) {
    long l;
    double d;
    int b;
    if (!strcmp(name, "max_images")) {
        if (get_long(text, value, &l) || l < 1 || l > server_max_images) {
            snprintf(err, errlen, "max_images must be an integer in [1, %d]", server_max_images);
            return -1;
        }
        c->max_images = (int)l;
    } else if (!strcmp(name, "process_res")) {
        if (get_long(text, value, &l) || l < DA3_PATCH_SIZE || l > SESSION_MAX_PROCESS_RES) {
            snprintf(err, errlen, "process_res must be an integer in [%d, %d]", DA3_PATCH_SIZE,
                     SESSION_MAX_PROCESS_RES);
            return -1;
        }
        c->process_res = (int)l;
    } else if (!strcmp(name, "process_res_method")) {
        const char *s = text ? text : json_string_value(value);
        if (!s || resize_method_parse(s, &c->method)) {
            snprintf(err, errlen,
                     "process_res_method must be one of upper_bound_resize, upper_bound_crop, "
                     "lower_bound_resize, lower_bound_crop");
            return -1;
        }
    } else if (!strcmp(name, "conf_thresh_percentile")) {
        if (get_double(text, value, &d) || !(d >= 0 && d <= 100)) {
            snprintf(err, errlen, "conf_thresh_percentile must be a number in [0, 100]");
            return -1;
        }
        c->conf_thresh_percentile = d;
    } else if (!strcmp(name, "num_max_points")) {
        if (get_long(text, value, &l) || l < 1 || l > SESSION_MAX_POINTS) {
            snprintf(err, errlen, "num_max_points must be an integer in [1, %ld]", SESSION_MAX_POINTS);
            return -1;
        }
        c->num_max_points = l;
    } else if (!strcmp(name, "show_cameras")) {
        if (get_bool(text, value, &b)) {
            snprintf(err, errlen, "show_cameras must be a boolean (true/false)");
            return -1;
        }
        c->show_cameras = b;
    } else if (!strcmp(name, "auto_generate_after")) {
        if (get_long(text, value, &l) || l < 0 || l > SESSION_MAX_AUTO_GENERATE_AFTER) {
            snprintf(err, errlen, "auto_generate_after must be an integer in [0, %d] (0: off)",
                     SESSION_MAX_AUTO_GENERATE_AFTER);
            return -1;
        }
        c->auto_generate_after = (int)l;
    } else if (!strcmp(name, "streaming")) {
        if (get_bool(text, value, &b)) {
            snprintf(err, errlen, "streaming must be a boolean (true/false)");
            return -1;
        }
        c->streaming = b;
    } else if (!strcmp(name, "chunk_size")) {
        if (get_long(text, value, &l) || l < 2 || l > SESSION_MAX_CHUNK_SIZE) {
            snprintf(err, errlen, "chunk_size must be an integer in [2, %d]", SESSION_MAX_CHUNK_SIZE);
            return -1;
        }
        c->chunk_size = (int)l;
    } else if (!strcmp(name, "overlap")) {
        if (get_long(text, value, &l) || l < 1 || l >= SESSION_MAX_CHUNK_SIZE) {
            snprintf(err, errlen, "overlap must be an integer in [1, chunk_size - 1]");
            return -1;
        }
        c->overlap = (int)l;
    }
    return 0;
}

int session_config_finish(session_config *c, char *err, size_t errlen) {
    if (c->overlap == 0) c->overlap = c->chunk_size / 2;
    if (c->overlap >= c->chunk_size) {
        snprintf(err, errlen, "overlap must be an integer in [1, chunk_size - 1] (chunk_size is %d, overlap %d)",
                 c->chunk_size, c->overlap);
        return -1;
    }
    if (c->streaming && c->auto_generate_after > 0) {
        snprintf(err, errlen, "auto_generate_after cannot be combined with streaming: a streaming session "
                              "already sends a delta per chunk");
        return -1;
    }
    return 0;
}

int session_config_equal(const session_config *a, const session_config *b) {
    return a->max_images == b->max_images && a->process_res == b->process_res && a->method == b->method &&
           a->conf_thresh_percentile == b->conf_thresh_percentile && a->num_max_points == b->num_max_points &&
           a->show_cameras == b->show_cameras && a->auto_generate_after == b->auto_generate_after &&
           a->streaming == b->streaming && a->chunk_size == b->chunk_size && a->overlap == b->overlap;
}

json_t *session_config_json(const session_config *c) {
    json_t *o = json_pack("{s:i,s:s,s:f,s:I,s:b,s:i}", "process_res", c->process_res, "process_res_method",
                     resize_method_name(c->method), "conf_thresh_percentile",
                     c->conf_thresh_percentile, "num_max_points", (json_int_t)c->num_max_points,
                     "show_cameras", c->show_cameras, "auto_generate_after", c->auto_generate_after);
    /* Only a streaming session shows its chunking: other replies stay the reference's shape. */
    if (o && c->streaming) {
        json_object_set_new(o, "streaming", json_true());
        json_object_set_new(o, "chunk_size", json_integer(c->chunk_size));
        json_object_set_new(o, "overlap", json_integer(c->overlap));
    }
    return o;
}

void session_config_from_json(session_config *c, json_t *config, json_t *max_images) {
    char err[128];
    if (json_is_integer(max_images)) c->max_images = (int)json_integer_value(max_images);
    const char *key;
    json_t *v;
    json_object_foreach(config, key, v) session_config_set(c, key, NULL, v, 1 << 30, err, sizeof err);
    /* What was saved passed session_config_finish once; a file edited or damaged on disk gets
     * the nearest valid settings instead of ones the worker would refuse. */
    if (session_config_finish(c, err, sizeof err)) {
        if (c->overlap >= c->chunk_size) c->overlap = c->chunk_size / 2;
        if (c->streaming) c->auto_generate_after = 0;
    }
}
