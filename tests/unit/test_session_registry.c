/* The session registry and store: reference counts, --max-sessions, expiry selection, image
 * intake (bounded names, constant cost), removal racing uploads (no folder survives), reload from
 * disk (tombstones swept, the previous version's session.json migrated), concurrent get/remove. */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/json_bounded.h"
#include "common/session_files.h"
#include "common/util.h"
#include "frontend/session.h"
#include "tests/unit/check.h"

static char data_dir[256], root[300];
static uint8_t *jpg;
static size_t jpg_len;

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* Entries under the sessions root (uuids and tombstones alike). */
static int root_entries(void) {
    DIR *d = opendir(root);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static session *create(int max_images) {
    session_config cfg;
    session_config_default(&cfg, 50);
    cfg.max_images = max_images;
    int status = 0;
    char err[256];
    session *s = sessions_create(&cfg, "", "", &status, err, sizeof err);
    CHECK_MSG(s != NULL, "create: %d %s", status, err);
    return s;
}

static int upload(session *s, const char *filename, session_stored *out, char *err, size_t errlen) {
    if (session_validate_upload(jpg, jpg_len, NULL, err, errlen)) return -1;
    session_upload up = {.data = jpg, .len = jpg_len, .filename = filename};
    pthread_mutex_lock(&s->lock);
    int rc = session_store_image(s, &up, out, err, errlen);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void test_refs_and_capacity(void) {
    CHECK(sessions_init(data_dir, 3, 50, 0) == 0);
    CHECK(sessions_capacity() == 3);
    session *a = create(5), *b = create(5), *c = create(5);
    CHECK(a && b && c && sessions_count() == 3);
    if (!a || !b || !c) return;
    CHECK(a->refs == 2); /* the registry's and ours */
    int status = 0;
    char err[256];
    session_config cfg;
    session_config_default(&cfg, 50);
    CHECK(sessions_create(&cfg, "", "", &status, err, sizeof err) == NULL && status == 503 && strstr(err, "(3)"));
    session *g = sessions_get(a->id);
    CHECK(g == a && a->refs == 3);
    sessions_put(g);
    CHECK(a->refs == 2);
    CHECK(sessions_get("not-a-uuid") == NULL && sessions_get(NULL) == NULL);
    CHECK(sessions_get("00000000-0000-4000-8000-000000000000") == NULL);

    char dir[512];
    snprintf(dir, sizeof dir, "%s", a->dir);
    CHECK(exists(dir));
    session *r = sessions_remove(a->id);
    CHECK(r == a && a->deleted && !exists(dir) && sessions_count() == 2);
    CHECK(sessions_get(a->id) == NULL && sessions_remove(a->id) == NULL);
    CHECK(root_entries() == 2); /* no tombstone left behind */
    /* Still usable through our references, and nothing it does writes to disk again. */
    pthread_mutex_lock(&a->lock);
    CHECK(session_save(a) == 0 && !exists(dir));
    pthread_mutex_unlock(&a->lock);
    session_stored st;
    CHECK(upload(a, "x.jpg", &st, err, sizeof err) == -1 && strstr(err, "not found") && !exists(dir));
    sessions_put(r); /* the registry's reference, handed over by remove */
    sessions_put(a); /* ours: frees it (ASan checks nobody touches it after) */
    session *d = create(5); /* room again */
    CHECK(d != NULL);
    sessions_put(b);
    sessions_put(c);
    sessions_put(d);
    sessions_shutdown();
}

static void test_expiry(void) {
    CHECK(sessions_init(data_dir, 10, 50, 0) == 3);
    session *all[10];
    int n = sessions_snapshot(all, 10);
    CHECK(n == 3);
    double now = now_wall();
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&all[i]->lock);
        all[i]->last_activity = now - (i == 0 ? 1000 : i == 1 ? 1000 : 5);
        if (i == 1) all[i]->status = SESSION_PROCESSING; /* processing: never expires */
        pthread_mutex_unlock(&all[i]->lock);
    }
    session *out[10];
    int m = sessions_expired(now, 100, out, 10);
    CHECK(m == 1 && out[0] == all[0]);
    for (int i = 0; i < m; i++) sessions_put(out[i]);
    CHECK(sessions_expired(now, 100, out, 0) == 0); /* max 0: nothing, no reference leaked */
    CHECK(sessions_expired(now, 1, out, 10) == 2);
    sessions_put(out[0]);
    sessions_put(out[1]);
    all[1]->status = SESSION_ACTIVE;
    for (int i = 0; i < n; i++) CHECK(all[i]->refs == 2);
    for (int i = 0; i < n; i++) {
        session *r = sessions_remove(all[i]->id);
        sessions_put(r);
        sessions_put(all[i]);
    }
    CHECK(sessions_count() == 0 && root_entries() == 0);
    sessions_shutdown();
}

