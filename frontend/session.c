#include "frontend/session.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/image_decode.h"
#include "common/log.h"
#include "common/session_files.h"
#include "common/util.h"

/* The registry: a plain array, since max_sessions is in the hundreds and every lookup is a
 * short scan under one mutex. */
static struct {
    pthread_mutex_t lock;
    session **items;
    int count, max;
    char root[512];
    int server_max_images;
    int fsync_writes;
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

const char *session_status_name(session_status st) {
    static const char *names[] = {"active", "processing", "completed", "error"};
    return names[st];
}

static int status_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, session_status_name((session_status)i))) return i;
    return SESSION_ACTIVE;
}

static session *session_new(const char *id) {
    session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    snprintf(s->id, sizeof s->id, "%s", id);
    if (fmt_path(s->dir, sizeof s->dir, "%s/%s", reg.root, id) ||
        fmt_path(s->image_dir, sizeof s->image_dir, "%s/images", s->dir)) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->write_lock, NULL);
    s->job_slot = -1;
    s->refs = 1; /* the registry's own reference */
    return s;
}

static void session_free(session *s) {
    for (int i = 0; i < s->image_count; i++) free(s->images[i].display);
    free(s->images);
    free(s->error_message);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->write_lock);
    free(s);
}

void session_touch(session *s) { s->last_activity = now_wall(); }

int session_save(session *s) {
    json_t *images = json_array();
    for (int i = 0; i < s->image_count; i++) {
        json_t *im = json_pack("{s:s}", "file", s->images[i].file);
        if (s->images[i].display) json_object_set_new(im, "name", json_string(s->images[i].display));
        if (s->images[i].has_camera) json_object_set_new(im, "camera", json_true());
        json_array_append_new(images, im);
    }
    json_t *o = json_pack("{s:s,s:f,s:f,s:s,s:i,s:o,s:o}", "session_id", s->id, "created_at",
                          s->created_at, "last_activity", s->last_activity, "status",
                          session_status_name(s->status), "max_images", s->cfg.max_images,
                          "config", session_config_json(&s->cfg), "images", images);
    if (s->error_message) json_object_set_new(o, "error_message", json_string(s->error_message));
    char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    char path[700];
    int rc = -1;
    if (text && !fmt_path(path, sizeof path, "%s/session.json", s->dir))
        rc = reg.fsync_writes ? write_file_atomic(path, text, strlen(text))
                              : write_file_atomic_nosync(path, text, strlen(text));
    if (rc) log_error("session %s: cannot save state: %s", s->id, strerror(errno));
    free(text);
    return rc;
}

/* Rebuilds one session from its folder; NULL (and a warning) when the state is unreadable. */
static session *session_load(const char *id) {
    session *s = session_new(id);
    if (!s) return NULL;
    char path[700];
    fmt_path(path, sizeof path, "%s/session.json", s->dir);
    json_error_t jerr;
    json_t *o = json_load_file(path, 0, &jerr);
    if (!json_is_object(o)) {
        log_warn("session %s: unreadable %s (%s); skipped", id, path, jerr.text);
        json_decref(o);
        session_free(s);
        return NULL;
    }
    session_config_default(&s->cfg, reg.server_max_images);
    session_config_from_json(&s->cfg, json_object_get(o, "config"), json_object_get(o, "max_images"));
    s->created_at = json_number_value(json_object_get(o, "created_at"));
    s->last_activity = json_number_value(json_object_get(o, "last_activity"));
    s->status = (session_status)status_parse(json_string_value(json_object_get(o, "status")));
    if (s->status == SESSION_PROCESSING) s->status = SESSION_ACTIVE; /* the job died with us */
    const char *em = json_string_value(json_object_get(o, "error_message"));
    if (em) s->error_message = strdup(em);
    json_t *images = json_object_get(o, "images");
    size_t n = json_array_size(images);
    s->images = calloc(n ? n : 1, sizeof *s->images);
    s->image_cap = (int)(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        json_t *im = json_array_get(images, i);
        const char *file = json_string_value(json_object_get(im, "file"));
        const char *name = json_string_value(json_object_get(im, "name"));
        char expect[600];
        /* Only names the server itself would have chosen are trusted back from disk. */
        if (!file || strlen(file) >= sizeof s->images[0].file || strchr(file, '/') ||
            session_image_find(expect, sizeof expect, s->image_dir, (int)i) ||
            strcmp(strrchr(expect, '/') + 1, file)) {
            log_warn("session %s: image %zu (%s) missing on disk; keeping the first %zu", id, i,
                     file ? file : "?", i);
            break;
        }
        snprintf(s->images[i].file, sizeof s->images[i].file, "%s", file);
        s->images[i].display = name ? strdup(name) : NULL;
        s->images[i].has_camera = json_is_true(json_object_get(im, "camera"));
        s->image_count = (int)i + 1;
    }
    json_decref(o);
    return s;
}

