/* Fuzzes how the front reloads a session from --data-dir at start (frontend/session_store.c's
 * session_store_load, through session_config_from_json, json_load_file_bounded and
 * camera_file_read): session loading reads a folder, not bytes, so each input is laid out as one
 * in this process's scratch folder and loaded with session_alloc + session_store_load, as
 * sessions_init does. The input is up to four files separated by the line "--8<--":
 *   <root>/<id>/session.json, images/000000.meta.json, images/000000.camera.json,
 *   stream/state.json
 * (a missing part: no such file), beside two images images/000000.jpg and 000001.png (their
 * bytes are never read by the loader, only their presence). A legacy session.json (an "images"
 * list) is migrated in place, which writes inside the same folder. Invariants of a loaded
 * session: at most the two images on disk, each with the server's own file name; display names
 * valid UTF-8 of at most 255 bytes; status a known value; last_auto_generate_count and
 * stream_done within [0, image_count]; each setting within its documented range. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/protocol.h"
#include "frontend/session.h"
#include "frontend/session_store.h"
#include "frontend/ws_frame.h"
#include "fuzz_util.h"

#define SESSION_ID "0f8b6f64-2c47-4c1e-9d1a-6f1d2b3c4d5e"
#define SERVER_MAX_IMAGES 1000

static char root[600], dir[700];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet_logs();
    snprintf(root, sizeof root, "%s", fuzz_tmp_dir());
    snprintf(dir, sizeof dir, "%s/" SESSION_ID, root);
    char sub[800];
    snprintf(sub, sizeof sub, "%s/images", dir);
    FUZZ_ASSERT(mkdir_p(sub) == 0);
    snprintf(sub, sizeof sub, "%s/stream", dir);
    FUZZ_ASSERT(mkdir_p(sub) == 0);
    return 0;
}

/* Writes dir-relative `name` with n bytes when present, else removes it. */
static void put(const char *name, const uint8_t *p, size_t n, int present) {
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (present) fuzz_write_file(path, p, n);
    else FUZZ_ASSERT(unlink(path) == 0 || errno == ENOENT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char sep[] = "\n--8<--\n";
    const size_t seplen = sizeof sep - 1;
    const uint8_t *part[4] = {0};
    size_t len[4] = {0};
    int parts = 0;
    const uint8_t *p = data, *end = data + size;
    while (parts < 4) {
        const uint8_t *cut = parts < 3 ? memmem(p, (size_t)(end - p), sep, seplen) : NULL;
        part[parts] = p;
        len[parts] = (size_t)((cut ? cut : end) - p);
        parts++;
        if (!cut) break;
        p = cut + seplen;
    }

    /* Every file a load can read or write is rewritten or removed before each run, so no run
     * sees another's: the four parts, the two images (a migration removes those past its list),
     * and the meta files a migration writes. (Rebuilding the folder each run would halve the
     * executions for nothing else.) */
    put("images/000000.jpg", (const uint8_t *)"\xff\xd8\xff", 3, 1);
    put("images/000001.png", (const uint8_t *)"\x89PNG", 4, 1);
    put("session.json", part[0], len[0], parts > 0);
    put("images/000000.meta.json", part[1], len[1], parts > 1);
    put("images/000000.camera.json", part[2], len[2], parts > 2);
    put("stream/state.json", part[3], len[3], parts > 3);
    put("images/000001.meta.json", NULL, 0, 0);

    session *s = session_alloc(root, SESSION_ID, 0);
    FUZZ_ASSERT(s);
    if (session_store_load(s, SERVER_MAX_IMAGES) == 0) {
        FUZZ_ASSERT(s->image_count >= 0 && s->image_count <= 2);
        for (int i = 0; i < s->image_count; i++) {
            char want_jpg[16], want_png[16];
            snprintf(want_jpg, sizeof want_jpg, "%06d.jpg", i);
            snprintf(want_png, sizeof want_png, "%06d.png", i);
            FUZZ_ASSERT(!strcmp(s->images[i].file, want_jpg) || !strcmp(s->images[i].file, want_png));
            const char *d = s->images[i].display;
            if (d) FUZZ_ASSERT(strlen(d) <= PROTOCOL_MAX_FILENAME_BYTES && utf8_valid((const uint8_t *)d, strlen(d)));
        }
        FUZZ_ASSERT(s->status >= SESSION_ACTIVE && s->status <= SESSION_ERROR && s->status != SESSION_PROCESSING);
        FUZZ_ASSERT(s->last_auto_count >= 0 && s->last_auto_count <= s->image_count);
        FUZZ_ASSERT(s->stream_done >= 0 && s->stream_done <= s->image_count);
        const session_config *c = &s->cfg;
        FUZZ_ASSERT(c->process_res >= DA3_PATCH_SIZE && c->process_res <= SESSION_MAX_PROCESS_RES);
        FUZZ_ASSERT(c->conf_thresh_percentile >= 0 && c->conf_thresh_percentile <= 100);
        FUZZ_ASSERT(c->num_max_points >= 1 && c->num_max_points <= SESSION_MAX_POINTS);
        FUZZ_ASSERT(c->chunk_size >= 2 && c->chunk_size <= SESSION_MAX_CHUNK_SIZE);
        /* Each setting alone is in range; together they may not be: session_config_from_json
         * ignores session_config_finish's verdict, so a session.json with overlap >= chunk_size,
         * or streaming with auto_generate_after, loads as it is (reported, not fixed here: the
         * streaming options are being written; the worker re-checks chunk_size/overlap). */
        FUZZ_ASSERT(c->overlap >= 1 && c->overlap < SESSION_MAX_CHUNK_SIZE);
        /* What /ws/session/{id} then shows. */
        json_t *info = session_info_json(s);
        FUZZ_ASSERT(info);
        json_decref(info);
    }
    session_free(s);
    return 0;
}
