/* Fault points for tests: named places where a process can be made to stop, so that a test can
 * SIGKILL it at exactly that point (half a GLB in the arena, the queue lock held, half an image on
 * disk) and check that nothing accepted is lost. DA3_FAULT=NAME[,NAME...] arms points; with
 * DA3_FAULT_ONCE=PATH a point fires only if it is the first to create PATH (O_EXCL), so once per
 * server run across the front and every worker, and a retry runs through. Unset, a point costs
 * one load and a branch. docs/testing.md lists the points. */
#ifndef DA3_FAULT_H
#define DA3_FAULT_H

#include <stdatomic.h>

/* 0 once the environment was read and arms nothing; nonzero before it is read or while armed. */
extern atomic_int fault_armed_;

/* The slow path of fault_point: reads the environment once, then fires if `name` is armed. */
void fault_point_check(const char *name);

/* Stops this process (SIGSTOP, after a log line naming the point) when DA3_FAULT arms `name` and
 * DA3_FAULT_ONCE, if set, has not been claimed yet; otherwise returns at once. A SIGCONT lets
 * it go on as if nothing happened. */
static inline void fault_point(const char *name) {
    if (atomic_load_explicit(&fault_armed_, memory_order_relaxed)) fault_point_check(name);
}

#endif
