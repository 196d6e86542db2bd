/* Protocol v1 over WebSocket, /ws/reconstruct/{session_id}: what each client message does
 * (image, generate, finalize, ping). Runs on handler threads (handler_pool.h); replies travel
 * through the connection's outgoing queue (conn.h), so no handler ever blocks on a socket. The
 * rest of the front sends to a session's client through client_send.h. */
#ifndef DA3_WS_H
#define DA3_WS_H

#include "frontend/handler_pool.h"

/* The connection handlers for the WebSocket endpoint. */
extern const conn_handlers ws_handlers;

#endif
