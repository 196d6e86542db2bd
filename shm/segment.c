#include "shm/segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "shm/layout.h"

static atomic_int repairs_done;

static size_t page_round(size_t n) { return (n + 4095) & ~(size_t)4095; }

/* The pid recorded by the segment's creator, read without mapping (0 if not written yet). */
static int recorded_owner(int fd) {
    /* Two small reads, not a whole header on the stack (it is most of a megabyte). */
    uint64_t magic;
    int32_t pid;
    if (pread(fd, &magic, sizeof magic, offsetof(shmq_header, magic)) != (ssize_t)sizeof magic ||
        magic != SHMQ_MAGIC ||
        pread(fd, &pid, sizeof pid, offsetof(shmq_header, owner_pid)) != (ssize_t)sizeof pid)
        return 0;
    return pid;
}

/* Decides about an existing segment `name`. Its creator holds an exclusive flock on it for as
 * long as it lives (the kernel drops it when the process dies, however it dies), so a free
 * flock proves the owner dead. Returns 0 when the name is free now (stale segment removed, or
 * gone meanwhile): try creating again. Returns -1 with err set when a live front owns it. */
static int remove_if_stale(const char *name, char *err, size_t errlen) {
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "shm_open(%s): %s", name, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        if (errno == EWOULDBLOCK) {
            int pid = recorded_owner(fd);
            snprintf(err, errlen,
                     "%s belongs to a running da3-server (pid %d): another server "
                     "already uses this port; stop it first or choose another --port",
                     name, pid);
        } else {
            snprintf(err, errlen, "flock(%s): %s", name, strerror(errno));
        }
        close(fd);
        return -1;
    }
    /* Unlink only if the name still means the inode we locked: another new front may have
     * replaced the stale segment between our open and our lock. Unlinks are serialised by the
     * old inode's flock, so this check cannot go stale before the unlink. */
    int same = 0;
    int fd2 = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd2 >= 0) {
        struct stat held, now;
        same = !fstat(fd, &held) && !fstat(fd2, &now) && held.st_ino == now.st_ino &&
               held.st_dev == now.st_dev;
        close(fd2);
    }
    if (same) {
        int pid = recorded_owner(fd);
        shm_unlink(name);
        log_warn("shared memory %s: removed the segment left by a front that died (pid %d)", name, pid);
    }
    close(fd);
    return 0;
}

/* Lays out a fresh segment on fd (already flocked by us). */
static shmq *init_segment(int fd, const char *name, size_t arena_bytes, char *err, size_t errlen) {
    size_t header = page_round(sizeof(shmq_header));
    size_t total = header + arena_bytes;
    if (ftruncate(fd, (off_t)total)) {
        snprintf(err, errlen, "ftruncate(%s, %zu): %s", name, total, strerror(errno));
        return NULL;
    }
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap(%s): %s", name, strerror(errno));
        return NULL;
    }
    shmq_header *h = p;
    memset(h, 0, sizeof *h);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&h->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    sem_init(&h->jobs_sem, 1, 0);
    sem_init(&h->activity_sem, 1, 0);
    h->total_size = total;
    h->owner_pid = (int32_t)getpid();
    h->jobs.next_job_id = 1;
    arena_init(&h->arena, (char *)h, header, arena_bytes);
    h->magic = SHMQ_MAGIC; /* last: an attacher never sees a half-initialised segment */
    shmq *q = calloc(1, sizeof *q);
    if (!q) {
        munmap(p, total);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->h = h;
    q->size = total;
    q->fd = fd;
    q->owner = 1;
    snprintf(q->name, sizeof q->name, "%s", name);
    return q;
}

shmq *shmq_create(const char *name, size_t arena_bytes, char *err, size_t errlen) {
    arena_bytes = page_round(arena_bytes);
    for (int attempt = 0; attempt < 50; attempt++) {
        /* O_CLOEXEC also keeps the flock out of exec'd workers: it must die with this process. */
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            if (flock(fd, LOCK_EX | LOCK_NB)) {
                /* Another new front locked our empty segment in the instant before we did and
                 * will remove it as stale: start over. */
                close(fd);
                usleep(10000);
                continue;
            }
            shmq *q = init_segment(fd, name, arena_bytes, err, errlen);
            if (!q) {
                shm_unlink(name);
                close(fd);
            }
            return q;
        }
        if (errno != EEXIST) {
            snprintf(err, errlen, "shm_open(%s): %s", name, strerror(errno));
            return NULL;
        }
        if (remove_if_stale(name, err, errlen)) return NULL;
    }
    snprintf(err, errlen, "shared memory %s: could not create it (it kept being replaced)", name);
    return NULL;
}

