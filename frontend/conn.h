/* The front's connection table: the thread-safe half of every client connection.
 *
 * The connection loop (net_loop.c) is the only thread that touches sockets. Everyone else
 * reaches a connection by its 64-bit id (slot index + generation, so a stale id never reaches a
 * recycled slot) and only ever appends to its bounded outgoing queue, or requests a close; the
 * loop writes the bytes when the socket can take them. No thread ever blocks on another
 * client's socket, and no lock is held across a socket write.
 *
 * Incoming WebSocket events (open, message, closed) go the other way: the loop appends them to
 * the connection's inbox, and a handler thread (handler_pool.c) takes them one at a time, in
 * order, so a connection's messages are handled serially while different connections are
 * handled in parallel.
 *
 * Lock order: a slot's lock is a leaf (nothing else is taken while it is held) except the table's
 * dirty-list lock, taken inside it. See docs/architecture.md. */
#ifndef DA3_CONN_H
#define DA3_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "frontend/api_keys.h"

typedef enum { CONN_EV_OPEN = 1, CONN_EV_MESSAGE, CONN_EV_CLOSED } conn_event_type;

typedef struct conn_event {
    struct conn_event *next;
    conn_event_type type;
    int opcode;          /* MESSAGE: WS_OP_TEXT or WS_OP_BINARY */
    uint8_t *data;       /* MESSAGE: the whole message (owned by the event); OPEN: the request target */
    size_t len;
    size_t cost;         /* bytes counted against the front's inbound budget (conn_inbound_*) */
    api_identity who;    /* OPEN: the key the loop checked for the upgrade (name "" when keys are off) */
    char client[64];     /* OPEN: the client's address (frontend/client_limits.h) */
} conn_event;

/* Frees an event and returns its cost to the inbound budget. */
void conn_event_free(conn_event *e);

/* The front-wide budget for incoming messages (being assembled or waiting for a handler): a
 * data frame's payload is reserved from its header before any of it is read, and returned when
 * the handler frees the message. Many clients uploading at once therefore wait for each other
 * instead of exhausting memory. conn_inbound_reserve returns 1 when n fits under budget (or
 * nothing at all is reserved, so one message larger than the budget can still pass), else 0. */
int conn_inbound_reserve(size_t n, size_t budget);
void conn_inbound_release(size_t n);
size_t conn_inbound_bytes(void);

/* Results of the send functions. */
enum { CONN_QUEUED = 0, CONN_GONE = -1, CONN_FULL = -2 };

/* Creates the table for max_conns connections with an outgoing queue cap of out_cap bytes per
 * connection (one message larger than the cap is still taken when the queue is empty).
 * Returns 0, or -1 when out of memory. */
int conn_table_init(int max_conns, size_t out_cap);

/* Frees the table (after the loop and the handlers have stopped). */
void conn_table_free(void);

/* The eventfd the loop polls: readable when some connection has new output, a close request or
 * wants reading resumed. */
int conn_table_wake_fd(void);

/* Loop: takes a free slot; returns its id, or 0 when the table is full. */
uint64_t conn_open(void);

/* Slot index of an id (for the loop's own per-slot state). */
int conn_index(uint64_t id);

/* Any thread: queues a text message (copied). CONN_QUEUED, CONN_GONE (closed, closing or stale
 * id) or CONN_FULL (the queue is over its cap: the message is not queued). */
int conn_send_text(uint64_t id, const char *text, size_t len);

/* Any thread: queues a message whose buffer the table takes over (freed when written or
 * dropped). When `note` is not NULL (also taken over) the loop logs "<note>: delivered ..." once
 * the last byte is written, or "<note>: NOT delivered (why)" when the connection goes first.
 * A message that does not fit closes the connection (1008) rather than being silently lost. */
int conn_send_owned(uint64_t id, int opcode, char *data, size_t len, char *note);

/* Loop: queues bytes written as they are, without a WebSocket header (an HTTP response); the
 * table takes data. Not subject to the cap. */
void conn_send_raw(uint64_t id, char *data, size_t len);

/* Any thread: queues a close frame (code, reason) after what is already queued; later sends are
 * refused. The loop drops the connection if the peer does not answer within its close timeout. */
void conn_close(uint64_t id, int code, const char *reason);

/* Loop: the ids with pending work since the last call (each once); returns how many. */
int conn_take_dirty(uint64_t *out, int max);

/* One queued outgoing frame as the loop sees it. */
typedef struct conn_out {
    struct conn_out *next;
    uint8_t hdr[10];
    size_t hlen;
    char *data;
    size_t len;
    size_t sent;         /* bytes of hdr+data already written */
    char *note;
    int opcode;
    double queued_at;    /* monotonic */
} conn_out;

/* Loop: takes the whole outgoing queue (oldest first) and whether reading should resume;
 * *bytes_left is what stays accounted against the cap until conn_out_done. */
conn_out *conn_take_out(uint64_t id, int *resume_read);

/* Loop: a frame from conn_take_out was fully written (or dropped: delivered = 0, why): logs its
 * note, frees it and releases its bytes from the cap. */
void conn_out_done(uint64_t id, conn_out *o, int delivered, const char *why);

/* Loop: appends an event to the connection's inbox; returns 1 when the connection must now be
 * handed to a handler thread (it was idle), 0 when a handler already owns it. */
int conn_deliver(uint64_t id, conn_event *ev);

/* Handler: takes the next inbox event, or NULL (and the connection is idle again). */
conn_event *conn_next_event(uint64_t id);

/* Handler: the message just handled is done; the loop resumes reading this connection. */
void conn_resume_read(uint64_t id);

/* Loop: the socket is gone; sends are refused from now on and the queue is dropped (notes
 * logged with `why`). */
void conn_detach(uint64_t id, const char *why);

/* Loop or handler: returns the slot to the free list (after CLOSED was handled, or for a
 * connection that never reached a handler). */
void conn_release(uint64_t id);

/* Handler side: a per-connection pointer owned by the handler code (NULL at open). */
void **conn_user(uint64_t id);

/* Queued, unsent outgoing bytes of a connection (0 for a stale id). */
size_t conn_out_bytes(uint64_t id);

#endif
