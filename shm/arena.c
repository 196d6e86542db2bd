#include "shm/arena.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "shm/layout.h"

#define ARENA_ALIGN 64

/* A block header; blocks tile the arena back to back. */
typedef struct {
    uint64_t size; /* bytes including this header, a multiple of ARENA_ALIGN */
    uint32_t used;
    uint32_t pad0;
    uint64_t tag;  /* owner while used */
    uint8_t pad[ARENA_ALIGN - 24];
} arena_block;

_Static_assert(sizeof(arena_block) == ARENA_ALIGN, "arena block header is one alignment unit");

static arena_block *block_at(char *base, uint64_t off) { return (arena_block *)(base + off); }
static const arena_block *cblock_at(const char *base, uint64_t off) {
    return (const arena_block *)(base + off);
}

/* A header that cannot be walked past: the walk would leave the arena or never advance. */
static int block_bad(const shm_arena *a, const arena_block *b, uint64_t off) {
    uint64_t end = a->off + a->size;
    return b->size < sizeof(arena_block) || b->size % ARENA_ALIGN || b->size > end - off ||
           b->used > 1;
}

void arena_init(shm_arena *a, char *base, uint64_t off, uint64_t size) {
    a->off = off;
    a->size = size;
    arena_block *b = block_at(base, off);
    memset(b, 0, sizeof *b);
    b->size = size;
}

/* Merges every run of adjacent free blocks. Linear in the number of blocks (≈ jobs in flight). */
static void coalesce(shm_arena *a, char *base) {
    uint64_t off = a->off, end = a->off + a->size;
    while (off < end) {
        arena_block *b = block_at(base, off);
        while (!b->used && off + b->size < end && !block_at(base, off + b->size)->used)
            b->size += block_at(base, off + b->size)->size;
        off += b->size;
    }
}

/* Returns the pages inside a freed block to the kernel so a burst of big GLBs does not pin
 * memory forever (tmpfs keeps pages until they are punched out). */
static void release_pages(char *base, uint64_t off, uint64_t size) {
    uint64_t start = (off + sizeof(arena_block) + 4095) & ~(uint64_t)4095;
    uint64_t stop = (off + size) & ~(uint64_t)4095;
    if (stop > start + (1u << 20)) madvise(base + start, stop - start, MADV_REMOVE);
}

uint64_t arena_alloc_locked(shm_arena *a, char *base, uint64_t tag, size_t len) {
    uint64_t need = (sizeof(arena_block) + len + ARENA_ALIGN - 1) & ~(uint64_t)(ARENA_ALIGN - 1);
    uint64_t off = a->off, end = a->off + a->size;
    while (off < end) {
        arena_block *b = block_at(base, off);
        if (!b->used && b->size >= need) {
            if (b->size - need >= 2 * sizeof(arena_block)) {
                /* Write the remainder's header before shrinking this block, so a death between
                 * the two stores still leaves a walkable block list. */
                arena_block *rest = block_at(base, off + need);
                memset(rest, 0, sizeof *rest);
                rest->size = b->size - need;
                b->size = need;
            }
            b->tag = tag;
            PUBLISH(b->used, 1); /* last: a block is never seen used with another owner's tag */
            return off + sizeof(arena_block);
        }
        off += b->size;
    }
    return 0;
}

void arena_free_tag_locked(shm_arena *a, char *base, uint64_t tag) {
    uint64_t off = a->off, end = a->off + a->size;
    int freed = 0;
    while (off < end) {
        arena_block *b = block_at(base, off);
        if (b->used && b->tag == tag) {
            b->used = 0;
            release_pages(base, off, b->size);
            freed = 1;
        }
        off += b->size;
    }
    if (freed) coalesce(a, base);
}

int arena_free_unless_locked(shm_arena *a, char *base, int (*keep)(uint64_t tag, void *ctx), void *ctx) {
    uint64_t off = a->off, end = a->off + a->size;
    int freed = 0;
    while (off < end) {
        arena_block *b = block_at(base, off);
        if (b->used && !keep(b->tag, ctx)) {
            b->used = 0;
            release_pages(base, off, b->size);
            freed++;
        }
        off += b->size;
    }
    if (freed) coalesce(a, base);
    return freed;
}

int arena_count_unless_locked(const shm_arena *a, const char *base, int (*keep)(uint64_t tag, void *ctx),
                              void *ctx) {
    uint64_t off = a->off, end = a->off + a->size;
    int n = 0;
    while (off < end) {
        const arena_block *b = cblock_at(base, off);
        n += b->used && !keep(b->tag, ctx);
        off += b->size;
    }
    return n;
}

int arena_holds_locked(const shm_arena *a, const char *base, uint64_t data_off, uint64_t tag, uint64_t len) {
    uint64_t off = a->off, end = a->off + a->size;
    while (off < end) {
        const arena_block *b = cblock_at(base, off);
        if (off + sizeof(arena_block) == data_off)
            return b->used && b->tag == tag && len <= b->size - sizeof(arena_block);
        if (off > data_off) break;
        off += b->size;
    }
    return 0;
}

size_t arena_used_locked(const shm_arena *a, const char *base) {
    size_t used = 0;
    uint64_t off = a->off, end = a->off + a->size;
    while (off < end) {
        const arena_block *b = cblock_at(base, off);
        if (b->used) used += b->size;
        off += b->size;
    }
    return used;
}

int arena_repair_locked(shm_arena *a, char *base) {
    int fixed = 0;
    uint64_t off = a->off, end = a->off + a->size;
    while (off < end) {
        arena_block *b = block_at(base, off);
        if (block_bad(a, b, off)) {
            /* Nothing after a torn header can be trusted: whatever the blocks there held is
             * dropped (the job table's repair fails the jobs whose result went with it). */
            memset(b, 0, sizeof *b);
            b->size = end - off;
            fixed++;
            break;
        }
        off += b->size;
    }
    /* Count the merges too, so a caller can tell a sound list from a repaired one. */
    off = a->off;
    while (off < end) {
        arena_block *b = block_at(base, off);
        while (!b->used && off + b->size < end && !block_at(base, off + b->size)->used) {
            b->size += block_at(base, off + b->size)->size;
            fixed++;
        }
        off += b->size;
    }
    return fixed;
}

int arena_check_locked(const shm_arena *a, const char *base, char *err, size_t errlen) {
    uint64_t off = a->off, end = a->off + a->size;
    int prev_free = 0;
    while (off < end) {
        const arena_block *b = cblock_at(base, off);
        if (block_bad(a, b, off)) {
            snprintf(err, errlen, "arena block at %llu has a bad header (size %llu, used %u)",
                     (unsigned long long)(off - a->off), (unsigned long long)b->size, b->used);
            return -1;
        }
        if (!b->used && prev_free) {
            snprintf(err, errlen, "arena blocks before %llu are both free (not coalesced)",
                     (unsigned long long)(off - a->off));
            return -1;
        }
        prev_free = !b->used;
        off += b->size;
    }
    return 0;
}

void shmq_arena_usage(shmq *q, size_t *used, size_t *total) {
    shmq_lock(q);
    size_t u = arena_used_locked(&q->h->arena, (char *)q->h);
    *total = q->h->arena.size;
    shmq_unlock(q);
    *used = u;
}

const void *shmq_arena_ptr(shmq *q, uint64_t off) { return (const char *)q->h + off; }