shmq *shmq_attach(const char *name, char *err, size_t errlen) {
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "shm_open(%s): %s", name, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) || (size_t)st.st_size < sizeof(shmq_header)) {
        snprintf(err, errlen, "shared memory %s is missing or too small", name);
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap(%s): %s", name, strerror(errno));
        close(fd);
        return NULL;
    }
    shmq_header *h = p;
    if (h->magic != SHMQ_MAGIC || h->total_size != (uint64_t)st.st_size) {
        snprintf(err, errlen, "shared memory %s has an unknown layout (version mismatch?)", name);
        munmap(p, (size_t)st.st_size);
        close(fd);
        return NULL;
    }
    shmq *q = calloc(1, sizeof *q);
    if (!q) {
        munmap(p, (size_t)st.st_size);
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->h = h;
    q->size = (size_t)st.st_size;
    q->fd = fd;
    snprintf(q->name, sizeof q->name, "%s", name);
    return q;
}

void shmq_close(shmq *q, int unlink_it) {
    if (!q) return;
    /* Unlink while the flock is still held, so no new front can take the name for stale in
     * between. */
    if (unlink_it && q->owner) shm_unlink(q->name);
    munmap(q->h, q->size);
    close(q->fd);
    free(q);
}

/* Re-validates everything a holder may have left half-done. Each module repairs its own part;
 * the arena goes first because the job table's repair checks results against it. */
static void repair_locked(shmq *q) {
    shmq_header *h = q->h;
    int a = arena_repair_locked(&h->arena, (char *)h);
    int j = job_table_repair_locked(q);
    int e = event_ring_repair_locked(&h->events);
    int w = worker_table_repair_locked(&h->workers);
    atomic_fetch_add(&repairs_done, 1);
    log_warn("shared memory %s: a process died holding the queue lock; state re-validated "
             "(fixes: arena %d, jobs %d, events %d, workers %d)",
             q->name, a, j, e, w);
}

void shmq_lock(shmq *q) {
    int rc = pthread_mutex_lock(&q->h->lock);
    if (rc == 0) return;
    if (rc == EOWNERDEAD) {
        /* Repair before marking consistent: if we die repairing, the next locker gets
         * EOWNERDEAD again and repeats the repair. */
        repair_locked(q);
        rc = pthread_mutex_consistent(&q->h->lock);
        if (rc == 0) return;
    }
    /* ENOTRECOVERABLE: a holder died and the next one released it without repairing. Nothing
     * can lock the segment again; going on would corrupt it or hang, so stop loudly. */
    log_error("shared memory %s: the queue lock is unusable (%s); this process stops. Restart "
              "da3-server to get a fresh segment",
              q->name, rc == ENOTRECOVERABLE ? "not recoverable" : strerror(rc));
    abort();
}

void shmq_unlock(shmq *q) { pthread_mutex_unlock(&q->h->lock); }

/* Sleeps until a token is posted on s or timeout_s passes. */
static void wait_sem(sem_t *s, double timeout_s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)((timeout_s - (long)timeout_s) * 1e9);
    ts.tv_sec += (time_t)timeout_s + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    while (sem_timedwait(s, &ts) < 0 && errno == EINTR) {
    }
}

void segment_post_jobs(shmq *q, int n) {
    for (int i = 0; i < n; i++) sem_post(&q->h->jobs_sem);
}

void segment_post_activity(shmq *q) { sem_post(&q->h->activity_sem); }

void segment_wait_jobs(shmq *q, double timeout_s) { wait_sem(&q->h->jobs_sem, timeout_s); }

void shmq_wait_activity(shmq *q, double timeout_s) { wait_sem(&q->h->activity_sem, timeout_s); }

int shmq_validate(shmq *q, char *err, size_t errlen) {
    shmq_lock(q);
    int rc = arena_check_locked(&q->h->arena, (char *)q->h, err, errlen);
    if (!rc) rc = job_table_check_locked(q, err, errlen);
    if (!rc) rc = event_ring_check_locked(&q->h->events, err, errlen);
    shmq_unlock(q);
    return rc;
}

int shmq_repairs(void) { return atomic_load(&repairs_done); }
