/* Which WebSocket connection (conn.h id) each session is attached to: the one owner of the
 * session <-> socket relation. A session has at most one connection (a reconnect takes over);
 * the relation is dropped when that connection closes. One leaf mutex; nothing is called with it
 * held. */
#ifndef DA3_ATTACH_H
#define DA3_ATTACH_H

#include <stdint.h>

/* Attaches conn_id to the session; returns the connection it replaces (0 when none). */
uint64_t attach_set(const char *session_id, uint64_t conn_id);

/* The session's connection, or 0. */
uint64_t attach_get(const char *session_id);

/* Detaches the session if it is still attached to conn_id (a takeover may have replaced it);
 * returns 1 when it was. */
int attach_clear(const char *session_id, uint64_t conn_id);

/* Detaches the session whatever its connection; returns the connection it had (0 when none). */
uint64_t attach_remove(const char *session_id);

#endif
