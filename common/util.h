/* Small process-wide helpers: clocks, files written atomically, directories, ids. */
#ifndef DA3_UTIL_H
#define DA3_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wall-clock seconds since the epoch, with sub-second precision. */
double now_wall(void);

/* Monotonic seconds (for durations and timeouts). */
double now_mono(void);

/* Writes data to path via a temporary file in the same directory, fsync and rename, so readers
 * see the old or the new content, never a mix. Returns 0 or -1 (errno set). */
int write_file_atomic(const char *path, const void *data, size_t len);

/* As write_file_atomic without the fsync: atomic against process crashes (rename), not against
 * power loss; several times cheaper per call. */
int write_file_atomic_nosync(const char *path, const void *data, size_t len);

/* write_file_atomic (durable) or _nosync, calling halfway() once half of the data is in the
 * temporary file, before the rest and the rename: where a test's fault point (common/fault.h)
 * stops the writer with a partial file on disk. */
int write_file_atomic_hooked(const char *path, const void *data, size_t len, int durable, void (*halfway)(void));

/* 1 for a name write_file_atomic gives its temporary files ("NAME.tmp.TID"): one a crash left
 * behind, never a file of its own. */
int is_atomic_temp_name(const char *name);

/* Reads a whole file into a malloc'd buffer (NUL-terminated for convenience); *len gets the size.
 * Returns NULL (errno set) on failure. */
uint8_t *read_file(const char *path, size_t *len);

/* mkdir -p with mode 0755; returns 0 or -1. */
int mkdir_p(const char *path);

/* Removes a directory tree (like rm -rf); returns 0 or -1. A missing path is success. */
int remove_tree(const char *path);

/* Writes a random RFC 4122 version-4 UUID (36 chars + NUL, 122 bits from the OS) into out[37];
 * aborts when the OS gives no random bytes (never a guessable id). */
void uuid4(char out[37]);

/* 1 if s is a canonical lowercase UUID string, else 0 (used to reject path tricks in ids). */
int is_uuid(const char *s);

/* Formats an error message into err[errlen] (nothing when err is NULL or errlen is 0). */
void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* set_error, then returns -1: `return fail_msg(err, errlen, "...")` in functions that answer 0 / -1. */
int fail_msg(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* snprintf that reports truncation: returns 0 if it fit, -1 otherwise. */
int fmt_path(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
