/* A session's state on disk: <root>/<id>/session.json holds config, status and timestamps (written
 * on status changes, never per upload); images/NNNNNN.{jpg,png,heic,webp} the bytes as received, each with
 * an optional NNNNNN.meta.json (display name) and NNNNNN.camera.json (known camera) written before
 * it, so the image file is what makes an upload count and reload is a scan of images/. Every file
 * is written to a temporary name and renamed, so a crash leaves the old or the new state. */
#include "frontend/session_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/json_bounded.h"
#include "common/log.h"
#include "common/session_files.h"
#include "common/util.h"

static int write_text(const session *s, const char *path, const char *text) {
    return s->fsync_writes ? write_file_atomic(path, text, strlen(text)) : write_file_atomic_nosync(path, text, strlen(text));
}

int session_save(session *s) {
    if (s->deleted) return 0; /* its folder is a tombstone now: writing would bring it back */
    json_t *o = json_pack("{s:s,s:f,s:f,s:s,s:i,s:o}", "session_id", s->id, "created_at", s->created_at,
                          "last_activity", s->last_activity, "status", session_status_name(s->status),
                          "max_images", s->cfg.max_images, "config", session_config_json(&s->cfg));
    if (o && s->error_message) json_object_set_new(o, "error_message", json_string(s->error_message));
    if (o && s->last_auto_count) json_object_set_new(o, "last_auto_generate_count", json_integer(s->last_auto_count));
    if (o && s->owner[0]) json_object_set_new(o, "owner", json_string(s->owner));
    if (o && s->client[0]) json_object_set_new(o, "client", json_string(s->client));
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(o);
    char path[700];
    int rc = -1;
    if (text && !fmt_path(path, sizeof path, "%s/session.json", s->dir)) rc = write_text(s, path, text);
    if (rc) log_error("session %s: cannot save state: %s", s->id, strerror(errno));
    free(text);
    return rc;
}

int session_store_write_meta(const session *s, int index, const char *display) {
    char path[800];
    if (session_meta_path(path, sizeof path, s->image_dir, index)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (!display) {
        /* A stale one would name this image after an upload that never counted. */
        if (unlink(path) && errno != ENOENT) return -1;
        return 0;
    }
    json_t *o = json_pack("{s:s}", "name", display);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) { /* not UTF-8: json_string refused it; the name is display text only */
        errno = EINVAL;
        return -1;
    }
    int rc = write_text(s, path, text);
    free(text);
    return rc;
}

void session_store_remove_meta(const session *s, int index) {
    char path[800];
    if (!session_meta_path(path, sizeof path, s->image_dir, index)) unlink(path);
}

/* How far a streaming session's chunks got: the worker's stream/state.json (its "done"), which
 * the worker writes atomically after each chunk; none yet means 0. */
static void load_stream_done(session *s) {
    char path[700];
    s->stream_done = 0;
    if (session_stream_dir(path, sizeof path - 16, s->image_dir)) return;
    strcat(path, "/state.json");
    if (access(path, F_OK) != 0) return;
    json_error_t jerr;
    json_t *o = json_load_file_bounded(path, SESSION_STREAM_STATE_MAX_BYTES, JSON_MAX_DEPTH_CLIENT, &jerr);
    json_int_t done = json_integer_value(json_object_get(o, "done"));
    if (!o) log_warn("session %s: unreadable %s (%s); its stream starts again", s->id, path, jerr.text);
    json_decref(o);
    s->stream_done = done >= 0 && done <= s->image_count ? (int)done : 0;
}

/* A copy of name cut to the protocol's limit (names from older versions were unbounded). */
static char *bounded_strdup(const char *name) {
    if (!name) return NULL;
    return strndup(name, session_filename_bound(name, PROTOCOL_MAX_FILENAME_BYTES));
}

/* What a crash in the middle of a write left in dir: temporary files (half an image, a torn
 * session.json) and, with keep_below >= 0, the meta and camera files of an upload that never got
 * its image file (index >= keep_below), so nothing but what was acknowledged stays on disk. */
