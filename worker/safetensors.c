/* safetensors reader (mmap + Jansson header parse) and writer. See safetensors.h. */
#include "worker/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A header larger than this is certainly not a real checkpoint header; refuse it rather than
 * letting a corrupt length make us parse gigabytes of tensor data as JSON. */
#define ST_MAX_HEADER (256u << 20)

struct st_file {
    void *map;
    size_t map_len;
    size_t count;
    st_tensor *tensors;   /* header order */
    size_t *by_name;      /* indices into tensors, sorted by name, for st_find */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int dtype_itemsize(const char *dtype) {
    static const struct { const char *name; int size; } known[] = {
        {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
        {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"U16", 2}, {"U32", 4}, {"U64", 8},
        {"F8_E4M3", 1}, {"F8_E5M2", 1},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(dtype, known[i].name) == 0) return known[i].size;
    return 0;
}

const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t buflen) {
    size_t used = 0;
    if (buflen == 0) return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, buflen, "[");
    for (int i = 0; i < ndim && used < buflen; i++)
        used += (size_t)snprintf(buf + used, buflen - used, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (used < buflen) snprintf(buf + used, buflen - used, "]");
    return buf;
}

static const st_file *sort_ctx; /* qsort has no context argument; sorting happens once per open */

static int cmp_by_name(const void *a, const void *b) {
    const st_tensor *ta = &sort_ctx->tensors[*(const size_t *)a];
    const st_tensor *tb = &sort_ctx->tensors[*(const size_t *)b];
    return strcmp(ta->name, tb->name);
}

/* Fills *t from one header entry; returns 0 or -1 with err naming the tensor. */
static int parse_entry(const char *name, json_t *entry, const unsigned char *data, size_t data_len,
                       st_tensor *t, char *err, size_t errlen) {
    json_t *dtype = json_object_get(entry, "dtype");
    json_t *shape = json_object_get(entry, "shape");
    json_t *offs = json_object_get(entry, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offs) ||
        json_array_size(offs) != 2) {
        set_err(err, errlen, "tensor '%s': header entry lacks dtype/shape/data_offsets", name);
        return -1;
    }
    if (json_array_size(shape) > ST_MAX_DIMS) {
        set_err(err, errlen, "tensor '%s': %zu dims (at most %d supported)", name,
                json_array_size(shape), ST_MAX_DIMS);
        return -1;
    }
    t->name = strdup(name);
    t->dtype = strdup(json_string_value(dtype));
    if (!t->name || !t->dtype) {
        set_err(err, errlen, "out of memory reading the header");
        return -1;
    }
    t->itemsize = dtype_itemsize(t->dtype);
    t->ndim = (int)json_array_size(shape);
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        json_t *v = json_array_get(shape, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            set_err(err, errlen, "tensor '%s': shape entry %d is not a non-negative integer", name, d);
            return -1;
        }
        t->shape[d] = json_integer_value(v);
        if (t->shape[d] != 0 && t->numel > INT64_MAX / t->shape[d]) {
            set_err(err, errlen, "tensor '%s': shape overflows", name);
            return -1;
        }
        t->numel *= t->shape[d];
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e)) {
        set_err(err, errlen, "tensor '%s': data_offsets are not integers", name);
        return -1;
    }
    json_int_t begin = json_integer_value(b), end = json_integer_value(e);
    if (begin < 0 || end < begin || (uint64_t)end > data_len) {
        set_err(err, errlen, "tensor '%s': data_offsets [%" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT
                "] outside the %zu data bytes (truncated file?)", name, begin, end, data_len);
        return -1;
    }
    t->nbytes = (size_t)(end - begin);
    /* The product must not wrap: shape [2^62 + 1] of F32 would otherwise match 4 bytes, and a
     * caller sizing its copy by numel would read far past them. */
    if (t->itemsize && ((uint64_t)t->numel > UINT64_MAX / (uint64_t)t->itemsize ||
                        (uint64_t)t->nbytes != (uint64_t)t->numel * (uint64_t)t->itemsize)) {
        set_err(err, errlen, "tensor '%s': %zu bytes for %" PRId64 " elements of %s", name,
                t->nbytes, t->numel, t->dtype);
        return -1;
    }
    t->data = data + begin;
    return 0;
}

