#include "frontend/client_limits.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Two seconds' worth of tokens: a client may burst, then is held to the rate. */
#define BURST_SECONDS 2.0

struct client_entry {
    char addr[CLIENT_ADDR_MAX];
    int websockets;
    double msg_tokens, byte_tokens, http_tokens, last; /* buckets as of `last` (monotonic s) */
    client_entry *next;                   /* hash chain */
};

static struct {
    client_limits_config cfg;
    client_entry **buckets;
    size_t nbuckets;
} T;

int client_limits_init(const client_limits_config *cfg, int max_conns) {
    T.cfg = *cfg;
    T.nbuckets = 1;
    while (T.nbuckets < (size_t)(max_conns > 0 ? max_conns : 1)) T.nbuckets <<= 1;
    T.buckets = calloc(T.nbuckets, sizeof *T.buckets);
    return T.buckets ? 0 : -1;
}

const client_limits_config *client_limits(void) { return &T.cfg; }

static size_t slot_of(const char *addr) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)addr; *p; p++) h = (h ^ *p) * 16777619u;
    return h & (T.nbuckets - 1);
}

/* Refills e's buckets up to the burst for the time since its last use. */
static void refill(client_entry *e, double now) {
    double dt = now - e->last;
    if (dt <= 0) return;
    e->last = now;
    if (T.cfg.msg_rate > 0) {
        e->msg_tokens += dt * T.cfg.msg_rate;
        if (e->msg_tokens > BURST_SECONDS * T.cfg.msg_rate) e->msg_tokens = BURST_SECONDS * T.cfg.msg_rate;
    }
    if (T.cfg.byte_rate > 0) {
        e->byte_tokens += dt * T.cfg.byte_rate;
        if (e->byte_tokens > BURST_SECONDS * T.cfg.byte_rate) e->byte_tokens = BURST_SECONDS * T.cfg.byte_rate;
    }
    if (T.cfg.http_rate > 0) {
        e->http_tokens += dt * T.cfg.http_rate;
        if (e->http_tokens > BURST_SECONDS * T.cfg.http_rate) e->http_tokens = BURST_SECONDS * T.cfg.http_rate;
    }
}

/* addr's entry, made with full buckets when it has none; NULL when out of memory. */
static client_entry *entry_of(const char *addr, double now) {
    client_entry **head = &T.buckets[slot_of(addr)], *e = NULL;
    /* Entries without sockets are kept until their buckets would be full again (so closing and
     * reopening a socket gains nothing), and dropped on the way past after that. */
    for (client_entry **p = head; *p;) {
        client_entry *x = *p;
        if (!strcmp(x->addr, addr)) {
            e = x;
            p = &x->next;
        } else if (x->websockets == 0 && now - x->last > BURST_SECONDS) {
            *p = x->next;
            free(x);
        } else {
            p = &x->next;
        }
    }
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) return NULL;
        snprintf(e->addr, sizeof e->addr, "%s", addr);
        e->last = now;
        e->msg_tokens = BURST_SECONDS * T.cfg.msg_rate;
        e->byte_tokens = BURST_SECONDS * T.cfg.byte_rate;
        e->http_tokens = BURST_SECONDS * T.cfg.http_rate;
        e->next = *head;
        *head = e;
    }
    return e;
}

client_entry *client_ws_acquire(const char *addr) {
    if (!T.buckets) return NULL;
    client_entry *e = entry_of(addr, now_mono());
    if (!e) return NULL;
    if (T.cfg.max_websockets > 0 && e->websockets >= T.cfg.max_websockets) return NULL;
    e->websockets++;
    return e;
}

void client_ws_release(client_entry *e) {
    if (e && e->websockets > 0) e->websockets--;
}

double client_take_request(const char *addr, double now) {
    if (T.cfg.http_rate <= 0 || !T.buckets) return 0;
    client_entry *e = entry_of(addr, now);
    if (!e) return 1; /* out of memory: refuse rather than grow */
    refill(e, now);
    if (e->http_tokens >= 1) {
        e->http_tokens -= 1;
        return 0;
    }
    return (1 - e->http_tokens) / T.cfg.http_rate;
}

int client_take_message(client_entry *e, double now) {
    if (!e || T.cfg.msg_rate <= 0) return 1;
    refill(e, now);
    if (e->msg_tokens < 1) return 0;
    e->msg_tokens -= 1;
    return 1;
}

double client_take_bytes(client_entry *e, size_t n, double now) {
    if (!e || T.cfg.byte_rate <= 0) return 0;
    refill(e, now);
    e->byte_tokens -= (double)n;
    return e->byte_tokens >= 0 ? 0 : -e->byte_tokens / T.cfg.byte_rate;
}
