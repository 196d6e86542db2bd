#include "frontend/session_close.h"

#include "frontend/client_send.h"
#include "frontend/jobs.h"
#include "frontend/session.h"
#include "frontend/ws_frame.h"

/* Registry and disk first: from there no upload can be stored and no generate can start (both
 * re-check `deleted` under the session lock), so cancelling after cannot miss one. */
static int close_removed(session *s, const char *reason) {
    if (!s) return -1;
    jobs_cancel_session(s->id);
    client_close(s->id, reason, WS_CLOSE_NORMAL);
    sessions_put(s);
    return 0;
}

int session_close(const char *id, const char *reason) { return close_removed(sessions_remove(id), reason); }

int session_close_idle(const char *id, const char *reason, double now, double timeout_s) {
    return close_removed(sessions_remove_idle(id, now, timeout_s), reason);
}
