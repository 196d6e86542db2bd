#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double now_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int write_atomic(const char *path, const void *data, size_t len, int durable, void (*halfway)(void)) {
    char tmp[4096];
    if (fmt_path(tmp, sizeof tmp, "%s.tmp.%d", path, (int)gettid())) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    size_t half = halfway ? len / 2 : len;
    int bad = write_all(fd, data, half);
    if (!bad && halfway) {
        halfway();
        bad = write_all(fd, (const char *)data + half, len - half);
    }
    /* fsync before rename: after a crash the name points at complete data, never a hole. */
    if (bad || (durable && fsync(fd))) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (close(fd) || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len) {
    return write_atomic(path, data, len, 1, NULL);
}

int write_file_atomic_nosync(const char *path, const void *data, size_t len) {
    return write_atomic(path, data, len, 0, NULL);
}

int write_file_atomic_hooked(const char *path, const void *data, size_t len, int durable, void (*halfway)(void)) {
    return write_atomic(path, data, len, durable, halfway);
}

int is_atomic_temp_name(const char *name) {
    for (const char *t = strstr(name, ".tmp."); t; t = strstr(t + 1, ".tmp.")) {
        const char *d = t + 5;
        if (t == name || !*d) continue;
        while (*d >= '0' && *d <= '9') d++;
        if (!*d) return 1;
    }
    return 0;
}

uint8_t *read_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st)) {
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    if (len) *len = got;
    return buf;
}

int mkdir_p(const char *path) {
    char buf[4096];
    if (fmt_path(buf, sizeof buf, "%s", path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST) return -1;
    return 0;
}

int remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st)) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char child[4096];
        if (fmt_path(child, sizeof child, "%s/%s", path, e->d_name) || remove_tree(child)) rc = -1;
    }
    closedir(d);
    if (rmdir(path)) rc = -1;
    return rc;
}

void uuid4(char out[37]) {
    uint8_t b[16];
    /* Session ids are the only secret guarding a session when keys are off: 122 bits from the
     * OS or none at all. getrandom(flags 0) blocks until the pool is ready and returns 16 bytes
     * whole; only a signal interrupts it. Anything else (no getrandom: a pre-3.17 kernel, a
     * seccomp filter) tries /dev/urandom, then stops the process rather than issue a guessable
     * id. */
    ssize_t got;
    while ((got = getrandom(b, sizeof b, 0)) < 0 && errno == EINTR) {
    }
    if (got != (ssize_t)sizeof b) {
        FILE *f = fopen("/dev/urandom", "rb");
        size_t n = f ? fread(b, 1, sizeof b, f) : 0;
        if (f) fclose(f);
        if (n != sizeof b) {
            fprintf(stderr, "da3: no random bytes from the OS (getrandom, /dev/urandom): cannot make session ids\n");
            abort();
        }
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

int is_uuid(const char *s) {
    if (!s || strlen(s) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

static void verror(char *err, size_t errlen, const char *fmt, va_list ap) {
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
}

void set_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verror(err, errlen, fmt, ap);
    va_end(ap);
}

int fail_msg(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verror(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int fmt_path(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}
