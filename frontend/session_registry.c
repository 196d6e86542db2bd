/* The registry of live sessions: a bounded array under one mutex (max_sessions is in the hundreds
 * to thousands, and every lookup is a short scan), sessions reference-counted so a removal never
 * frees one another thread is using. The registry lock is a leaf: nothing else is locked while it
 * is held, so it cannot take part in a lock-order cycle. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "frontend/metrics.h"
#include "frontend/session_store.h"

static struct {
    pthread_mutex_t lock;
    session **items;
    int count, max;
    int reserved; /* creates in progress: counted against max until they are in or have failed */
    char root[512];
    int server_max_images;
    int fsync_writes;
    int max_per_client; /* 0: no per-client limit */
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

void sessions_set_client_limit(int max_per_client) {
    pthread_mutex_lock(&reg.lock);
    reg.max_per_client = max_per_client;
    pthread_mutex_unlock(&reg.lock);
}

/* Live sessions created from `client` (caller holds reg.lock). A scan: creates are rare next to
 * everything else, and --max-sessions bounds it. */
static int client_sessions_locked(const char *client) {
    int n = 0;
    for (int i = 0; i < reg.count; i++) n += !strcmp(reg.items[i]->client, client);
    return n;
}

session *session_alloc(const char *root, const char *id, int fsync_writes) {
    session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    snprintf(s->id, sizeof s->id, "%s", id);
    if (fmt_path(s->dir, sizeof s->dir, "%s/%s", root, id) ||
        fmt_path(s->image_dir, sizeof s->image_dir, "%s/images", s->dir)) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->fsync_writes = fsync_writes;
    s->refs = 1; /* the registry's own reference */
    return s;
}

void session_free(session *s) {
    for (int i = 0; i < s->image_count; i++) free(s->images[i].display);
    free(s->images);
    free(s->error_message);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void session_touch(session *s) { s->last_activity = now_wall(); }

/* Removes what deletions interrupted by a crash left: their folders are already out of the
 * sessions' namespace, only the space is still taken. */
static void sweep_tombstones(DIR *d) {
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!session_store_is_tombstone(e->d_name)) continue;
        char path[800];
        if (fmt_path(path, sizeof path, "%s/%s", reg.root, e->d_name)) continue;
        if (remove_tree(path)) log_warn("cannot remove %s (left by a deletion): %s", path, strerror(errno));
    }
    rewinddir(d);
}

int sessions_init(const char *data_dir, int max_sessions, int server_max_images, int fsync_writes) {
    reg.max = max_sessions;
    reg.server_max_images = server_max_images;
    reg.fsync_writes = fsync_writes;
    reg.count = reg.reserved = 0;
    if (fmt_path(reg.root, sizeof reg.root, "%s/sessions", data_dir) || mkdir_p(reg.root)) return -1;
    free(reg.items);
    reg.items = calloc(max_sessions > 0 ? (size_t)max_sessions : 1, sizeof *reg.items);
    DIR *d = reg.items ? opendir(reg.root) : NULL;
    if (!d) return -1;
    sweep_tombstones(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_uuid(e->d_name)) continue;
        if (reg.count >= reg.max) {
            log_warn("more stored sessions than --max-sessions (%d); %s not loaded", reg.max, e->d_name);
            continue;
        }
        session *s = session_alloc(reg.root, e->d_name, fsync_writes);
        if (!s) continue;
        if (session_store_load(s, server_max_images)) {
            session_free(s);
            continue;
        }
        reg.items[reg.count++] = s;
    }
    closedir(d);
    return reg.count;
}

void sessions_shutdown(void) {
    pthread_mutex_lock(&reg.lock);
    for (int i = 0; i < reg.count; i++) session_free(reg.items[i]);
    free(reg.items);
    reg.items = NULL;
    reg.count = reg.max = reg.reserved = 0;
    pthread_mutex_unlock(&reg.lock);
}

