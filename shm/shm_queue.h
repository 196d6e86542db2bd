/* Umbrella header for the shared-memory queue between the front and its workers: the segment
 * and its lock, the job table, the progress event ring, the worker table and the result arena.
 * Each part has its own header and file; docs/architecture.md describes the layout. */
#ifndef DA3_SHM_QUEUE_H
#define DA3_SHM_QUEUE_H

#include "shm/arena.h"
#include "shm/event_ring.h"
#include "shm/job_queue.h"
#include "shm/segment.h"
#include "shm/worker_table.h"

#endif
