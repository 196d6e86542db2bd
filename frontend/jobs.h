/* Reconstruction jobs, front side: submitting a session's images to the shared job table, and
 * the dispatcher thread that turns workers' progress and finished jobs into client messages.
 *
 * The shared job table (shm/job_queue.h) is the one record of which job belongs to which
 * session: the front keeps no copy, so a job's identity cannot go stale in one place and live
 * on in another. Messages go out through client_send.h and never block. */
#ifndef DA3_JOBS_H
#define DA3_JOBS_H

#include <stddef.h>
#include "frontend/session.h"

/* What jobs_submit says. */
typedef enum {
    JOBS_QUEUED = 0,
    JOBS_REFUSED,   /* not valid now (deleted, no images, one already running): err says why */
    JOBS_FAILED,    /* valid but not possible now (queue full): err says why and when to retry */
} jobs_submit_result;

/* Queues a generate (finalize = 0) or finalize job for the session's current images and sends
 * the client the first progress message. The caller holds s->lock (so a concurrent delete either
 * sees the job and cancels it, or the job sees `deleted`). */
jobs_submit_result jobs_submit(session *s, int finalize, int incremental, char *err, size_t errlen);

/* Starts the job the session's images make due, if no job of it is running: in a streaming
 * session the next chunk once chunk_size - overlap images wait; otherwise the automatic run of
 * auto_generate_after (at least N images since the last one began: auto_generating, progress,
 * then a delta marked auto_generated). Called after each ack, when a client attaches, and when a
 * job ends, so images that arrive during a job go into the next one. The caller holds s->lock.
 * Returns 1 when a job was queued. */
int jobs_start_due(session *s);

/* 1 when the session has a queued or running job. */
int jobs_session_busy(const char *session_id);

/* Cancels the session's queued or running job, if any. */
void jobs_cancel_session(const char *session_id);

/* Starts the dispatcher thread; returns 0 or -1. */
int jobs_start_dispatcher(void);

/* Stops and joins the dispatcher thread, then waits for result encoders in flight. */
void jobs_stop_dispatcher(void);

#endif
