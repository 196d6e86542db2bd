/* The WebSocket endpoint /ws/reconstruct/{session_id}: frame reassembly, size limits, message
 * dispatch, and thread-safe sends to a session's attached socket. */
#ifndef DA3_WS_H
#define DA3_WS_H

#include <stddef.h>
#include "frontend/session.h"

struct mg_context;

/* Registers the WebSocket handlers on ctx. */
void ws_register(struct mg_context *ctx);

/* Sends a text message to the session's attached socket from any thread. Returns 0 when sent,
 * -1 when no socket is attached or the write failed. */
int ws_send_to_session(session *s, const char *text, size_t len);

/* Sends an error message and a close frame (code) to the attached socket and detaches it. */
void ws_close_session_socket(session *s, const char *message, int code);

#endif
