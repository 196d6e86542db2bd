#include "frontend/session_close.h"

#include "frontend/client_send.h"
#include "frontend/jobs.h"
#include "frontend/session.h"
#include "frontend/ws_frame.h"

int session_close(const char *id, const char *reason) {
    /* Registry and disk first: from here no upload can be stored and no generate can start
     * (both re-check `deleted` under the session lock), so cancelling after cannot miss one. */
    session *s = sessions_remove(id);
    if (!s) return -1;
    jobs_cancel_session(s->id);
    client_close(s->id, reason, WS_CLOSE_NORMAL);
    sessions_put(s);
    return 0;
}
