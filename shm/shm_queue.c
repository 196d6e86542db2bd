#include "shm/shm_queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

#define ARENA_ALIGN 64

/* A block in the arena; blocks tile the arena back to back (first-fit, coalesced on free). */
typedef struct {
    uint64_t size;   /* bytes including this header, multiple of ARENA_ALIGN */
    uint32_t used;
    uint32_t slot;   /* owning job slot while used */
    uint64_t job_id; /* owning job while used (guards against a reused slot) */
    uint8_t pad[ARENA_ALIGN - 24];
} arena_block;

typedef struct {
    uint64_t magic;
    uint64_t total_size;
    uint64_t arena_off, arena_size;
    pthread_mutex_t lock;
    sem_t jobs_sem;     /* one post per queued job: wakes a worker */
    sem_t activity_sem; /* one post per event or finished job: wakes the front's dispatcher */
    uint64_t next_job_id;
    uint32_t ring[SHMQ_MAX_JOBS]; /* FIFO of queued slots; derivable from the job table */
    uint64_t ring_head, ring_tail;
    shmq_job jobs[SHMQ_MAX_JOBS];
    uint32_t job_taken[SHMQ_MAX_JOBS]; /* finished job handed to the front, awaiting release */
    shmq_event events[SHMQ_EVENT_CAP];
    uint64_t ev_head, ev_tail, ev_dropped;
    shmq_worker workers[SHMQ_MAX_WORKERS];
} shmq_header;

struct shmq {
    shmq_header *h;
    size_t size;
    int fd;
    char name[128];
};

static arena_block *block_at(shmq *q, uint64_t off) { return (arena_block *)((char *)q->h + off); }

/* Rebuilds the ring from the job table, oldest job first: the ring is derived state, so this is
 * the repair after a process died inside the lock (and is always correct to run). */
static void rebuild_ring(shmq_header *h) {
    uint32_t slots[SHMQ_MAX_JOBS];
    int n = 0;
    for (uint32_t i = 0; i < SHMQ_MAX_JOBS; i++)
        if (h->jobs[i].state == JOB_QUEUED) slots[n++] = i;
    for (int i = 1; i < n; i++) { /* insertion sort by job_id: n is tiny */
        uint32_t s = slots[i];
        int j = i - 1;
        while (j >= 0 && h->jobs[slots[j]].job_id > h->jobs[s].job_id) {
            slots[j + 1] = slots[j];
            j--;
        }
        slots[j + 1] = s;
    }
    h->ring_head = h->ring_tail = 0;
    for (int i = 0; i < n; i++) h->ring[h->ring_tail++ % SHMQ_MAX_JOBS] = slots[i];
}

static void lock_h(shmq_header *h) {
    int rc = pthread_mutex_lock(&h->lock);
    if (rc == EOWNERDEAD) {
        rebuild_ring(h);
        pthread_mutex_consistent(&h->lock);
    }
}

void shmq_lock(shmq *q) { lock_h(q->h); }
void shmq_unlock(shmq *q) { pthread_mutex_unlock(&q->h->lock); }

static void sleep_until(sem_t *s, double timeout_s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)((timeout_s - (long)timeout_s) * 1e9);
    ts.tv_sec += (time_t)timeout_s + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    while (sem_timedwait(s, &ts) < 0 && errno == EINTR) {
    }
}

shmq *shmq_create(const char *name, size_t arena_bytes, char *err, size_t errlen) {
    shm_unlink(name); /* a segment left by a crashed front is stale by definition */
    size_t header = (sizeof(shmq_header) + 4095) & ~(size_t)4095;
    arena_bytes = (arena_bytes + 4095) & ~(size_t)4095;
    size_t total = header + arena_bytes;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "shm_open(%s): %s", name, strerror(errno));
        return NULL;
    }
    if (ftruncate(fd, (off_t)total)) {
        snprintf(err, errlen, "ftruncate(%s, %zu): %s", name, total, strerror(errno));
        close(fd);
        shm_unlink(name);
        return NULL;
    }
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap(%s): %s", name, strerror(errno));
        close(fd);
        shm_unlink(name);
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
    h->arena_off = header;
    h->arena_size = arena_bytes;
    h->next_job_id = 1;
    arena_block *b = (arena_block *)((char *)h + header);
    memset(b, 0, sizeof *b);
    b->size = arena_bytes;
    h->magic = SHMQ_MAGIC; /* last: an attacher never sees a half-initialised segment */
    shmq *q = calloc(1, sizeof *q);
    q->h = h;
    q->size = total;
    q->fd = fd;
    snprintf(q->name, sizeof q->name, "%s", name);
    return q;
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
    q->h = h;
    q->size = (size_t)st.st_size;
    q->fd = fd;
    snprintf(q->name, sizeof q->name, "%s", name);
    return q;
}

