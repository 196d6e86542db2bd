#include "frontend/handler_pool.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/log.h"
#include "frontend/conn.h"

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t *ring;      /* connections waiting for a thread; each at most once (conn.h) */
    int head, n, cap;
    int stopping;
    pthread_t *threads;
    int nthreads;
    conn_handlers h;
} p = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* Runs every event the connection has, in order; the connection is idle again when its inbox is
 * empty (conn_next_event returns NULL). */
static void run_connection(uint64_t id) {
    conn_event *e;
    while ((e = conn_next_event(id))) {
        switch (e->type) {
        case CONN_EV_OPEN: p.h.on_open(id, (const char *)e->data, &e->who, e->client); break;
        case CONN_EV_MESSAGE:
            p.h.on_message(id, e->opcode, e->data, e->len);
            conn_resume_read(id);
            break;
        case CONN_EV_CLOSED:
            p.h.on_closed(id);
            conn_event_free(e);
            conn_release(id);
            return;
        }
        conn_event_free(e);
    }
}

static void *pool_thread(void *arg) {
    (void)arg;
    pthread_mutex_lock(&p.lock);
    for (;;) {
        while (!p.n && !p.stopping) pthread_cond_wait(&p.cond, &p.lock);
        if (!p.n) break;
        uint64_t id = p.ring[p.head];
        p.head = (p.head + 1) % p.cap;
        p.n--;
        pthread_mutex_unlock(&p.lock);
        run_connection(id);
        pthread_mutex_lock(&p.lock);
    }
    pthread_mutex_unlock(&p.lock);
    return NULL;
}

int handler_pool_start(int nthreads, size_t stack_bytes, int max_conns, const conn_handlers *h) {
    p.h = *h;
    p.cap = max_conns;
    p.ring = malloc((size_t)max_conns * sizeof *p.ring);
    p.threads = calloc((size_t)nthreads, sizeof *p.threads);
    if (!p.ring || !p.threads) return -1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* Sized on purpose: handlers parse client JSON (depth-bounded before Jansson recurses) and
     * run image validation (libjpeg, libpng, libheif, libwebp), which keep their large state on
     * the heap (test_image_formats validates on 256 KB stacks). */
    pthread_attr_setstacksize(&attr, stack_bytes);
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&p.threads[i], &attr, pool_thread, NULL)) {
            log_error("handler pool: cannot start thread %d", i);
            pthread_attr_destroy(&attr);
            return -1;
        }
        p.nthreads++;
    }
    pthread_attr_destroy(&attr);
    return 0;
}

void handler_pool_schedule(uint64_t conn_id) {
    pthread_mutex_lock(&p.lock);
    if (p.n < p.cap) {
        p.ring[(p.head + p.n) % p.cap] = conn_id;
        p.n++;
        pthread_cond_signal(&p.cond);
    }
    pthread_mutex_unlock(&p.lock);
}

void handler_pool_stop(void) {
    pthread_mutex_lock(&p.lock);
    p.stopping = 1;
    pthread_cond_broadcast(&p.cond);
    pthread_mutex_unlock(&p.lock);
    for (int i = 0; i < p.nthreads; i++) pthread_join(p.threads[i], NULL);
    free(p.threads);
    free(p.ring);
    p.threads = NULL;
    p.ring = NULL;
    p.nthreads = 0;
}