int sessions_init(const char *data_dir, int max_sessions, int server_max_images, int fsync_writes) {
    reg.max = max_sessions;
    reg.server_max_images = server_max_images;
    reg.fsync_writes = fsync_writes;
    if (fmt_path(reg.root, sizeof reg.root, "%s/sessions", data_dir) || mkdir_p(reg.root)) return -1;
    reg.items = calloc((size_t)max_sessions, sizeof *reg.items);
    DIR *d = opendir(reg.root);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_uuid(e->d_name)) continue;
        if (reg.count >= reg.max) {
            log_warn("more stored sessions than --max-sessions (%d); %s not loaded", reg.max, e->d_name);
            continue;
        }
        session *s = session_load(e->d_name);
        if (s) reg.items[reg.count++] = s;
    }
    closedir(d);
    return reg.count;
}

session *sessions_create(const session_config *cfg, int *http_status, char *err, size_t errlen) {
    char id[37];
    uuid4(id);
    session *s = session_new(id);
    if (!s) {
        *http_status = 500;
        snprintf(err, errlen, "Failed to create session: out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    s->created_at = s->last_activity = now_wall();
    s->status = SESSION_ACTIVE;
    pthread_mutex_lock(&reg.lock);
    int full = reg.count >= reg.max;
    if (!full) {
        reg.items[reg.count++] = s;
        s->refs++; /* the caller's reference */
    }
    pthread_mutex_unlock(&reg.lock);
    if (full) {
        /* Unlike the reference, never evict a live session to make room. */
        *http_status = 503;
        snprintf(err, errlen,
                 "Maximum number of sessions (%d) reached; delete a session or try again later",
                 reg.max);
        session_free(s);
        return NULL;
    }
    if (mkdir_p(s->image_dir) || session_save(s)) {
        *http_status = 500;
        snprintf(err, errlen, "Failed to create session: cannot write %s: %s", s->dir, strerror(errno));
        session *gone = sessions_remove(id);
        if (gone) sessions_put(gone);
        sessions_put(s);
        return NULL;
    }
    return s;
}

session *sessions_get(const char *id) {
    if (!is_uuid(id)) return NULL;
    session *found = NULL;
    pthread_mutex_lock(&reg.lock);
    for (int i = 0; i < reg.count; i++)
        if (!strcmp(reg.items[i]->id, id)) {
            found = reg.items[i];
            found->refs++;
            break;
        }
    pthread_mutex_unlock(&reg.lock);
    return found;
}

void sessions_put(session *s) {
    if (!s) return;
    pthread_mutex_lock(&reg.lock);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&reg.lock);
    if (last) session_free(s);
}

session *sessions_remove(const char *id) {
    session *found = NULL;
    pthread_mutex_lock(&reg.lock);
    for (int i = 0; i < reg.count; i++)
        if (!strcmp(reg.items[i]->id, id)) {
            found = reg.items[i];
            reg.items[i] = reg.items[--reg.count];
            found->deleted = 1;
            /* The registry's reference becomes the caller's. */
            break;
        }
    pthread_mutex_unlock(&reg.lock);
    if (found && remove_tree(found->dir))
        log_warn("session %s: could not remove %s: %s", id, found->dir, strerror(errno));
    return found;
}

int sessions_expired(double now, double timeout_s, session **out, int max) {
    int n = 0;
    pthread_mutex_lock(&reg.lock);
    for (int i = 0; i < reg.count && n < max; i++) {
        session *s = reg.items[i];
        pthread_mutex_lock(&s->lock);
        int idle = now - s->last_activity > timeout_s && s->job_slot < 0;
        pthread_mutex_unlock(&s->lock);
        if (idle) {
            s->refs++;
            out[n++] = s;
        }
    }
    pthread_mutex_unlock(&reg.lock);
    return n;
}

int sessions_snapshot(session **out, int max) {
    int n = 0;
    pthread_mutex_lock(&reg.lock);
    for (int i = 0; i < reg.count && n < max; i++) {
        reg.items[i]->refs++;
        out[n++] = reg.items[i];
    }
    pthread_mutex_unlock(&reg.lock);
    return n;
}

int sessions_count(void) {
    pthread_mutex_lock(&reg.lock);
    int n = reg.count;
    pthread_mutex_unlock(&reg.lock);
    return n;
}

int session_add_image(session *s, const uint8_t *data, size_t len, const char *display,
                      const known_camera *cam, char *stored_name, size_t name_cap, char *err, size_t errlen) {
    if (s->image_count >= s->cfg.max_images) {
        snprintf(err, errlen, "Session has reached maximum image limit (%d)", s->cfg.max_images);
        return -1;
    }
    /* The network takes known cameras for every view or for none: refuse a mix up front rather
     * than fail the reconstruction later. */
    if (s->image_count > 0 && !!cam != !!s->images[0].has_camera) {
        snprintf(err, errlen,
                 cam ? "this session's images were sent without cameras; send 'extrinsics' and "
                       "'intrinsics' with every image of a session, or with none"
                     : "this session's images were sent with known cameras ('extrinsics' and "
                       "'intrinsics'); send them with this image too");
        return -1;
    }
    char why[256];
    if (image_validate(data, len, NULL, NULL, why, sizeof why)) {
        snprintf(err, errlen, "Invalid image data: %s", why);
        return -1;
    }
    if (cam && camera_check_image(data, len, err, errlen)) return -1;
    if (s->image_count == s->image_cap) {
        int cap = s->image_cap ? s->image_cap * 2 : 16;
        session_image *grown = realloc(s->images, (size_t)cap * sizeof *grown);
        if (!grown) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        s->images = grown;
        s->image_cap = cap;
    }
    int idx = s->image_count;
    char path[700];
    image_format fmt = image_sniff(data, len);
    /* The camera goes first (or a stale one from an unrecorded upload goes): the image file and
     * session.json are what make the upload count. */
    if (cam ? camera_file_write(s->image_dir, idx, cam, reg.fsync_writes) : (camera_file_remove(s->image_dir, idx), 0)) {
        snprintf(err, errlen, "cannot store the camera: %s", strerror(errno));
        return -1;
    }
    if (session_image_path(path, sizeof path, s->image_dir, idx, fmt) ||
        (reg.fsync_writes ? write_file_atomic(path, data, len) : write_file_atomic_nosync(path, data, len))) {
        snprintf(err, errlen, "cannot store the image: %s", strerror(errno));
        if (cam) camera_file_remove(s->image_dir, idx);
        return -1;
    }
    session_image *im = &s->images[idx];
    snprintf(im->file, sizeof im->file, "%s", strrchr(path, '/') + 1);
    im->display = display ? strdup(display) : NULL;
    im->has_camera = cam != NULL;
    s->image_count++;
    session_touch(s);
    if (session_save(s)) {
        /* Keep memory and disk in agreement: forget the image we could not record. */
        s->image_count--;
        free(im->display);
        unlink(path);
        if (cam) camera_file_remove(s->image_dir, idx);
        snprintf(err, errlen, "cannot record the image in the session state");
        return -1;
    }
    snprintf(stored_name, name_cap, "%s", im->file);
    return 0;
}

json_t *session_info_json(const session *s) {
    return json_pack("{s:s,s:f,s:f,s:s,s:i,s:i,s:o}", "session_id", s->id, "created_at",
                     s->created_at, "last_activity", s->last_activity, "status",
                     session_status_name(s->status), "image_count", s->image_count, "max_images",
                     s->cfg.max_images, "error_message",
                     s->error_message ? json_string(s->error_message) : json_null());
}

json_t *sessions_list_json(double session_timeout) {
    /* Sized by --max-sessions (up to 100,000), so it lives on the heap, not the stack. */
    session **all = malloc((size_t)reg.max * sizeof *all);
    int n = all ? sessions_snapshot(all, reg.max) : 0;
    json_t *list = json_array();
    int active = 0, processing = 0, images = 0;
    for (int i = 0; i < n; i++) {
        session *s = all[i];
        pthread_mutex_lock(&s->lock);
        active += s->status == SESSION_ACTIVE;
        processing += s->status == SESSION_PROCESSING;
        images += s->image_count;
        json_array_append_new(list, json_pack("{s:s,s:f,s:f,s:s,s:i}", "session_id", s->id,
                                              "created_at", s->created_at, "last_activity",
                                              s->last_activity, "status",
                                              session_status_name(s->status), "image_count",
                                              s->image_count));
        pthread_mutex_unlock(&s->lock);
        sessions_put(s);
    }
    free(all);
    json_t *stats = json_pack("{s:i,s:i,s:i,s:i,s:i,s:f}", "total_sessions", n, "active_sessions",
                              active, "processing_sessions", processing, "max_sessions", reg.max,
                              "total_images", images, "session_timeout", session_timeout);
    return json_pack("{s:o,s:o}", "stats", stats, "sessions", list);
}
