/* The result arena: variable-size blocks in the shared segment, first-fit, coalesced on free.
 * Each block carries an owner tag (the job id that holds it); the allocator knows nothing else
 * about jobs. Blocks are addressed by their offset from the segment's start, since every
 * process maps the segment at its own address. The caller holds the segment lock for every
 * *_locked function (docs/architecture.md, "Shared memory"). */
#ifndef DA3_SHM_ARENA_H
#define DA3_SHM_ARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct shmq shmq;

/* Front: bytes in use (block headers included) and the arena's size. */
void shmq_arena_usage(shmq *q, size_t *used, size_t *total);

/* Address of an arena offset (from shmq_result_alloc / a job's result_off) in this mapping. */
const void *shmq_arena_ptr(shmq *q, uint64_t off);

/* ---- inside shm/ only ------------------------------------------------------------------- */

/* The arena's place in the segment; the blocks themselves tile [off, off + size). */
typedef struct {
    uint64_t off, size;
} shm_arena;

/* Lays one free block over the whole arena. */
void arena_init(shm_arena *a, char *base, uint64_t off, uint64_t size);

/* Reserves `len` data bytes tagged `tag`; returns the data's offset from base, or 0 if full. */
uint64_t arena_alloc_locked(shm_arena *a, char *base, uint64_t tag, size_t len);

/* Frees every block tagged `tag` (a retried job may hold one from its first attempt). */
void arena_free_tag_locked(shm_arena *a, char *base, uint64_t tag);

/* Frees every used block for which keep(tag, ctx) is 0; returns how many were freed. */
int arena_free_unless_locked(shm_arena *a, char *base, int (*keep)(uint64_t tag, void *ctx), void *ctx);

/* Counts the used blocks for which keep(tag, ctx) is 0, changing nothing. */
int arena_count_unless_locked(const shm_arena *a, const char *base, int (*keep)(uint64_t tag, void *ctx),
                              void *ctx);

/* 1 when data offset `data_off` is a used block tagged `tag` with at least len data bytes. */
int arena_holds_locked(const shm_arena *a, const char *base, uint64_t data_off, uint64_t tag, uint64_t len);

/* Bytes in used blocks. */
size_t arena_used_locked(const shm_arena *a, const char *base);

/* Repair after a process died inside the lock: re-walks the block list, turns everything from
 * the first malformed header on into one free block, and merges adjacent free blocks.
 * Returns the number of defects fixed (0: the list was sound). */
int arena_repair_locked(shm_arena *a, char *base);

/* Checks the invariants (blocks tile the arena exactly, aligned, no two free blocks adjacent);
 * returns 0, or -1 with err set. */
int arena_check_locked(const shm_arena *a, const char *base, char *err, size_t errlen);

#endif
