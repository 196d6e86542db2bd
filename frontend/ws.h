/* Protocol v1 over WebSocket, /ws/reconstruct/{session_id}: what each client message does
 * (image, generate, finalize, ping) and the one interface through which the rest of the front
 * sends to a session's client. Runs on handler threads (handler_pool.h); the bytes travel through
 * the connection's outgoing queue (conn.h), so no caller ever blocks on a socket. */
#ifndef DA3_WS_H
#define DA3_WS_H

#include <stddef.h>
#include "frontend/handler_pool.h"
#include "frontend/session.h"

/* The connection handlers for the WebSocket endpoint. */
extern const conn_handlers ws_handlers;

/* Queues a text message for the session's client. Returns 0 when queued, -1 when no socket is
 * attached or its queue is full (the message is advisory, e.g. progress). */
int ws_send_to_session(session *s, const char *text, size_t len);

/* Queues a message that must not be lost silently (a result), taking over text and note (see
 * conn_send_owned: delivery or loss is logged with the note). Returns 0 when queued. */
int ws_send_owned_to_session(session *s, char *text, size_t len, char *note);

/* Sends an error message and a close frame (code) to the session's client and detaches it. */
void ws_close_session_socket(session *s, const char *message, int code);

#endif
