/* Which WebSocket connection (conn.h id) each session is attached to: the one owner of the
 * session <-> socket relation. A session has at most one connection (a reconnect takes over);
 * the relation is dropped when that connection closes. One leaf mutex; nothing is called with it
 * held. */
#ifndef DA3_ATTACH_H
#define DA3_ATTACH_H

#include <stdint.h>

/* Attaches conn_id to the session unless a connection with a later seq (the order in which
 * connections asked for the session) is attached already. Returns the connection that lost:
 * the one replaced, conn_id itself when it came too late, or 0 when nobody was attached. Two
 * handler threads attaching at once thus always leave the later asker attached, whichever
 * thread gets here first. */
uint64_t attach_set(const char *session_id, uint64_t conn_id, uint64_t seq);

/* The session's connection, or 0. */
uint64_t attach_get(const char *session_id);

/* Detaches the session if it is still attached to conn_id (a takeover may have replaced it);
 * returns 1 when it was. */
int attach_clear(const char *session_id, uint64_t conn_id);

/* Detaches the session whatever its connection; returns the connection it had (0 when none). */
uint64_t attach_remove(const char *session_id);

#endif
