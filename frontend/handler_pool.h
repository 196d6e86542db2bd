/* Handler threads: run connections' inbox events (conn.h) with the application's handlers, one
 * connection at a time per thread and each connection's events in order. The pool's size bounds
 * how many messages (image validations, JSON parses, file writes) run at once in the front. */
#ifndef DA3_HANDLER_POOL_H
#define DA3_HANDLER_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "frontend/api_keys.h"

/* What the application does with each event (ws.c provides them). */
typedef struct {
    void (*on_open)(uint64_t conn_id, const char *target, const api_identity *who, const char *client);
    /* data is owned by the pool and freed after the call */
    void (*on_message)(uint64_t conn_id, int opcode, const uint8_t *data, size_t len);
    /* the last event of a connection; its id is released after it */
    void (*on_closed)(uint64_t conn_id);
} conn_handlers;

/* Starts nthreads threads with stacks of stack_bytes for up to max_conns connections.
 * Returns 0 or -1. */
int handler_pool_start(int nthreads, size_t stack_bytes, int max_conns, const conn_handlers *h);

/* Hands a connection with new inbox events to the pool (after conn_deliver returned 1). */
void handler_pool_schedule(uint64_t conn_id);

/* Runs what is queued, then stops and joins the threads. */
void handler_pool_stop(void);

#endif
