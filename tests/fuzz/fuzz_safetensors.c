/* Fuzzes worker/safetensors.c's reader (model weights, golden fixtures, da3-infer --tensor-in):
 * the input is a whole .safetensors file, opened by st_open through a memfd (its path under
 * /proc/self/fd: st_open takes a path and maps it, and nothing touches the disk). Then every
 * tensor is listed (st_count, st_at), found by name (st_find), and read as model loading does
 * (st_find_f32, st_dup_f32, st_copy_f32, st_shape_str). Invariants:
 *   - each tensor's bytes are the input's bytes at its data_offsets inside the data section (the
 *     mapping is outside ASan's view, so the harness reads the header itself with Jansson and
 *     compares contents against the input it wrote);
 *   - for a known dtype, nbytes == numel * itemsize with no wrap-around, so a caller allocating
 *     numel elements and copying nbytes (st_copy_f32 into numel floats) stays in bounds;
 *   - st_find(name) returns that tensor; the shape has at most ST_MAX_DIMS non-negative dims. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "worker/safetensors.h"

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    memfd = memfd_create("fuzz-safetensors", MFD_CLOEXEC);
    if (memfd < 0) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FUZZ_ASSERT(ftruncate(memfd, 0) == 0);
    FUZZ_ASSERT(pwrite(memfd, data, size, 0) == (ssize_t)size);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
    char err[512] = "";
    st_file *f = st_open(path, err, sizeof err);
    if (!f) {
        FUZZ_ASSERT(err[0] != 0);
        return 0;
    }
    FUZZ_ASSERT(size >= 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | data[i];
    FUZZ_ASSERT(hlen <= size - 8);
    const uint8_t *section = data + 8 + hlen;
    size_t section_len = size - 8 - (size_t)hlen;

    json_t *header = json_loadb((const char *)data + 8, (size_t)hlen, 0, NULL);
    FUZZ_ASSERT(json_is_object(header));
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        FUZZ_ASSERT(t && t->name && t->dtype);
        FUZZ_ASSERT(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_ASSERT(t->shape[d] >= 0);
            numel *= t->shape[d];
        }
        FUZZ_ASSERT(numel == t->numel);
        if (t->itemsize) {
            uint64_t bytes;
            FUZZ_ASSERT(!__builtin_mul_overflow((uint64_t)t->numel, (uint64_t)t->itemsize, &bytes));
            FUZZ_ASSERT(bytes == t->nbytes);
        }
        json_t *offs = json_object_get(json_object_get(header, t->name), "data_offsets");
        json_int_t begin = json_integer_value(json_array_get(offs, 0));
        json_int_t end = json_integer_value(json_array_get(offs, 1));
        FUZZ_ASSERT(begin >= 0 && begin <= end && (uint64_t)end <= section_len);
        FUZZ_ASSERT(t->nbytes == (size_t)(end - begin));
        FUZZ_ASSERT(t->nbytes == 0 || memcmp(t->data, section + begin, t->nbytes) == 0);
        FUZZ_ASSERT(st_find(f, t->name) != NULL);
        FUZZ_ASSERT(!strcmp(st_find(f, t->name)->name, t->name));
        char shape[128];
        st_shape_str(t->shape, t->ndim, shape, sizeof shape);
        if (!strcmp(t->dtype, "F32")) {
            const st_tensor *g = st_find_f32(f, t->name, t->ndim, NULL, err, sizeof err);
            /* A duplicate name finds the first of them, which may be another dtype. */
            if (g == t) {
                float *copy = st_dup_f32(t);
                FUZZ_ASSERT(copy);
                /* What a model loader does: room for numel floats, then st_copy_f32. */
                float *dst = malloc(t->numel ? (size_t)t->numel * sizeof(float) : 1);
                FUZZ_ASSERT(dst && st_copy_f32(t, dst) == 0);
                FUZZ_ASSERT(t->nbytes == 0 || memcmp(dst, copy, t->nbytes) == 0);
                free(dst);
                free(copy);
            }
        }
    }
    (void)st_find(f, "no such tensor");
    json_decref(header);
    st_close(f);
    return 0;
}
