/* Image intake: validation (no session lock held) and storage (under the session's lock) of one
 * upload, at a cost that does not depend on how many images the session already has. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/fault.h"
#include "common/image_decode.h"
#include "common/session_files.h"
#include "common/util.h"
#include "frontend/session_store.h"

size_t session_filename_bound(const char *name, size_t max) {
    size_t n = strnlen(name, max + 1);
    if (n <= max) return n;
    n = max;
    /* Back off continuation bytes (10xxxxxx) so the cut never splits a character. */
    while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80) n--;
    return n;
}

static unsigned long long min_free_bytes, max_session_bytes;

void session_images_set_min_free(unsigned long long bytes) { min_free_bytes = bytes; }

void session_images_set_max_session(unsigned long long bytes) { max_session_bytes = bytes; }

/* 0 when the session may store len more bytes under --max-session-mb. */
static int session_has_room(const session *s, size_t len, char *err, size_t errlen) {
    if (!max_session_bytes || s->stored_bytes + len <= max_session_bytes) return 0;
    snprintf(err, errlen,
             "Session storage limit reached: %.1f MB stored, the limit is %llu MB (--max-session-mb); image not "
             "stored",
             s->stored_bytes / 1048576.0, max_session_bytes >> 20);
    return -1;
}

/* The client's message for a failed write: a full disk is named as such (what is stored is intact:
 * every file goes in by rename, a failed one is removed), anything else with its errno text. */
static void write_error(char *err, size_t errlen, const char *what) {
    int e = errno;
    if (e == ENOSPC || e == EDQUOT)
        snprintf(err, errlen,
                 "the server's storage is full (%s); the image was not stored and what is stored is safe; try "
                 "again later",
                 strerror(e));
    else
        snprintf(err, errlen, "cannot store the %s: %s", what, strerror(e));
}

/* Half of the image is in its temporary file: a test stops the front here (common/fault.h). */
static void image_half_written(void) { fault_point("front_image_write"); }

/* 0 when the upload leaves at least min_free_bytes free under the session's folder. */
static int storage_has_room(const session *s, size_t len, char *err, size_t errlen) {
    struct statvfs v;
    if (!min_free_bytes || statvfs(s->dir, &v) != 0) return 0;
    unsigned long long avail = (unsigned long long)v.f_bavail * v.f_frsize;
    if (avail >= min_free_bytes + len) return 0;
    snprintf(err, errlen,
             "the server's storage is nearly full (%llu MB free, %llu MB are kept free); the image was not stored "
             "and what is stored is safe; try again later",
             avail >> 20, min_free_bytes >> 20);
    return -1;
}

int session_images_reserve(session *s, int n) {
    if (n <= s->image_cap) return 0;
    int cap = s->image_cap ? s->image_cap : 16;
    while (cap < n) cap *= 2;
    session_image *grown = realloc(s->images, (size_t)cap * sizeof *grown);
    if (!grown) return -1;
    memset(grown + s->image_cap, 0, (size_t)(cap - s->image_cap) * sizeof *grown);
    s->images = grown;
    s->image_cap = cap;
    return 0;
}

int session_validate_upload(const uint8_t *data, size_t len, const known_camera *cam, char *err, size_t errlen) {
    char why[256];
    if (image_validate(data, len, NULL, NULL, why, sizeof why)) {
        snprintf(err, errlen, "Invalid image data: %s", why);
        return -1;
    }
    return cam ? camera_check_image(data, len, err, errlen) : 0;
}

int session_store_image(session *s, const session_upload *up, session_stored *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    /* Re-checked under the lock: a DELETE that got here first has buried the folder. */
    if (s->deleted) {
        snprintf(err, errlen, "Session %s not found", s->id);
        return -1;
    }
    if (s->image_count >= s->cfg.max_images) {
        snprintf(err, errlen, "Session has reached maximum image limit (%d)", s->cfg.max_images);
        return -1;
    }
    /* The network takes known cameras for every view or for none: refuse a mix up front rather
     * than fail the reconstruction later. */
    if (s->image_count > 0 && !!up->cam != !!s->images[0].has_camera) {
        snprintf(err, errlen,
                 up->cam ? "this session's images were sent without cameras; send 'extrinsics' and "
                           "'intrinsics' with every image of a session, or with none"
                         : "this session's images were sent with known cameras ('extrinsics' and "
                           "'intrinsics'); send them with this image too");
        return -1;
    }
    if (session_has_room(s, up->len, err, errlen) || storage_has_room(s, up->len, err, errlen)) return -1;
    if (session_images_reserve(s, s->image_count + 1)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (up->filename) {
        size_t keep = session_filename_bound(up->filename, PROTOCOL_MAX_FILENAME_BYTES);
        memcpy(out->filename, up->filename, keep);
        out->filename[keep] = 0;
        out->has_filename = 1;
        out->filename_truncated = up->filename[keep] != 0;
    }
    int idx = s->image_count;
    char path[700];
    image_format fmt = image_sniff(up->data, up->len);
    /* Camera and meta go first (or stale ones from an unrecorded upload go): the image file is what
     * makes the upload count, at reload too. */
    if (up->cam ? camera_file_write(s->image_dir, idx, up->cam, s->fsync_writes) : (camera_file_remove(s->image_dir, idx), 0)) {
        write_error(err, errlen, "camera");
        return -1;
    }
    if (session_store_write_meta(s, idx, out->has_filename ? out->filename : NULL)) {
        write_error(err, errlen, "image's name");
        if (up->cam) camera_file_remove(s->image_dir, idx);
        return -1;
    }
    if (session_image_path(path, sizeof path, s->image_dir, idx, fmt) ||
        write_file_atomic_hooked(path, up->data, up->len, s->fsync_writes, image_half_written)) {
        write_error(err, errlen, "image");
        if (up->cam) camera_file_remove(s->image_dir, idx);
        session_store_remove_meta(s, idx);
        return -1;
    }
    session_image *im = &s->images[idx];
    snprintf(im->file, sizeof im->file, "%s", strrchr(path, '/') + 1);
    im->display = out->has_filename ? strdup(out->filename) : NULL;
    im->has_camera = up->cam != NULL;
    s->stored_bytes += up->len;
    s->image_count++;
    session_touch(s);
    snprintf(out->stored_name, sizeof out->stored_name, "%s", im->file);
    out->image_count = s->image_count;
    return 0;
}