void shmq_close(shmq *q, int unlink_it) {
    if (!q) return;
    munmap(q->h, q->size);
    close(q->fd);
    if (unlink_it) shm_unlink(q->name);
    free(q);
}

int shmq_submit(shmq *q, const shmq_job_params *p, uint64_t *job_id) {
    shmq_header *h = q->h;
    lock_h(h);
    int slot = -1;
    for (int i = 0; i < SHMQ_MAX_JOBS; i++)
        if (h->jobs[i].state == JOB_FREE) {
            slot = i;
            break;
        }
    if (slot >= 0) {
        shmq_job *j = &h->jobs[slot];
        memset(j, 0, sizeof *j);
        j->params = *p;
        j->job_id = h->next_job_id++;
        j->t_queued = now_mono();
        h->job_taken[slot] = 0;
        j->state = JOB_QUEUED;
        h->ring[h->ring_tail++ % SHMQ_MAX_JOBS] = (uint32_t)slot;
        *job_id = j->job_id;
    }
    pthread_mutex_unlock(&h->lock);
    if (slot >= 0) sem_post(&h->jobs_sem);
    return slot;
}

int shmq_claim(shmq *q, int worker, double timeout_s, shmq_job_params *params, uint64_t *job_id) {
    shmq_header *h = q->h;
    /* The semaphore is only a wake-up hint: the ring is checked on every pass, so a token lost
     * with a dead worker delays a job by at most one timeout, never strands it. */
    sleep_until(&h->jobs_sem, timeout_s);
    lock_h(h);
    int slot = -1;
    while (h->ring_head != h->ring_tail) {
        uint32_t s = h->ring[h->ring_head++ % SHMQ_MAX_JOBS];
        shmq_job *j = &h->jobs[s];
        if (j->state != JOB_QUEUED) continue; /* cancelled while queued */
        j->state = JOB_CLAIMED;
        j->owner_pid = getpid();
        j->owner_worker = worker;
        j->attempts++;
        j->t_claimed = now_mono();
        *params = j->params;
        *job_id = j->job_id;
        slot = (int)s;
        break;
    }
    if (worker >= 0 && worker < SHMQ_MAX_WORKERS) h->workers[worker].heartbeat = now_mono();
    pthread_mutex_unlock(&h->lock);
    return slot;
}

static int owns(shmq_header *h, int slot, uint64_t job_id) {
    return slot >= 0 && slot < SHMQ_MAX_JOBS && h->jobs[slot].job_id == job_id &&
           h->jobs[slot].state == JOB_CLAIMED && h->jobs[slot].owner_pid == getpid();
}

void shmq_progress(shmq *q, int slot, uint64_t job_id, const char *stage, double progress,
                   const char *message) {
    shmq_header *h = q->h;
    lock_h(h);
    int ok = owns(h, slot, job_id) && h->ev_tail - h->ev_head < SHMQ_EVENT_CAP;
    if (ok) {
        shmq_event *e = &h->events[h->ev_tail % SHMQ_EVENT_CAP];
        memset(e, 0, sizeof *e);
        e->kind = EVENT_PROGRESS;
        e->slot = (uint32_t)slot;
        e->job_id = job_id;
        e->progress = progress;
        snprintf(e->stage, sizeof e->stage, "%s", stage);
        snprintf(e->message, sizeof e->message, "%s", message);
        h->ev_tail++;
    } else {
        h->ev_dropped++;
    }
    pthread_mutex_unlock(&h->lock);
    if (ok) sem_post(&h->activity_sem);
}

/* Merges every run of adjacent free blocks. Linear in the number of blocks (≈ jobs in flight). */
static void arena_coalesce(shmq *q) {
    shmq_header *h = q->h;
    uint64_t off = h->arena_off, end = h->arena_off + h->arena_size;
    while (off < end) {
        arena_block *b = block_at(q, off);
        while (!b->used && off + b->size < end && !block_at(q, off + b->size)->used)
            b->size += block_at(q, off + b->size)->size;
        off += b->size;
    }
}

/* Returns the pages inside a freed block to the kernel so a burst of big GLBs does not pin
 * memory forever (tmpfs keeps pages until they are punched out). */
