#include "frontend/client_limits.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Two seconds' worth of tokens: a client may burst, then is held to the rate. */
#define BURST_SECONDS 2.0

/* A bucket's size for a rate: the burst, but at least one token (a rate under 0.5/s would
 * otherwise never hold the one token a request takes, and refuse everything). */
static double burst_of(double rate) { return BURST_SECONDS * rate > 1.0 ? BURST_SECONDS * rate : 1.0; }

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

void client_limits_free(void) {
    for (size_t i = 0; T.buckets && i < T.nbuckets; i++)
        for (client_entry *e = T.buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    free(T.buckets);
    T.buckets = NULL;
    T.nbuckets = 0;
}

int client_limits_init(const client_limits_config *cfg, int max_conns) {
    client_limits_free();
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
        if (e->msg_tokens > burst_of(T.cfg.msg_rate)) e->msg_tokens = burst_of(T.cfg.msg_rate);
    }
    if (T.cfg.byte_rate > 0) {
        e->byte_tokens += dt * T.cfg.byte_rate;
        if (e->byte_tokens > burst_of(T.cfg.byte_rate)) e->byte_tokens = burst_of(T.cfg.byte_rate);
    }
    if (T.cfg.http_rate > 0) {
        e->http_tokens += dt * T.cfg.http_rate;
        if (e->http_tokens > burst_of(T.cfg.http_rate)) e->http_tokens = burst_of(T.cfg.http_rate);
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
        e->msg_tokens = burst_of(T.cfg.msg_rate);
        e->byte_tokens = burst_of(T.cfg.byte_rate);
        e->http_tokens = burst_of(T.cfg.http_rate);
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

/* ---- client addresses --------------------------------------------------------------------- */

/* The key of a binary IPv4 (4 bytes) or IPv6 (16 bytes) address. */
static void address_key(int family, const unsigned char *a, char out[CLIENT_ADDR_MAX]) {
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == AF_INET6 && !memcmp(a, mapped, sizeof mapped)) {
        family = AF_INET;
        a += 12;
    }
    if (family == AF_INET) {
        inet_ntop(AF_INET, a, out, CLIENT_ADDR_MAX);
        return;
    }
    unsigned char prefix[16] = {0};
    memcpy(prefix, a, 8);
    char text[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, prefix, text, sizeof text);
    snprintf(out, CLIENT_ADDR_MAX, "%s/64", text);
}

int client_address_parse(const char *v, size_t n, char out[CLIENT_ADDR_MAX]) {
    while (n && (*v == ' ' || *v == '\t')) v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
    char text[INET6_ADDRSTRLEN];
    if (!n || n >= sizeof text) return -1;
    memcpy(text, v, n);
    text[n] = 0;
    unsigned char bin[16];
    if (inet_pton(AF_INET, text, bin) == 1) address_key(AF_INET, bin, out);
    else if (inet_pton(AF_INET6, text, bin) == 1) address_key(AF_INET6, bin, out);
    else return -1;
    return 0;
}

int client_address_forwarded(const char *v, size_t n, char out[CLIENT_ADDR_MAX]) {
    const char *last = v;
    for (const char *p = v; p < v + n; p++)
        if (*p == ',') last = p + 1;
    return client_address_parse(last, (size_t)(v + n - last), out);
}

void client_address_of_peer(const struct sockaddr *sa, char out[CLIENT_ADDR_MAX]) {
    if (sa->sa_family == AF_INET)
        address_key(AF_INET, (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr, out);
    else if (sa->sa_family == AF_INET6)
        address_key(AF_INET6, ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, out);
    else
        snprintf(out, CLIENT_ADDR_MAX, "unknown");
}
