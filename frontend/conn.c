#include "frontend/conn.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "frontend/metrics.h"
#include "frontend/ws_frame.h"

typedef struct {
    pthread_mutex_t lock;
    uint32_t gen;            /* bumped on release: ids of earlier occupants stop matching */
    int in_use;
    int accepting;           /* sends are queued (cleared by close requests and detach) */
    conn_out *out_head, *out_tail;
    size_t out_bytes;        /* queued + taken-but-unwritten bytes, against the cap */
    int dirty;               /* on the dirty list */
    int resume_read;
    conn_event *in_head, *in_tail;
    int scheduled;           /* a handler owns the inbox */
    void *user;
} slot;

static struct {
    slot *slots;
    int max;
    size_t out_cap;
    int *free_list, free_n;
    pthread_mutex_t free_lock;
    int *dirty;              /* ring of slot indices, each at most once (slot.dirty) */
    int dirty_head, dirty_n;
    pthread_mutex_t dirty_lock;
    int wake_fd;
} t = {.free_lock = PTHREAD_MUTEX_INITIALIZER, .dirty_lock = PTHREAD_MUTEX_INITIALIZER, .wake_fd = -1};

#define IDX_BITS 24
#define IDX_MASK ((1u << IDX_BITS) - 1)

static uint64_t make_id(int idx, uint32_t gen) { return (uint64_t)gen << IDX_BITS | (uint64_t)idx; }

int conn_index(uint64_t id) { return (int)(id & IDX_MASK); }

/* Locks the slot of id if it is still that connection; NULL otherwise (nothing locked). */
static slot *lock_id(uint64_t id) {
    if (!id || !t.slots) return NULL;
    int idx = conn_index(id);
    if (idx >= t.max) return NULL;
    slot *s = &t.slots[idx];
    pthread_mutex_lock(&s->lock);
    if (!s->in_use || make_id(idx, s->gen) != id) {
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    return s;
}

int conn_table_init(int max_conns, size_t out_cap) {
    if (max_conns < 1 || max_conns > (int)IDX_MASK) return -1;
    t.slots = calloc((size_t)max_conns, sizeof *t.slots);
    t.free_list = malloc((size_t)max_conns * sizeof *t.free_list);
    t.dirty = malloc((size_t)max_conns * sizeof *t.dirty);
    t.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!t.slots || !t.free_list || !t.dirty || t.wake_fd < 0) return -1;
    t.max = max_conns;
    t.out_cap = out_cap;
    for (int i = 0; i < max_conns; i++) {
        pthread_mutex_init(&t.slots[i].lock, NULL);
        t.slots[i].gen = 1;
        t.free_list[i] = max_conns - 1 - i;
    }
    t.free_n = max_conns;
    return 0;
}

static void free_out(conn_out *o) {
    free(o->data);
    free(o->note);
    free(o);
}

static atomic_size_t inbound;

int conn_inbound_reserve(size_t n, size_t budget) {
    size_t cur = atomic_load(&inbound);
    do {
        if (cur > 0 && cur + n > budget) return 0;
    } while (!atomic_compare_exchange_weak(&inbound, &cur, cur + n));
    return 1;
}

void conn_inbound_release(size_t n) { atomic_fetch_sub(&inbound, n); }
size_t conn_inbound_bytes(void) { return atomic_load(&inbound); }

void conn_event_free(conn_event *e) {
    if (!e) return;
    if (e->cost) conn_inbound_release(e->cost);
    free(e->data);
    free(e);
}

static void free_events(conn_event *e) {
    while (e) {
        conn_event *n = e->next;
        conn_event_free(e);
        e = n;
    }
}

void conn_table_free(void) {
    if (!t.slots) return;
    for (int i = 0; i < t.max; i++) {
        slot *s = &t.slots[i];
        for (conn_out *o = s->out_head, *n; o; o = n) n = o->next, free_out(o);
        free_events(s->in_head);
        pthread_mutex_destroy(&s->lock);
    }
    free(t.slots);
    free(t.free_list);
    free(t.dirty);
    if (t.wake_fd >= 0) close(t.wake_fd);
    memset(&t, 0, sizeof t);
    t.wake_fd = -1;
}

int conn_table_wake_fd(void) { return t.wake_fd; }

