/* The .safetensors format (8-byte little-endian header length, a JSON header mapping each name to
 * {dtype, shape, data_offsets}, then raw little-endian data): a read-only mmap'd reader and a
 * small writer. Used for model weights, golden fixtures and da3-infer --tensor-in/--tensor-out. */
#ifndef DA3_SAFETENSORS_H
#define DA3_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ST_MAX_DIMS 8

typedef struct st_file st_file;

/* One tensor of an open file. `data` points into the mapping and may be unaligned: copy it
 * (memcpy, st_copy_f32) rather than dereferencing it as float*. */
typedef struct {
    const char *name;
    const char *dtype;   /* as written in the header: "F32", "F16", "BF16", "I64", ... */
    int itemsize;        /* bytes per element, 0 for a dtype this reader does not know */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data;
    size_t nbytes;
} st_tensor;

/* Opens and maps `path`, validating the header and every tensor's byte range; NULL + err on failure. */
st_file *st_open(const char *path, char *err, size_t errlen);

/* Unmaps and frees; NULL is allowed. Tensor pointers from this file become invalid. */
void st_close(st_file *f);

/* Number of tensors in the file (the __metadata__ entry is not counted). */
size_t st_count(const st_file *f);

/* The i-th tensor in header order (0 <= i < st_count), for iterating over names. */
const st_tensor *st_at(const st_file *f, size_t i);

/* The tensor called `name`, or NULL when the file has none. */
const st_tensor *st_find(const st_file *f, const char *name);

/* The tensor called `name` if it is F32 with `ndim` dims (shape checked where want_shape is not
 * NULL, -1 entries match anything); NULL with a message naming the problem otherwise. */
const st_tensor *st_find_f32(const st_file *f, const char *name, int ndim, const int64_t *want_shape,
                             char *err, size_t errlen);

/* Copies an F32 tensor's data into dst (room for t->numel floats); returns 0, or -1 if not F32. */
int st_copy_f32(const st_tensor *t, float *dst);

/* A malloc'd copy of an F32 tensor's data (free with free()); NULL if not F32 or out of memory. */
float *st_dup_f32(const st_tensor *t);

/* Formats a shape as "[1, 3, 70, 98]" into buf; returns buf. */
const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t buflen);

typedef struct st_writer st_writer;

/* A new, empty writer; NULL if out of memory. */
st_writer *st_writer_new(void);

/* Queues an F32 tensor. The data is NOT copied: it must stay valid until st_writer_save.
 * Returns 0, or -1 (duplicate name, bad shape, out of memory). */
int st_writer_add_f32(st_writer *w, const char *name, const float *data, int ndim,
                      const int64_t *shape);

/* Writes every queued tensor to `path` (header padded to 8 bytes). Returns 0, or -1 + err. */
int st_writer_save(st_writer *w, const char *path, char *err, size_t errlen);

/* Frees the writer (not the data it points to); NULL is allowed. */
void st_writer_free(st_writer *w);

#ifdef __cplusplus
}
#endif

#endif