static void arena_release_pages(shmq *q, uint64_t off, uint64_t size) {
    uint64_t start = (off + sizeof(arena_block) + 4095) & ~(uint64_t)4095;
    uint64_t stop = (off + size) & ~(uint64_t)4095;
    if (stop > start + (1u << 20)) madvise((char *)q->h + start, stop - start, MADV_REMOVE);
}

static void arena_free_owned(shmq *q, int slot, uint64_t job_id) {
    shmq_header *h = q->h;
    uint64_t off = h->arena_off, end = h->arena_off + h->arena_size;
    while (off < end) {
        arena_block *b = block_at(q, off);
        if (b->used && b->slot == (uint32_t)slot && b->job_id == job_id) {
            b->used = 0;
            arena_release_pages(q, off, b->size);
        }
        off += b->size;
    }
    arena_coalesce(q);
}

void *shmq_result_alloc(shmq *q, int slot, uint64_t job_id, size_t len, uint64_t *off_out) {
    shmq_header *h = q->h;
    uint64_t need = (sizeof(arena_block) + len + ARENA_ALIGN - 1) & ~(uint64_t)(ARENA_ALIGN - 1);
    void *ptr = NULL;
    lock_h(h);
    if (owns(h, slot, job_id)) {
        arena_free_owned(q, slot, job_id); /* a retried job may have left a block behind */
        uint64_t off = h->arena_off, end = h->arena_off + h->arena_size;
        while (off < end) {
            arena_block *b = block_at(q, off);
            if (!b->used && b->size >= need) {
                if (b->size - need >= 2 * sizeof(arena_block)) {
                    /* Write the remainder's header before shrinking this block, so a death
                     * between the two stores still leaves a walkable block list. */
                    arena_block *rest = block_at(q, off + need);
                    memset(rest, 0, sizeof *rest);
                    rest->size = b->size - need;
                    b->size = need;
                }
                b->slot = (uint32_t)slot;
                b->job_id = job_id;
                b->used = 1;
                *off_out = off + sizeof(arena_block);
                ptr = (char *)h + *off_out;
                break;
            }
            off += b->size;
        }
    }
    pthread_mutex_unlock(&h->lock);
    return ptr;
}

void shmq_finish(shmq *q, int slot, uint64_t job_id, uint64_t off, size_t glb_len,
                 size_t meta_len, const double stage_ms[4]) {
    shmq_header *h = q->h;
    lock_h(h);
    int ok = owns(h, slot, job_id);
    if (ok) {
        shmq_job *j = &h->jobs[slot];
        j->result_off = off;
        j->glb_len = glb_len;
        j->meta_len = meta_len;
        j->decode_ms = stage_ms[0];
        j->model_ms = stage_ms[1];
        j->fusion_ms = stage_ms[2];
        j->glb_ms = stage_ms[3];
        j->t_finished = now_mono();
        j->state = JOB_DONE;
        int w = j->owner_worker;
        if (w >= 0 && w < SHMQ_MAX_WORKERS) h->workers[w].jobs_done++;
    }
    pthread_mutex_unlock(&h->lock);
    if (ok) sem_post(&h->activity_sem);
}

void shmq_fail(shmq *q, int slot, uint64_t job_id, const char *error) {
    shmq_header *h = q->h;
    lock_h(h);
    int ok = owns(h, slot, job_id);
    if (ok) {
        shmq_job *j = &h->jobs[slot];
        arena_free_owned(q, slot, job_id);
        snprintf(j->error, sizeof j->error, "%s", error);
        j->t_finished = now_mono();
        j->state = JOB_FAILED;
        int w = j->owner_worker;
        if (w >= 0 && w < SHMQ_MAX_WORKERS) h->workers[w].jobs_failed++;
    }
    pthread_mutex_unlock(&h->lock);
    if (ok) sem_post(&h->activity_sem);
}

void shmq_wait_activity(shmq *q, double timeout_s) { sleep_until(&q->h->activity_sem, timeout_s); }

int shmq_take_events(shmq *q, shmq_event *out, int max) {
    shmq_header *h = q->h;
    int n = 0;
    lock_h(h);
    while (n < max && h->ev_head != h->ev_tail) out[n++] = h->events[h->ev_head++ % SHMQ_EVENT_CAP];
    pthread_mutex_unlock(&h->lock);
    return n;
}

static void release_locked(shmq *q, int slot) {
    shmq_job *j = &q->h->jobs[slot];
    arena_free_owned(q, slot, j->job_id);
    q->h->job_taken[slot] = 0;
    j->state = JOB_FREE;
    j->job_id = 0;
}