static void test_images_and_reload(void) {
    CHECK(sessions_init(data_dir, 10, 50, 0) == 0);
    session *s = create(3);
    if (!s) return;
    char err[256], id[37];
    snprintf(id, sizeof id, "%s", s->id);
    session_stored st;
    CHECK_MSG(upload(s, "first.jpg", &st, err, sizeof err) == 0, "%s", err);
    CHECK(!strcmp(st.stored_name, "000000.jpg") && st.image_count == 1 && st.has_filename && !st.filename_truncated);
    /* 300 bytes of two-byte characters: cut to 254 (a boundary), flagged. */
    char longname[301];
    for (int i = 0; i < 150; i++) memcpy(longname + 2 * i, "\xc3\xa9", 2);
    longname[300] = 0;
    CHECK(upload(s, longname, &st, err, sizeof err) == 0);
    CHECK(st.filename_truncated && strlen(st.filename) == 254 && !memcmp(st.filename, longname, 254));
    CHECK(upload(s, NULL, &st, err, sizeof err) == 0 && !st.has_filename && st.image_count == 3);
    CHECK(upload(s, "4.jpg", &st, err, sizeof err) == -1 && strstr(err, "maximum image limit (3)"));
    /* Invalid bytes are refused before any session state is touched. */
    CHECK(session_validate_upload((const uint8_t *)"nope", 4, NULL, err, sizeof err) == -1 && strstr(err, "Invalid image"));
    pthread_mutex_lock(&s->lock);
    s->status = SESSION_PROCESSING;
    CHECK(session_save(s) == 0);
    pthread_mutex_unlock(&s->lock);
    /* session.json carries no image list: its size does not grow with the session. */
    char path[700];
    snprintf(path, sizeof path, "%s/session.json", s->dir);
    json_error_t jerr;
    json_t *o = json_load_file_bounded(path, 1 << 20, 8, &jerr);
    CHECK(o && !json_object_get(o, "images") && json_object_get(o, "config"));
    json_decref(o);
    /* A stale meta file from an upload that never counted does not name the next image. */
    session_meta_path(path, sizeof path, s->image_dir, 3);
    CHECK(!exists(path));
    sessions_put(s);
    sessions_shutdown();

    CHECK(sessions_init(data_dir, 10, 50, 0) == 1);
    s = sessions_get(id);
    CHECK(s != NULL);
    if (!s) return;
    CHECK(s->image_count == 3 && s->cfg.max_images == 3);
    CHECK(s->status == SESSION_ACTIVE); /* processing at the crash: its job died with us */
    CHECK(s->images[0].display && !strcmp(s->images[0].display, "first.jpg"));
    CHECK(s->images[1].display && strlen(s->images[1].display) == 254);
    CHECK(s->images[2].display == NULL && !strcmp(s->images[2].file, "000002.jpg"));
    CHECK(!s->images[0].has_camera);
    session *r = sessions_remove(id);
    sessions_put(r);
    sessions_put(s);
    sessions_shutdown();
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void write_bytes(const char *path, const uint8_t *d, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(d, 1, n, f);
    fclose(f);
}

/* Sessions stored by the previous version (image list in session.json) load and are migrated;
 * tombstones of interrupted deletions are removed; junk is skipped. */
static void test_legacy_and_tombstones(void) {
    const char *id = "11111111-2222-4333-8444-555555555555";
    char dir[512], img[600], path[1024];
    snprintf(dir, sizeof dir, "%s/%s", root, id);
    snprintf(img, sizeof img, "%s/images", dir);
    mkdir_p(img);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%06d.jpg", img, i);
        write_bytes(path, jpg, jpg_len);
    }
    /* A name longer than the limit (the previous version kept any length). */
    char json[4096], big[400];
    memset(big, 'n', 399);
    big[399] = 0;
    snprintf(json, sizeof json,
             "{\"session_id\":\"%s\",\"created_at\":1.5,\"last_activity\":2.5,\"status\":\"completed\",\"max_images\":9,"
             "\"config\":{\"process_res\":280,\"process_res_method\":\"lower_bound_crop\",\"conf_thresh_percentile\":5,"
             "\"num_max_points\":1000,\"show_cameras\":false},"
             "\"images\":[{\"file\":\"000000.jpg\",\"name\":\"a.jpg\"},{\"file\":\"000001.jpg\",\"name\":\"%s\"},"
             "{\"file\":\"000002.jpg\"}]}",
             id, big);
    snprintf(path, sizeof path, "%s/session.json", dir);
    write_text(path, json);
    /* Tombstones (one with files in it), a bad session and a stray file. */
    char tomb[700];
    snprintf(tomb, sizeof tomb, "%s/.deleted-%s-7/images", root, "99999999-2222-4333-8444-555555555555");
    mkdir_p(tomb);
    snprintf(path, sizeof path, "%s/000000.jpg", tomb);
    write_bytes(path, jpg, jpg_len);
    snprintf(tomb, sizeof tomb, "%s/.deleted-x-1", root);
    mkdir_p(tomb);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/aaaaaaaa-2222-4333-8444-555555555555", root);
    mkdir_p(bad);
    snprintf(path, sizeof path, "%s/session.json", bad);
    char deep[200];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    write_text(path, deep); /* too deep: skipped, not a crash */

    for (int round = 0; round < 2; round++) { /* the second load reads the migrated layout */
        CHECK(sessions_init(data_dir, 10, 50, 0) == 1);
        CHECK(root_entries() == 2); /* both tombstones gone; the good and the bad session stay */
        session *s = sessions_get(id);
        CHECK(s != NULL);
        if (!s) return;
        CHECK_MSG(s->image_count == 3, "round %d: %d images", round, s->image_count);
        CHECK(s->status == SESSION_COMPLETED && s->cfg.max_images == 9 && s->cfg.process_res == 280 &&
              s->cfg.method == RESIZE_LOWER_BOUND_CROP && !s->cfg.show_cameras && s->created_at == 1.5);
        CHECK(s->last_activity > 2.5); /* the newest image's time */
        CHECK(s->image_count == 3 && !strcmp(s->images[0].display, "a.jpg") &&
              strlen(s->images[1].display) == PROTOCOL_MAX_FILENAME_BYTES && s->images[2].display == NULL);
        snprintf(path, sizeof path, "%s/session.json", dir);
        json_error_t jerr;
        json_t *o = json_load_file_bounded(path, 1 << 20, 8, &jerr);
        CHECK_MSG(o && !json_object_get(o, "images"), "round %d: not migrated", round);
        json_decref(o);
        session_meta_path(path, sizeof path, img, 0);
        CHECK(exists(path));
        sessions_put(s);
        sessions_shutdown();
    }
    remove_tree(dir);
    remove_tree(bad);
}

