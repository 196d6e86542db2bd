/* The one way the front sends to a session's client, from any thread: by session id, through
 * the attached connection's outgoing queue (attach.h, conn.h). Nothing here touches a socket or
 * blocks, so it may be called with a session's lock held (lock order: docs/architecture.md). */
#ifndef DA3_CLIENT_SEND_H
#define DA3_CLIENT_SEND_H

#include <stddef.h>

/* Queues a text message (copied). Returns 0 when queued, -1 when no client is attached or its
 * queue is full (for advisory messages such as progress). */
int client_send(const char *session_id, const char *text, size_t len);

/* Queues a message that must not be lost silently (a result), taking over text and note: its
 * delivery, or why it was not delivered, is logged with the note. Returns 0 when queued. */
int client_send_owned(const char *session_id, char *text, size_t len, char *note);

/* Queues {"type":"error","message":message}; 0 when queued, -1 as client_send. */
int client_send_error(const char *session_id, const char *message);

/* Sends {"type":"error","message":message} and a close frame (code) to the session's client,
 * and detaches it. Nothing happens when none is attached. */
void client_close(const char *session_id, const char *message, int code);

#endif
