/* Internal to the session modules (session_registry.c, session_images.c, session_store.c): how a
 * session is built, read back from disk and removed from it. Everything else uses session.h. */
#ifndef DA3_SESSION_STORE_H
#define DA3_SESSION_STORE_H

#include <stddef.h>

#include "frontend/session.h"

/* Largest session.json read back. A new one is a few hundred bytes; one written by the previous
 * version holds every image's name and may be large, and is read once to be migrated. */
#define SESSION_STATE_MAX_BYTES (64u << 20)
/* Largest per-image meta file read back (a 255-byte name and a little JSON). */
#define SESSION_META_MAX_BYTES (16u << 10)
/* A streaming session's stream/state.json (one camera per view: ~400 bytes each). */
#define SESSION_STREAM_STATE_MAX_BYTES (64u << 20)

/* Tombstones: a deleted session's folder is renamed to "<root>/.deleted-<id>-<n>" (not a uuid,
 * so a restart never loads it) before its tree is removed. */
#define SESSION_TOMBSTONE_PREFIX ".deleted-"

/* A zeroed session with its paths under root and one reference (the registry's); NULL on ENOMEM
 * or a path too long. */
session *session_alloc(const char *root, const char *id, int fsync_writes);

/* Frees a session and everything it owns (no lock may be held on it). */
void session_free(session *s);

/* Grows s->images to hold at least n entries. Returns 0 or -1 (ENOMEM). */
int session_images_reserve(session *s, int n);

/* Fills a freshly allocated session from its folder: session.json (config, status, times), then
 * the images (scanned from images/, or the list of a previous version's session.json, which is
 * then migrated to one meta file per image). Returns 0, or -1 (logged) when the state is
 * unreadable. */
int session_store_load(session *s, int server_max_images);

/* Writes image `index`'s meta file (display name) or, with display NULL, removes a stale one.
 * Returns 0 or -1 (errno set). */
int session_store_write_meta(const session *s, int index, const char *display);

/* Removes image `index`'s meta file if there is one. */
void session_store_remove_meta(const session *s, int index);

/* Caller holds s->lock and has set s->deleted: moves the folder out of the way atomically, to a
 * tombstone whose path goes to tomb (removed later, without the lock, by remove_tree), or removes
 * it in place when it cannot be renamed (tomb = ""). Returns 0, or -1 (logged) when the folder
 * is still there. */
int session_store_bury(session *s, char *tomb, size_t cap);

/* 1 if a folder name under the sessions root is a tombstone. */
int session_store_is_tombstone(const char *name);

#endif
