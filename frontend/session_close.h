/* Ending a session for good, the one path used by DELETE and by the expiry sweep: removed from
 * the registry and the disk, its job cancelled, its client told why and disconnected. */
#ifndef DA3_SESSION_CLOSE_H
#define DA3_SESSION_CLOSE_H

/* Closes session `id` with `reason` (sent to its client). Returns 0, or -1 when unknown. Must be
 * called without any session lock held. */
int session_close(const char *id, const char *reason);

/* session_close for the expiry sweep: only when the session is still idle for more than
 * timeout_s at now (checked under its lock). Returns 0 when it was closed. */
int session_close_idle(const char *id, const char *reason, double now, double timeout_s);

#endif