/* Uploads racing removals: whatever the interleaving, a removed session leaves nothing on disk. */
typedef struct {
    session *s;
    int stored;
} uploader;

static void *upload_loop(void *arg) {
    uploader *u = arg;
    char err[256];
    session_stored st;
    while (upload(u->s, "race.jpg", &st, err, sizeof err) == 0) u->stored++;
    return NULL;
}

static void test_remove_races_uploads(void) {
    CHECK(sessions_init(data_dir, 64, 1000, 0) == 0);
    for (int round = 0; round < 40; round++) {
        session *s = create(1000);
        if (!s) return;
        char dir[512];
        snprintf(dir, sizeof dir, "%s", s->dir);
        uploader u[2] = {{s, 0}, {s, 0}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, upload_loop, &u[i]);
        struct timespec pause = {0, (round % 8) * 200000L};
        nanosleep(&pause, NULL);
        session *r = sessions_remove(s->id);
        CHECK(r == s);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        CHECK_MSG(!exists(dir), "round %d: %s survived its removal", round, dir);
        sessions_put(r);
        sessions_put(s);
    }
    CHECK(root_entries() == 0);
    sessions_shutdown();
    CHECK(sessions_init(data_dir, 64, 1000, 0) == 0); /* and nothing comes back */
    sessions_shutdown();
}

