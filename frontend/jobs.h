/* Submitting reconstruction jobs to the shared queue and delivering their progress and results
 * to the sessions' sockets (the dispatcher thread). */
#ifndef DA3_JOBS_H
#define DA3_JOBS_H

#include <stddef.h>
#include "frontend/session.h"

/* Queues a generate (finalize=0) or finalize job for the session's current images. The caller
 * holds s->lock. Returns 0, or -1 with a client message in err (busy, no images, queue full). */
int jobs_submit(session *s, int finalize, int incremental, char *err, size_t errlen);

/* Cancels the session's queued or running job, if any (caller holds s->lock). */
void jobs_cancel(session *s);

/* Starts the dispatcher thread; returns 0 or -1. */
int jobs_start_dispatcher(void);

/* Stops and joins the dispatcher thread. */
void jobs_stop_dispatcher(void);

#endif
