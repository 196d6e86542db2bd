/* The shared-memory segment between the front and its workers: creation with single-owner
 * protection, attachment, and the one process-shared robust mutex that guards it. If a process
 * dies holding the mutex, the next locker repairs every module's derived state before going on
 * (docs/architecture.md, "Shared memory"). */
#ifndef DA3_SHM_SEGMENT_H
#define DA3_SHM_SEGMENT_H

#include <stddef.h>

typedef struct shmq shmq; /* a process's handle: mapping + fd */

/* Front: creates segment `name` with an arena of arena_bytes and keeps an exclusive flock on it
 * for the handle's life. A segment of the same name whose flock is free was left by a dead
 * front and is replaced; one whose flock is held belongs to a live front and is left alone:
 * NULL with err naming that front's pid. NULL with err set on any other failure too. */
shmq *shmq_create(const char *name, size_t arena_bytes, char *err, size_t errlen);

/* Worker: maps an existing segment. Returns NULL with err set. */
shmq *shmq_attach(const char *name, char *err, size_t errlen);

/* Unmaps; when `unlink_it` and this handle created the segment, also removes the name (the
 * front on shutdown). */
void shmq_close(shmq *q, int unlink_it);

/* Takes the segment's mutex, repairing the shared state first if its last holder died
 * (EOWNERDEAD). Aborts with a message if the mutex is unrecoverable. */
void shmq_lock(shmq *q);

/* Releases the segment's mutex. */
void shmq_unlock(shmq *q);

/* Front: waits up to timeout_s for an event or a finished job (a hint: re-check after). */
void shmq_wait_activity(shmq *q, double timeout_s);

/* Checks every module's invariants under the lock (tests, diagnostics); 0, or -1 with err. */
int shmq_validate(shmq *q, char *err, size_t errlen);

/* Number of times this process repaired the segment after a holder's death (tests, logs). */
int shmq_repairs(void);

#endif