uint64_t conn_open(void) {
    pthread_mutex_lock(&t.free_lock);
    int idx = t.free_n ? t.free_list[--t.free_n] : -1;
    pthread_mutex_unlock(&t.free_lock);
    if (idx < 0) return 0;
    slot *s = &t.slots[idx];
    pthread_mutex_lock(&s->lock);
    s->in_use = 1;
    s->accepting = 1;
    s->out_bytes = 0;
    /* `dirty` is left alone: a previous occupant's entry may still be on the list, and the loop
     * reads the slot's current occupant from it. */
    s->resume_read = s->scheduled = 0;
    s->user = NULL;
    uint64_t id = make_id(idx, s->gen);
    pthread_mutex_unlock(&s->lock);
    return id;
}

/* Puts the slot on the dirty list and wakes the loop (caller holds s->lock). */
static void mark_dirty(slot *s, uint64_t id) {
    if (s->dirty) return;
    s->dirty = 1;
    pthread_mutex_lock(&t.dirty_lock);
    t.dirty[(t.dirty_head + t.dirty_n++) % t.max] = conn_index(id);
    pthread_mutex_unlock(&t.dirty_lock);
    uint64_t one = 1;
    if (write(t.wake_fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is already non-zero, so the loop is being woken anyway. */
    }
}

/* Appends a frame (caller holds s->lock); the table takes data and note. */
static void append_out(slot *s, uint64_t id, int opcode, char *data, size_t len, char *note) {
    conn_out *o = calloc(1, sizeof *o);
    if (!o) {
        free(data);
        free(note);
        return;
    }
    o->opcode = opcode;
    o->hlen = opcode < 0 ? 0 : ws_frame_server_header(o->hdr, opcode, len);
    o->data = data;
    o->len = len;
    o->note = note;
    o->queued_at = now_mono();
    if (s->out_tail) s->out_tail->next = o;
    else s->out_head = o;
    s->out_tail = o;
    s->out_bytes += o->hlen + len;
    mark_dirty(s, id);
}

static int fits(const slot *s, size_t len) { return s->out_bytes == 0 || s->out_bytes + len <= t.out_cap; }

int conn_send_text(uint64_t id, const char *text, size_t len) {
    slot *s = lock_id(id);
    if (!s) return CONN_GONE;
    int rc = CONN_GONE;
    if (s->accepting) {
        rc = CONN_FULL;
        char *copy = fits(s, len) ? malloc(len ? len : 1) : NULL;
        if (copy) {
            memcpy(copy, text, len);
            append_out(s, id, WS_OP_TEXT, copy, len, NULL);
            rc = CONN_QUEUED;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void conn_send_raw(uint64_t id, char *data, size_t len) {
    slot *s = lock_id(id);
    if (!s) {
        free(data);
        return;
    }
    append_out(s, id, -1, data, len, NULL);
    pthread_mutex_unlock(&s->lock);
}

/* Queues a close frame and stops accepting sends (caller holds s->lock). */
static void close_locked(slot *s, uint64_t id, int code, const char *reason) {
    if (!s->accepting) return;
    char *payload = malloc(WS_MAX_CONTROL);
    if (payload) append_out(s, id, WS_OP_CLOSE, payload, ws_close_payload((uint8_t *)payload, code, reason), NULL);
    s->accepting = 0;
}

int conn_send_owned(uint64_t id, int opcode, char *data, size_t len, char *note) {
    slot *s = lock_id(id);
    if (!s) {
        if (note) log_warn("%s: NOT delivered (the connection is gone)", note);
        free(data);
        free(note);
        return CONN_GONE;
    }
    int rc;
    if (!s->accepting) {
        if (note) log_warn("%s: NOT delivered (the connection is closing)", note);
        free(data);
        free(note);
        rc = CONN_GONE;
    } else if (!fits(s, len)) {
        if (note) log_warn("%s: NOT delivered (%zu bytes still unread by the client); closing it", note, s->out_bytes);
        free(data);
        free(note);
        close_locked(s, id, WS_CLOSE_POLICY, "client is not reading its messages");
        rc = CONN_FULL;
    } else {
        append_out(s, id, opcode, data, len, note);
        rc = CONN_QUEUED;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void conn_close(uint64_t id, int code, const char *reason) {
    slot *s = lock_id(id);
    if (!s) return;
    close_locked(s, id, code, reason);
    pthread_mutex_unlock(&s->lock);
}

int conn_take_dirty(uint64_t *out, int max) {
    uint64_t drain;
    if (read(t.wake_fd, &drain, sizeof drain) < 0) {
        /* EAGAIN: nothing was signalled since the last call. */
    }
    pthread_mutex_lock(&t.dirty_lock);
    int n = 0;
    int idx[256];
    if (max > 256) max = 256;
    while (n < max && t.dirty_n) {
        idx[n++] = t.dirty[t.dirty_head];
        t.dirty_head = (t.dirty_head + 1) % t.max;
        t.dirty_n--;
    }
    int more = t.dirty_n > 0;
    pthread_mutex_unlock(&t.dirty_lock);
    if (more) { /* keep the loop awake for the rest */
        uint64_t one = 1;
        if (write(t.wake_fd, &one, sizeof one) < 0) {
        }
    }
    /* Clear the flags so new work re-lists them, and report each slot's current occupant. */
    int k = 0;
    for (int i = 0; i < n; i++) {
        slot *s = &t.slots[idx[i]];
        pthread_mutex_lock(&s->lock);
        s->dirty = 0;
        if (s->in_use) out[k++] = make_id(idx[i], s->gen);
        pthread_mutex_unlock(&s->lock);
    }
    return k;
}

conn_out *conn_take_out(uint64_t id, int *resume_read) {
    *resume_read = 0;
    slot *s = lock_id(id);
    if (!s) return NULL;
    conn_out *o = s->out_head;
    s->out_head = s->out_tail = NULL;
    *resume_read = s->resume_read;
    s->resume_read = 0;
    pthread_mutex_unlock(&s->lock);
    return o;
}

void conn_out_done(uint64_t id, conn_out *o, int delivered, const char *why) {
    if (o->note) {
        if (delivered) {
            /* Only results carry a note: this is their send stage (queued -> last byte written). */
            double send_s = now_mono() - o->queued_at;
            metrics_stage(METRICS_STAGE_SEND, send_s);
            log_info("%s: delivered (%zu bytes, %.0f ms after it was queued)", o->note, o->len, send_s * 1e3);
        } else
            log_warn("%s: NOT delivered (%s)", o->note, why ? why : "connection closed");
    }
    size_t bytes = o->hlen + o->len;
    free_out(o);
    slot *s = lock_id(id);
    if (!s) return;
    s->out_bytes = s->out_bytes > bytes ? s->out_bytes - bytes : 0;
    pthread_mutex_unlock(&s->lock);
}

int conn_deliver(uint64_t id, conn_event *ev) {
    ev->next = NULL;
    slot *s = lock_id(id);
    if (!s) {
        free_events(ev);
        return 0;
    }
    if (s->in_tail) s->in_tail->next = ev;
    else s->in_head = ev;
    s->in_tail = ev;
    int schedule = !s->scheduled;
    s->scheduled = 1;
    pthread_mutex_unlock(&s->lock);
    return schedule;
}

conn_event *conn_next_event(uint64_t id) {
    slot *s = lock_id(id);
    if (!s) return NULL;
    conn_event *e = s->in_head;
    if (e) {
        s->in_head = e->next;
        if (!s->in_head) s->in_tail = NULL;
        e->next = NULL;
    } else {
        s->scheduled = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return e;
}

void conn_resume_read(uint64_t id) {
    slot *s = lock_id(id);
    if (!s) return;
    s->resume_read = 1;
    mark_dirty(s, id);
    pthread_mutex_unlock(&s->lock);
}

void conn_detach(uint64_t id, const char *why) {
    slot *s = lock_id(id);
    if (!s) return;
    s->accepting = 0;
    conn_out *o = s->out_head;
    s->out_head = s->out_tail = NULL;
    pthread_mutex_unlock(&s->lock);
    while (o) {
        conn_out *n = o->next;
        conn_out_done(id, o, 0, why);
        o = n;
    }
}

void conn_release(uint64_t id) {
    slot *s = lock_id(id);
    if (!s) return;
    for (conn_out *o = s->out_head, *n; o; o = n) n = o->next, free_out(o);
    free_events(s->in_head);
    s->out_head = s->out_tail = NULL;
    s->in_head = s->in_tail = NULL;
    s->in_use = 0;
    s->accepting = 0;
    s->gen++;
    if (s->gen == 0) s->gen = 1; /* id 0 means "no connection" */
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&t.free_lock);
    t.free_list[t.free_n++] = conn_index(id);
    pthread_mutex_unlock(&t.free_lock);
}

void **conn_user(uint64_t id) {
    int idx = conn_index(id);
    if (!t.slots || idx >= t.max) return NULL;
    /* Owned by the one handler running this connection's events: no lock needed. */
    return &t.slots[idx].user;
}

size_t conn_out_bytes(uint64_t id) {
    slot *s = lock_id(id);
    if (!s) return 0;
    size_t n = s->out_bytes;
    pthread_mutex_unlock(&s->lock);
    return n;
}
