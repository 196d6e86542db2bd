#include "frontend/attach.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 4096

typedef struct node {
    struct node *next;
    uint64_t conn_id, seq;
    char session_id[40];
} node;

static node *table[BUCKETS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned bucket(const char *id) {
    unsigned h = 2166136261u; /* FNV-1a: session ids are random uuids, any spread is fine */
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
    return h % BUCKETS;
}

static node **find(const char *id) {
    node **p = &table[bucket(id)];
    while (*p && strcmp((*p)->session_id, id)) p = &(*p)->next;
    return p;
}

uint64_t attach_set(const char *session_id, uint64_t conn_id, uint64_t seq) {
    node *fresh = calloc(1, sizeof *fresh);
    pthread_mutex_lock(&lock);
    node **p = find(session_id);
    uint64_t old = 0;
    if (*p && (*p)->seq > seq) {
        old = conn_id; /* a connection opened later is attached already: it stays */
    } else if (*p) {
        old = (*p)->conn_id;
        (*p)->conn_id = conn_id;
        (*p)->seq = seq;
    } else if (fresh) {
        strncpy(fresh->session_id, session_id, sizeof fresh->session_id - 1);
        fresh->conn_id = conn_id;
        fresh->seq = seq;
        *p = fresh;
        fresh = NULL;
    }
    pthread_mutex_unlock(&lock);
    free(fresh);
    return old;
}

uint64_t attach_get(const char *session_id) {
    pthread_mutex_lock(&lock);
    node **p = find(session_id);
    uint64_t id = *p ? (*p)->conn_id : 0;
    pthread_mutex_unlock(&lock);
    return id;
}

int attach_clear(const char *session_id, uint64_t conn_id) {
    node *gone = NULL;
    pthread_mutex_lock(&lock);
    node **p = find(session_id);
    if (*p && (*p)->conn_id == conn_id) {
        gone = *p;
        *p = gone->next;
    }
    pthread_mutex_unlock(&lock);
    free(gone);
    return gone != NULL;
}

uint64_t attach_remove(const char *session_id) {
    node *gone = NULL;
    pthread_mutex_lock(&lock);
    node **p = find(session_id);
    if (*p) {
        gone = *p;
        *p = gone->next;
    }
    pthread_mutex_unlock(&lock);
    uint64_t id = gone ? gone->conn_id : 0;
    free(gone);
    return id;
}
