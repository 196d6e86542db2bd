/* Helpers shared by the fuzz harnesses (tests/fuzz/README.md): a private scratch folder for the
 * harnesses that must drive file readers, and one-time quiet logging. Header-only so each
 * harness stays one translation unit. */
#ifndef DA3_FUZZ_UTIL_H
#define DA3_FUZZ_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

/* The parsers log what they refuse (log_warn); a fuzzer refuses millions of inputs, so only a
 * level above every real one is kept: nothing is printed, and nothing is skipped either. */
static inline void fuzz_quiet_logs(void) { log_init("fuzz", (log_level)(LOG_ERROR + 1)); }

static char fuzz_tmp_root[512];

static inline void fuzz_tmp_cleanup(void) {
    if (fuzz_tmp_root[0]) remove_tree(fuzz_tmp_root);
}

/* A fresh folder under $TMPDIR (else /dev/shm when writable, else /tmp), made once per process
 * and removed at a normal exit (a crash leaves it, with the input saved by libFuzzer); harnesses
 * write only inside it, and rewrite or remove every file they use on each run, so no run sees
 * another's files. /dev/shm first because the file-reading harnesses spend most of each run in
 * file system calls, twice as fast on tmpfs. */
static inline const char *fuzz_tmp_dir(void) {
    if (!fuzz_tmp_root[0]) {
        const char *t = getenv("TMPDIR");
        if (!t || !*t) t = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_tmp_root, sizeof fuzz_tmp_root, "%s/da3-fuzz-XXXXXX", t);
        if (!mkdtemp(fuzz_tmp_root)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_tmp_cleanup);
    }
    return fuzz_tmp_root;
}

/* Writes exactly len bytes to path (created or truncated); aborts on failure, which would be the
 * harness's fault, not the target's. */
static inline void fuzz_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f)) {
        perror(path);
        abort();
    }
}

/* An invariant of the target failed: print it and abort, which libFuzzer reports as a crash
 * with the input saved. */
#define FUZZ_ASSERT(cond)                                                                    \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

#endif