session *sessions_create(const session_config *cfg, const char *owner, const char *client, int *http_status,
                         char *err, size_t errlen) {
    if (!client) client = "";
    pthread_mutex_lock(&reg.lock);
    int full = reg.count + reg.reserved >= reg.max;
    int mine = !full && reg.max_per_client > 0 && client[0] ? client_sessions_locked(client) : 0;
    int too_many = !full && reg.max_per_client > 0 && mine >= reg.max_per_client;
    if (!full && !too_many) reg.reserved++;
    int limit = reg.max_per_client;
    pthread_mutex_unlock(&reg.lock);
    if (too_many) {
        *http_status = 429;
        snprintf(err, errlen,
                 "Too many sessions from your address (%d open; --max-sessions-per-client %d); delete one or wait "
                 "for one to expire",
                 mine, limit);
        return NULL;
    }
    if (full) {
        /* Unlike the reference, never evict a live session to make room. */
        *http_status = 503;
        snprintf(err, errlen, "Maximum number of sessions (%d) reached; delete a session or try again later", reg.max);
        return NULL;
    }
    char id[37];
    uuid4(id);
    session *s = session_alloc(reg.root, id, reg.fsync_writes);
    int ok = 0;
    if (s) {
        s->cfg = *cfg;
        snprintf(s->owner, sizeof s->owner, "%s", owner ? owner : "");
        snprintf(s->client, sizeof s->client, "%s", client);
        s->created_at = s->last_activity = now_wall();
        s->status = SESSION_ACTIVE;
        /* On disk before it is findable: no one can reach a session whose folder is half made. */
        ok = mkdir_p(s->image_dir) == 0 && session_save(s) == 0;
        if (!ok) {
            *http_status = 500;
            snprintf(err, errlen, "Failed to create session: cannot write %s: %s", s->dir, strerror(errno));
            remove_tree(s->dir);
        }
    } else {
        *http_status = 500;
        snprintf(err, errlen, "Failed to create session: out of memory");
    }
    pthread_mutex_lock(&reg.lock);
    reg.reserved--;
    if (ok) {
        reg.items[reg.count++] = s;
        s->refs++; /* the caller's reference */
    }
    pthread_mutex_unlock(&reg.lock);
    if (ok) metrics_session_created();
    if (!ok && s) session_free(s);
    return ok ? s : NULL;
}

/* Index of session `id` in the registry, or -1 (caller holds reg.lock). A short scan: lookups
 * are rare next to the work each request does, and max_sessions is in the thousands at most. */
static int index_locked(const char *id) {
    for (int i = 0; i < reg.count; i++)
        if (!strcmp(reg.items[i]->id, id)) return i;
    return -1;
}

session *sessions_get(const char *id) {
    if (!id || !is_uuid(id)) return NULL;
    pthread_mutex_lock(&reg.lock);
    int i = index_locked(id);
    session *found = i >= 0 ? reg.items[i] : NULL;
    if (found) found->refs++;
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

/* Removes session id, when only_idle only if it is still idle (checked under its lock, so an
 * upload or generate that lands after the sweep looked cannot be lost to the expiry). The
 * session's lock is held from the check to `deleted`; the registry lock, a leaf, inside it. */
static session *remove_session(const char *id, int only_idle, double now, double timeout_s) {
    session *s = sessions_get(id);
    if (!s) return NULL;
    pthread_mutex_lock(&s->lock);
    int go = !s->deleted && (!only_idle || (now - s->last_activity > timeout_s && s->status != SESSION_PROCESSING));
    if (go) {
        pthread_mutex_lock(&reg.lock);
        int i = index_locked(id);
        if (i >= 0) reg.items[i] = reg.items[--reg.count]; /* the registry's reference becomes the caller's */
        pthread_mutex_unlock(&reg.lock);
        go = i >= 0;
    }
    char tomb[800] = "";
    if (go) {
        /* An upload in flight has either finished writing or will see `deleted` before writing
         * anything; the rename takes the folder out of the sessions' namespace in one step, so
         * no later write and no restart can bring it back. */
        s->deleted = 1;
        session_store_bury(s, tomb, sizeof tomb);
    }
    pthread_mutex_unlock(&s->lock);
    if (!go) {
        sessions_put(s);
        return NULL;
    }
    sessions_put(s); /* the lookup's reference; the registry's is the caller's now */
    /* The slow part, without the lock: nothing writes to a tombstone. */
    if (tomb[0] && remove_tree(tomb)) log_warn("session %s: could not remove %s: %s (removed at the next start)", id, tomb, strerror(errno));
    return s;
}

session *sessions_remove(const char *id) { return remove_session(id, 0, 0, 0); }

session *sessions_remove_idle(const char *id, double now, double timeout_s) { return remove_session(id, 1, now, timeout_s); }

/* Takes a reference on every live session into a malloc'd array; *n gets the count. */
static session **take_all(int *n) {
    *n = 0;
    pthread_mutex_lock(&reg.lock);
    session **all = malloc((size_t)(reg.count ? reg.count : 1) * sizeof *all);
    for (int i = 0; all && i < reg.count; i++) {
        reg.items[i]->refs++;
        all[(*n)++] = reg.items[i];
    }
    pthread_mutex_unlock(&reg.lock);
    return all;
}

int sessions_expired(double now, double timeout_s, session **out, int max) {
    int n, found = 0;
    /* Each session's state is read under its own lock after the registry lock is released: the
     * registry lock is never held while another lock is taken. */
    session **all = take_all(&n);
    for (int i = 0; i < n; i++) {
        session *s = all[i];
        pthread_mutex_lock(&s->lock);
        int idle = !s->deleted && now - s->last_activity > timeout_s && s->status != SESSION_PROCESSING;
        pthread_mutex_unlock(&s->lock);
        if (idle && found < max)
            out[found++] = s;
        else
            sessions_put(s);
    }
    free(all);
    return found;
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

int sessions_capacity(void) {
    pthread_mutex_lock(&reg.lock);
    int n = reg.max;
    pthread_mutex_unlock(&reg.lock);
    return n;
}