/* Parses the JSON header into f->tensors; returns 0 or -1 with err. */
static int parse_header(st_file *f, const char *path, const char *text, size_t len,
                        const unsigned char *data, size_t data_len, char *err, size_t errlen) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        set_err(err, errlen, "%s: bad safetensors header JSON: %s", path, root ? "not an object" : jerr.text);
        json_decref(root);
        return -1;
    }
    size_t n = json_object_size(root);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->by_name = calloc(n ? n : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) {
        json_decref(root);
        set_err(err, errlen, "out of memory reading %s", path);
        return -1;
    }
    const char *key;
    json_t *value;
    int rc = 0;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) continue;
        if (!json_is_object(value)) {
            set_err(err, errlen, "%s: header entry '%s' is not an object", path, key);
            rc = -1;
            break;
        }
        char sub[512];
        if (parse_entry(key, value, data, data_len, &f->tensors[f->count], sub, sizeof sub) != 0) {
            f->count++; /* so st_close frees the partial entry's strings */
            set_err(err, errlen, "%s: %s", path, sub);
            rc = -1;
            break;
        }
        f->count++;
    }
    json_decref(root);
    if (rc != 0) return -1;
    for (size_t i = 0; i < f->count; i++) f->by_name[i] = i;
    sort_ctx = f;
    qsort(f->by_name, f->count, sizeof *f->by_name, cmp_by_name);
    sort_ctx = NULL;
    return 0;
}

st_file *st_open(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < 8) {
        set_err(err, errlen, "%s: too short to be a safetensors file", path);
        close(fd);
        return NULL;
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        set_err(err, errlen, "cannot map %s: %s", path, strerror(errno));
        return NULL;
    }
    const unsigned char *bytes = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | bytes[i];
    if (hlen > ST_MAX_HEADER || hlen > len - 8) {
        set_err(err, errlen, "%s: header length %" PRIu64 " does not fit the %zu-byte file", path, hlen, len);
        munmap(map, len);
        return NULL;
    }
    st_file *f = calloc(1, sizeof *f);
    if (!f) {
        munmap(map, len);
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    f->map = map;
    f->map_len = len;
    if (parse_header(f, path, (const char *)bytes + 8, (size_t)hlen, bytes + 8 + hlen,
                     len - 8 - (size_t)hlen, err, errlen) != 0) {
        st_close(f);
        return NULL;
    }
    return f;
}

void st_close(st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->count; i++) {
        free((char *)f->tensors[i].name);
        free((char *)f->tensors[i].dtype);
    }
    free(f->tensors);
    free(f->by_name);
    if (f->map) munmap(f->map, f->map_len);
    free(f);
}

size_t st_count(const st_file *f) { return f ? f->count : 0; }