static void remove_leftovers(const session *s, const char *dir, int keep_below) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name, *dot = strchr(n, '.');
        int stale = is_atomic_temp_name(n);
        if (!stale && keep_below >= 0 && dot && dot - n == 6 && strspn(n, "0123456789") == 6 &&
            (!strcmp(dot, ".meta.json") || !strcmp(dot, ".camera.json")))
            stale = atoi(n) >= keep_below;
        char path[1100];
        if (!stale || fmt_path(path, sizeof path, "%s/%s", dir, n)) continue;
        if (unlink(path) == 0) log_info("session %s: removed %s, left by an interrupted write", s->id, path);
    }
    closedir(d);
}

/* The current layout: images/ is scanned from 000000 up; each image takes its display name from
 * its meta file and its camera flag from its camera file's presence (the file the worker reads). */
static int load_images(session *s) {
    for (int i = 0; i < s->cfg.max_images; i++) {
        char img[700], meta[800];
        if (session_image_find(img, sizeof img, s->image_dir, i)) break;
        if (session_images_reserve(s, i + 1)) return -1;
        session_image *im = &s->images[i];
        memset(im, 0, sizeof *im);
        snprintf(im->file, sizeof im->file, "%s", strrchr(img, '/') + 1);
        if (!session_meta_path(meta, sizeof meta, s->image_dir, i) && access(meta, F_OK) == 0) {
            json_error_t jerr;
            json_t *o = json_load_file_bounded(meta, SESSION_META_MAX_BYTES, JSON_MAX_DEPTH_CLIENT, &jerr);
            if (!o) log_warn("session %s: image %d: unreadable %s (%s); shown without a name", s->id, i, meta, jerr.text);
            im->display = bounded_strdup(json_string_value(json_object_get(o, "name")));
            json_decref(o);
        }
        known_camera cam;
        char why[300];
        int has = camera_file_read(s->image_dir, i, &cam, why, sizeof why);
        if (has < 0) log_warn("session %s: %s", s->id, why); /* the worker will report it at generate */
        im->has_camera = has != 0;
        s->image_count = i + 1;
    }
    return 0;
}

/* The previous version's layout: session.json lists {"file","name","camera"} per image. Only names
 * the server itself would have chosen are trusted back from disk. */
static int load_legacy_images(session *s, const json_t *images) {
    size_t n = json_array_size(images);
    for (size_t i = 0; i < n; i++) {
        json_t *im = json_array_get(images, i);
        const char *file = json_string_value(json_object_get(im, "file"));
        char expect[600];
        if (!file || strlen(file) >= sizeof s->images[0].file || strchr(file, '/') ||
            session_image_find(expect, sizeof expect, s->image_dir, (int)i) || strcmp(strrchr(expect, '/') + 1, file)) {
            log_warn("session %s: image %zu (%s) missing on disk; keeping the first %zu", s->id, i, file ? file : "?", i);
            break;
        }
        if (session_images_reserve(s, (int)i + 1)) return -1;
        session_image *dst = &s->images[i];
        snprintf(dst->file, sizeof dst->file, "%s", file);
        dst->display = bounded_strdup(json_string_value(json_object_get(im, "name")));
        dst->has_camera = json_is_true(json_object_get(im, "camera"));
        s->image_count = (int)i + 1;
    }
    return 0;
}

/* Rewrites a previous version's session in the current layout: a meta file per named image first,
 * then session.json without the list (a crash in between leaves the old list, migrated again at
 * the next start). Images beyond the list's valid prefix are removed so a scan finds the same set. */
static void migrate_legacy(session *s) {
    for (int i = 0; i < s->image_count; i++)
        if (session_store_write_meta(s, i, s->images[i].display)) {
            log_warn("session %s: cannot migrate image %d's name: %s", s->id, i, strerror(errno));
            return;
        }
    char path[700];
    for (int i = s->image_count; !session_image_find(path, sizeof path, s->image_dir, i); i++) unlink(path);
    if (session_save(s) == 0) log_info("session %s: migrated to one meta file per image", s->id);
}