/* Lookups, creates and removals from many threads (run under ThreadSanitizer too). */
static char ids[16][37];
static void *churn(void *arg) {
    unsigned seed = (unsigned)(size_t)arg;
    for (int i = 0; i < 3000; i++) {
        seed = seed * 1103515245u + 12345u;
        const char *id = ids[(seed >> 8) % 16];
        if ((seed >> 4) % 8 == 0) {
            session *r = sessions_remove(id);
            sessions_put(r);
        } else {
            session *s = sessions_get(id);
            if (s) {
                pthread_mutex_lock(&s->lock);
                session_touch(s);
                pthread_mutex_unlock(&s->lock);
            }
            sessions_put(s);
        }
        if (i % 500 == 0) {
            session *out[16];
            int n = sessions_expired(now_wall(), -1, out, 16);
            for (int k = 0; k < n; k++) sessions_put(out[k]);
        }
    }
    return NULL;
}

static void test_concurrent(void) {
    CHECK(sessions_init(data_dir, 32, 50, 0) == 0);
    for (int i = 0; i < 16; i++) {
        session *s = create(5);
        if (!s) return;
        snprintf(ids[i], sizeof ids[i], "%s", s->id);
        sessions_put(s);
    }
    pthread_t th[6];
    for (int i = 0; i < 6; i++) pthread_create(&th[i], NULL, churn, (void *)(size_t)(i + 1));
    for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
    int left = sessions_count();
    CHECK(left >= 0 && left < 16 && root_entries() == left);
    session *all[32];
    int n = sessions_snapshot(all, 32);
    CHECK(n == left);
    for (int i = 0; i < n; i++) {
        CHECK(all[i]->refs == 2);
        session *r = sessions_remove(all[i]->id);
        sessions_put(r);
        sessions_put(all[i]);
    }
    CHECK(root_entries() == 0);
    sessions_shutdown();
}

static void test_filename_bound(void) {
    CHECK(session_filename_bound("abc", 255) == 3);
    CHECK(session_filename_bound("abc", 2) == 2);
    CHECK(session_filename_bound("a\xc3\xa9", 2) == 1);        /* would split é */
    CHECK(session_filename_bound("a\xc3\xa9", 3) == 3);
    CHECK(session_filename_bound("\xf0\x9f\x98\x80x", 3) == 0); /* a 4-byte emoji */
    CHECK(session_filename_bound("\xf0\x9f\x98\x80x", 4) == 4);
    CHECK(session_filename_bound("", 0) == 0);
}

int main(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/images/orient_1.jpg", test_data_dir());
    jpg = read_file(path, &jpg_len);
    CHECK_MSG(jpg != NULL, "missing fixture %s", path);
    if (!jpg) CHECK_DONE("test_session_registry");
    snprintf(data_dir, sizeof data_dir, "/tmp/da3-registry-XXXXXX");
    CHECK(mkdtemp(data_dir) != NULL);
    snprintf(root, sizeof root, "%s/sessions", data_dir);
    test_filename_bound();
    test_refs_and_capacity();
    test_expiry();
    test_images_and_reload();
    test_legacy_and_tombstones();
    test_remove_races_uploads();
    test_concurrent();
    remove_tree(data_dir);
    free(jpg);
    CHECK_DONE("test_session_registry");
}
