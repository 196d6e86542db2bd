/* The WebSocket protocols: v1 on /ws/reconstruct/{session_id} (session created over HTTP) and v2
 * on /ws/reconstruct (session created or resumed by an init message): what each client message
 * does (init, image, generate, finalize, ping). Runs on handler threads (handler_pool.h); replies travel
 * through the connection's outgoing queue (conn.h), so no handler ever blocks on a socket. The
 * rest of the front sends to a session's client through client_send.h. */
#ifndef DA3_WS_H
#define DA3_WS_H

#include "frontend/handler_pool.h"

/* The connection handlers for the WebSocket endpoint. */
extern const conn_handlers ws_handlers;

#endif