int session_store_load(session *s, int server_max_images) {
    char path[700];
    if (fmt_path(path, sizeof path, "%s/session.json", s->dir)) return -1;
    json_error_t jerr;
    json_t *o = json_load_file_bounded(path, SESSION_STATE_MAX_BYTES, JSON_MAX_DEPTH_CLIENT, &jerr);
    if (!json_is_object(o)) {
        log_warn("session %s: unreadable %s (%s); skipped", s->id, path, o ? "not an object" : jerr.text);
        json_decref(o);
        return -1;
    }
    session_config_default(&s->cfg, server_max_images);
    session_config_from_json(&s->cfg, json_object_get(o, "config"), json_object_get(o, "max_images"));
    s->created_at = json_number_value(json_object_get(o, "created_at"));
    s->last_activity = json_number_value(json_object_get(o, "last_activity"));
    s->status = session_status_parse(json_string_value(json_object_get(o, "status")));
    if (s->status == SESSION_PROCESSING) s->status = SESSION_ACTIVE; /* the job died with us */
    const char *em = json_string_value(json_object_get(o, "error_message"));
    if (em) s->error_message = strdup(em);
    s->last_auto_count = (int)json_integer_value(json_object_get(o, "last_auto_generate_count"));
    const char *owner = json_string_value(json_object_get(o, "owner"));
    snprintf(s->owner, sizeof s->owner, "%s", owner ? owner : "");
    const char *client = json_string_value(json_object_get(o, "client"));
    snprintf(s->client, sizeof s->client, "%s", client ? client : "");
    json_t *legacy = json_object_get(o, "images");
    int is_legacy = json_is_array(legacy);
    int rc = is_legacy ? load_legacy_images(s, legacy) : load_images(s);
    json_decref(o);
    if (rc) {
        log_warn("session %s: out of memory loading it; skipped", s->id);
        return -1;
    }
    /* Uploads do not rewrite session.json: the newest image says when the session was last used;
     * the images' sizes are what --max-session-mb counts. */
    s->stored_bytes = 0;
    for (int i = 0; i < s->image_count; i++) {
        char img[700];
        if (fmt_path(img, sizeof img, "%s/%s", s->image_dir, s->images[i].file)) continue;
        struct stat st;
        if (stat(img, &st)) continue;
        double t = (double)st.st_mtim.tv_sec + st.st_mtim.tv_nsec * 1e-9;
        if (t > s->last_activity) s->last_activity = t;
        s->stored_bytes += (unsigned long long)st.st_size;
    }
    remove_leftovers(s, s->dir, -1);
    remove_leftovers(s, s->image_dir, is_legacy ? -1 : s->image_count);
    if (is_legacy) migrate_legacy(s);
    if (s->last_auto_count < 0 || s->last_auto_count > s->image_count) s->last_auto_count = s->image_count;
    if (s->cfg.streaming) load_stream_done(s);
    return 0;
}

int session_store_is_tombstone(const char *name) {
    return !strncmp(name, SESSION_TOMBSTONE_PREFIX, strlen(SESSION_TOMBSTONE_PREFIX));
}

/* fsync of a directory: makes a rename in it survive power loss (--fsync). */
static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    if (fsync(fd)) log_warn("fsync %s: %s", dir, strerror(errno));
    close(fd);
}

int session_store_bury(session *s, char *tomb, size_t cap) {
    static atomic_uint counter;
    const char *slash = strrchr(s->dir, '/');
    int root_len = slash ? (int)(slash - s->dir) : 0;
    char root[512];
    snprintf(root, sizeof root, "%.*s", root_len, s->dir);
    /* A tombstone left by an earlier run can hold the same name: try the next number. */
    for (int attempt = 0; attempt < 64; attempt++) {
        unsigned n = atomic_fetch_add(&counter, 1);
        if (fmt_path(tomb, cap, "%s/" SESSION_TOMBSTONE_PREFIX "%s-%u", root, s->id, n)) break;
        if (rename(s->dir, tomb) == 0) {
            if (s->fsync_writes) sync_dir(root);
            return 0;
        }
        if (errno == ENOENT) {
            tomb[0] = 0;
            return 0; /* nothing on disk (e.g. a create that failed half-way) */
        }
        if (errno != EEXIST && errno != ENOTEMPTY) break;
    }
    /* Could not rename: remove in place. We hold s->lock with `deleted` set, so nothing writes. */
    log_warn("session %s: cannot rename %s to a tombstone (%s); removing in place", s->id, s->dir, strerror(errno));
    tomb[0] = 0;
    if (remove_tree(s->dir) == 0) return 0;
    log_error("session %s: could not remove %s: %s", s->id, s->dir, strerror(errno));
    return -1;
}