int shmq_take_finished(shmq *q, shmq_job *out) {
    shmq_header *h = q->h;
    int found = -1;
    lock_h(h);
    for (int i = 0; i < SHMQ_MAX_JOBS && found < 0; i++) {
        shmq_job *j = &h->jobs[i];
        if ((j->state != JOB_DONE && j->state != JOB_FAILED) || h->job_taken[i]) continue;
        if (j->cancelled) {
            release_locked(q, i);
            continue;
        }
        h->job_taken[i] = 1;
        *out = *j;
        found = i;
    }
    pthread_mutex_unlock(&h->lock);
    return found;
}

void shmq_release(shmq *q, int slot) {
    if (slot < 0 || slot >= SHMQ_MAX_JOBS) return;
    lock_h(q->h);
    release_locked(q, slot);
    pthread_mutex_unlock(&q->h->lock);
}

void shmq_cancel(shmq *q, int slot, uint64_t job_id) {
    shmq_header *h = q->h;
    if (slot < 0 || slot >= SHMQ_MAX_JOBS) return;
    lock_h(h);
    shmq_job *j = &h->jobs[slot];
    if (j->job_id == job_id) {
        if (j->state == JOB_QUEUED) {
            release_locked(q, slot); /* the ring entry is skipped by claimers */
        } else if (j->state == JOB_CLAIMED) {
            j->cancelled = 1;
        } else if (j->state == JOB_DONE || j->state == JOB_FAILED) {
            if (!h->job_taken[slot]) release_locked(q, slot);
            else j->cancelled = 1;
        }
    }
    pthread_mutex_unlock(&h->lock);
}

int shmq_recover_dead_worker(shmq *q, int pid) {
    shmq_header *h = q->h;
    int affected = 0, requeued = 0;
    lock_h(h);
    for (int i = 0; i < SHMQ_MAX_JOBS; i++) {
        shmq_job *j = &h->jobs[i];
        if (j->state != JOB_CLAIMED || j->owner_pid != pid) continue;
        affected++;
        arena_free_owned(q, i, j->job_id);
        if (j->cancelled) {
            release_locked(q, i);
        } else if (j->attempts < SHMQ_MAX_ATTEMPTS) {
            j->state = JOB_QUEUED;
            j->owner_pid = 0;
            h->ring[h->ring_tail++ % SHMQ_MAX_JOBS] = (uint32_t)i;
            requeued++;
        } else {
            snprintf(j->error, sizeof j->error,
                     "the worker process died while processing this request (%u attempts); "
                     "the session and its images are kept, you can generate again",
                     j->attempts);
            j->t_finished = now_mono();
            j->state = JOB_FAILED;
        }
    }
    for (int w = 0; w < SHMQ_MAX_WORKERS; w++)
        if (h->workers[w].pid == pid) h->workers[w].state = WORKER_DEAD;
    pthread_mutex_unlock(&h->lock);
    for (int i = 0; i < requeued; i++) sem_post(&h->jobs_sem);
    if (affected) sem_post(&h->activity_sem);
    return affected;
}

const void *shmq_arena_ptr(shmq *q, uint64_t off) { return (const char *)q->h + off; }

shmq_worker *shmq_worker_slot(shmq *q, int i) {
    return (i >= 0 && i < SHMQ_MAX_WORKERS) ? &q->h->workers[i] : NULL;
}

void shmq_counts(shmq *q, int *queued, int *running) {
    int qd = 0, rn = 0;
    lock_h(q->h);
    for (int i = 0; i < SHMQ_MAX_JOBS; i++) {
        if (q->h->jobs[i].state == JOB_QUEUED) qd++;
        if (q->h->jobs[i].state == JOB_CLAIMED) rn++;
    }
    pthread_mutex_unlock(&q->h->lock);
    *queued = qd;
    *running = rn;
}

void shmq_arena_usage(shmq *q, size_t *used, size_t *total) {
    shmq_header *h = q->h;
    size_t u = 0;
    lock_h(h);
    uint64_t off = h->arena_off, end = h->arena_off + h->arena_size;
    while (off < end) {
        arena_block *b = block_at(q, off);
        if (b->used) u += b->size;
        off += b->size;
    }
    *total = h->arena_size;
    pthread_mutex_unlock(&h->lock);
    *used = u;
}

void shmq_wake_workers(shmq *q, int n) {
    for (int i = 0; i < n; i++) sem_post(&q->h->jobs_sem);
}