const st_tensor *st_at(const st_file *f, size_t i) {
    return (f && i < f->count) ? &f->tensors[i] : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    if (!f || !name) return NULL;
    size_t lo = 0, hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const st_tensor *st_find_f32(const st_file *f, const char *name, int ndim, const int64_t *want_shape,
                             char *err, size_t errlen) {
    const st_tensor *t = st_find(f, name);
    if (!t) {
        set_err(err, errlen, "tensor '%s' not found", name);
        return NULL;
    }
    if (strcmp(t->dtype, "F32") != 0) {
        set_err(err, errlen, "tensor '%s' has dtype %s (F32 needed)", name, t->dtype);
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int d = 0; ok && want_shape && d < ndim; d++)
        if (want_shape[d] >= 0 && want_shape[d] != t->shape[d]) ok = 0;
    if (!ok) {
        char have[128], want[128] = "";
        st_shape_str(t->shape, t->ndim, have, sizeof have);
        if (want_shape) st_shape_str(want_shape, ndim, want, sizeof want);
        set_err(err, errlen, "tensor '%s' has shape %s (expected %d dims %s)", name, have, ndim, want);
        return NULL;
    }
    return t;
}

int st_copy_f32(const st_tensor *t, float *dst) {
    if (!t || strcmp(t->dtype, "F32") != 0) return -1;
    memcpy(dst, t->data, t->nbytes);
    return 0;
}

float *st_dup_f32(const st_tensor *t) {
    if (!t || strcmp(t->dtype, "F32") != 0) return NULL;
    float *p = malloc(t->nbytes ? t->nbytes : 1);
    if (p) memcpy(p, t->data, t->nbytes);
    return p;
}

/* ------------------------------------------------------------------------------------------ */

typedef struct {
    char *name;
    const float *data;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
} st_pending;

struct st_writer {
    st_pending *items;
    size_t count, cap;
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

int st_writer_add_f32(st_writer *w, const char *name, const float *data, int ndim,
                      const int64_t *shape) {
    if (!w || !name || ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape)) return -1;
    for (size_t i = 0; i < w->count; i++)
        if (strcmp(w->items[i].name, name) == 0) return -1;
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return -1;
        numel *= (uint64_t)shape[d];
    }
    if (numel > 0 && !data) return -1;
    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        st_pending *items = realloc(w->items, cap * sizeof *items);
        if (!items) return -1;
        w->items = items;
        w->cap = cap;
    }
    st_pending *p = &w->items[w->count];
    memset(p, 0, sizeof *p);
    p->name = strdup(name);
    if (!p->name) return -1;
    p->data = data;
    p->ndim = ndim;
    for (int d = 0; d < ndim; d++) p->shape[d] = shape[d];
    p->nbytes = (size_t)numel * sizeof(float);
    w->count++;
    return 0;
}

/* Builds the JSON header text (malloc'd, padded with spaces to a multiple of 8). */
static char *writer_header(const st_writer *w, size_t *out_len) {
    json_t *root = json_object();
    size_t offset = 0;
    for (size_t i = 0; root && i < w->count; i++) {
        const st_pending *p = &w->items[i];
        json_t *shape = json_array();
        for (int d = 0; d < p->ndim; d++) json_array_append_new(shape, json_integer(p->shape[d]));
        json_t *entry = json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape, "data_offsets",
                                  (json_int_t)offset, (json_int_t)(offset + p->nbytes));
        if (!entry || json_object_set_new(root, p->name, entry) != 0) {
            json_decref(root);
            return NULL;
        }
        offset += p->nbytes;
    }
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text) return NULL;
    size_t len = strlen(text), padded = (len + 7) / 8 * 8;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        return NULL;
    }
    memset(out + len, ' ', padded - len);
    out[padded] = '\0';
    *out_len = padded;
    return out;
}

int st_writer_save(st_writer *w, const char *path, char *err, size_t errlen) {
    if (!w || !path) {
        set_err(err, errlen, "st_writer_save: bad arguments");
        return -1;
    }
    size_t hlen = 0;
    char *header = writer_header(w, &hlen);
    if (!header) {
        set_err(err, errlen, "out of memory building the safetensors header");
        return -1;
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        set_err(err, errlen, "cannot create %s: %s", path, strerror(errno));
        free(header);
        return -1;
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(lenbuf, 1, 8, fp) == 8 && fwrite(header, 1, hlen, fp) == hlen;
    for (size_t i = 0; ok && i < w->count; i++)
        ok = w->items[i].nbytes == 0 ||
             fwrite(w->items[i].data, 1, w->items[i].nbytes, fp) == w->items[i].nbytes;
    free(header);
    if (fclose(fp) != 0) ok = 0;
    if (!ok) {
        set_err(err, errlen, "writing %s failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->count; i++) free(w->items[i].name);
    free(w->items);
    free(w);
}
