/* GLB 2.0 writer. Layout of the file:
 *   header (12) | JSON chunk (8 + JSON padded with spaces) | BIN chunk (8 + data)
 * BIN holds, each block 4-byte aligned (all element sizes are multiples of 4):
 *   point POSITION (n*12) | point COLOR_0 (n*4) | camera POSITION (c*16*12) | camera COLOR_0 (c*16*4)
 * glTF objects: node 0 "world" (children 1..), one node + mesh per geometry: "points" (mode 0
 * POINTS, omitted when the cloud is empty: a POINTS primitive needs vertices), then "camera_i"
 * (mode 1 LINES, 16 vertices) per camera. One mesh per camera, as trimesh writes it, so viewers
 * can toggle or recolour cameras one by one; the few extra draw calls are nothing next to the
 * cloud. All camera accessors share two bufferViews (with byteStride, required when accessors
 * share a vertex bufferView). A file with no geometry has just the world node and no buffer.
 * The JSON is produced twice (once to count, once to write) because it is a few KB; the binary
 * is written once, with memcpy. */
#include "worker/glb.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "glb.c copies float32/uint32 data as they are in memory: GLB needs a little-endian host"
#endif

#define GLB_MAGIC 0x46546C67u      /* "glTF" */
#define CHUNK_JSON 0x4E4F534Au     /* "JSON" */
#define CHUNK_BIN 0x004E4942u      /* "BIN\0" */
#define CAM_VERTS 16               /* 8 segments x 2 vertices */
#define GL_FLOAT 5126
#define GL_UNSIGNED_BYTE 5121
#define GL_ARRAY_BUFFER 34962

typedef struct {
    size_t n_points;
    int n_cameras;
    float pmin[3], pmax[3]; /* bounds of the points (POSITION min/max are mandatory) */
    size_t off_pos, off_col, off_cam_pos, off_cam_col, bin_len;
} glb_layout;

static size_t pad4(size_t n) { return (n + 3) & ~(size_t)3; }

static void bounds(const float *xyz, size_t n, float mn[3], float mx[3]) {
    for (int a = 0; a < 3; a++) mn[a] = mx[a] = n ? xyz[a] : 0.0f;
    /* 4 points (12 floats) per step into 12 independent lanes, which the compiler turns into
     * SIMD min/max; lane j holds axis j % 3. */
    size_t i = 0;
    if (n >= 4) {
        float lo[12], hi[12];
        for (int j = 0; j < 12; j++) lo[j] = hi[j] = xyz[j % 3];
        for (; i + 4 <= n; i += 4) {
            const float *p = xyz + 3 * i;
            for (int j = 0; j < 12; j++) {
                lo[j] = p[j] < lo[j] ? p[j] : lo[j];
                hi[j] = p[j] > hi[j] ? p[j] : hi[j];
            }
        }
        for (int j = 0; j < 12; j++) {
            mn[j % 3] = lo[j] < mn[j % 3] ? lo[j] : mn[j % 3];
            mx[j % 3] = hi[j] > mx[j % 3] ? hi[j] : mx[j % 3];
        }
    }
    for (; i < n; i++)
        for (int a = 0; a < 3; a++) {
            float v = xyz[3 * i + a];
            mn[a] = v < mn[a] ? v : mn[a];
            mx[a] = v > mx[a] ? v : mx[a];
        }
}

static void make_layout(const point_cloud *pc, glb_layout *l) {
    l->n_points = pc->xyz && pc->rgba ? pc->n_points : 0;
    l->n_cameras = pc->camera_lines && pc->camera_rgba && pc->n_cameras > 0 ? pc->n_cameras : 0;
    bounds(pc->xyz, l->n_points, l->pmin, l->pmax);
    l->off_pos = 0;
    l->off_col = l->off_pos + l->n_points * 12;
    l->off_cam_pos = l->off_col + l->n_points * 4;
    l->off_cam_col = l->off_cam_pos + (size_t)l->n_cameras * CAM_VERTS * 12;
    l->bin_len = l->off_cam_col + (size_t)l->n_cameras * CAM_VERTS * 4;
}

/* JSON text sink: counts only when dst is NULL. */
typedef struct {
    char *dst;
    size_t len;
} jout;

static void put(jout *o, const char *s) {
    size_t n = strlen(s);
    if (o->dst) memcpy(o->dst + o->len, s, n);
    o->len += n;
}

/* Formats one short item (a number, a key with a number); every format used here stays far
 * below the buffer, whose size only bounds a stack copy. */
static void putf(jout *o, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put(o, tmp);
}

/* JSON has no NaN/Infinity; fusion never produces them, 0 keeps the file parseable if it did.
 * %.9g round-trips float32, %.17g double (assumes the "C" numeric locale: the server never
 * calls setlocale). */
static void put_float(jout *o, float v) {
    if (isfinite(v)) putf(o, "%.9g", (double)v);
    else put(o, "0");
}

static void put_double(jout *o, double v) {
    if (isfinite(v)) putf(o, "%.17g", v);
    else put(o, "0");
}

static void put_vec3(jout *o, const float v[3]) {
    put(o, "[");
    for (int a = 0; a < 3; a++) {
        if (a) put(o, ",");
        put_float(o, v[a]);
    }
    put(o, "]");
}

static void put_mesh(jout *o, const char *name, int index, int pos_accessor, int mode) {
    if (index >= 0) putf(o, "{\"name\":\"%s_%d\",", name, index);
    else putf(o, "{\"name\":\"%s\",", name);
    putf(o, "\"primitives\":[{\"attributes\":{\"POSITION\":%d,", pos_accessor);
    putf(o, "\"COLOR_0\":%d},\"mode\":%d,\"material\":0}]}", pos_accessor + 1, mode);
}

static void put_accessors(jout *o, int view_pos, int view_col, size_t byte_offset_pos,
                          size_t byte_offset_col, size_t count, const float mn[3], const float mx[3]) {
    putf(o, "{\"bufferView\":%d,\"byteOffset\":%zu,", view_pos, byte_offset_pos);
    putf(o, "\"componentType\":%d,\"count\":%zu,\"type\":\"VEC3\",\"min\":", GL_FLOAT, count);
    put_vec3(o, mn);
    put(o, ",\"max\":");
    put_vec3(o, mx);
    putf(o, "},{\"bufferView\":%d,\"byteOffset\":%zu,", view_col, byte_offset_col);
    putf(o, "\"componentType\":%d,\"normalized\":true,", GL_UNSIGNED_BYTE);
    putf(o, "\"count\":%zu,\"type\":\"VEC4\"}", count);
}

static void put_view(jout *o, size_t offset, size_t length, int stride) {
    putf(o, "{\"buffer\":0,\"byteOffset\":%zu,\"byteLength\":%zu,", offset, length);
    if (stride) putf(o, "\"byteStride\":%d,", stride);
    putf(o, "\"target\":%d}", GL_ARRAY_BUFFER);
}

static void write_json(const point_cloud *pc, const glb_layout *l, jout *o) {
    const int has_points = l->n_points > 0, n_meshes = has_points + l->n_cameras;

    put(o, "{\"asset\":{\"version\":\"2.0\",\"generator\":\"da3-server\"},\"scene\":0,");
    put(o, "\"scenes\":[{\"nodes\":[0],\"extras\":{\"hf_alignment\":[");
    for (int r = 0; r < 4; r++) {
        put(o, r ? ",[" : "[");
        for (int c = 0; c < 4; c++) {
            if (c) put(o, ",");
            put_double(o, pc->alignment[4 * r + c]);
        }
        put(o, "]");
    }
    put(o, "]}}],");

    put(o, "\"nodes\":[{\"name\":\"world\"");
    if (n_meshes) {
        put(o, ",\"children\":[");
        for (int k = 0; k < n_meshes; k++) putf(o, k ? ",%d" : "%d", k + 1);
        put(o, "]");
    }
    put(o, "}");
    for (int k = 0; k < n_meshes; k++) {
        if (has_points && k == 0) putf(o, ",{\"name\":\"points\",\"mesh\":0}");
        else putf(o, ",{\"name\":\"camera_%d\",\"mesh\":%d}", k - has_points, k);
    }
    put(o, "]");
    if (!n_meshes) {
        put(o, "}");
        return;
    }

    put(o, ",\"meshes\":[");
    if (has_points) put_mesh(o, "points", -1, 0, 0);
    for (int i = 0; i < l->n_cameras; i++) {
        if (has_points || i) put(o, ",");
        put_mesh(o, "camera", i, 2 * (has_points + i), 1);
    }
    put(o, "],\"materials\":[{\"pbrMetallicRoughness\":{\"baseColorFactor\":[1,1,1,1],"
           "\"metallicFactor\":0,\"roughnessFactor\":0}}]");

    /* bufferViews: [points pos, points colour] then [cameras pos, cameras colour]. */
    const int cam_view = 2 * has_points;
    put(o, ",\"accessors\":[");
    if (has_points) put_accessors(o, 0, 1, 0, 0, l->n_points, l->pmin, l->pmax);
    for (int i = 0; i < l->n_cameras; i++) {
        float mn[3], mx[3];
        bounds(pc->camera_lines + 48 * (size_t)i, CAM_VERTS, mn, mx);
        if (has_points || i) put(o, ",");
        put_accessors(o, cam_view, cam_view + 1, (size_t)i * CAM_VERTS * 12, (size_t)i * CAM_VERTS * 4,
                      CAM_VERTS, mn, mx);
    }
    put(o, "],\"bufferViews\":[");
    if (has_points) {
        put_view(o, l->off_pos, l->n_points * 12, 0);
        put(o, ",");
        put_view(o, l->off_col, l->n_points * 4, 0);
    }
    if (l->n_cameras) {
        if (has_points) put(o, ",");
        put_view(o, l->off_cam_pos, l->off_cam_col - l->off_cam_pos, 12);
        put(o, ",");
        put_view(o, l->off_cam_col, l->bin_len - l->off_cam_col, 4);
    }
    putf(o, "],\"buffers\":[{\"byteLength\":%zu}]}", l->bin_len);
}

static size_t total_size(size_t json_len, size_t bin_len) {
    return 12 + 8 + pad4(json_len) + (bin_len ? 8 + pad4(bin_len) : 0);
}

size_t glb_size(const point_cloud *pc) {
    glb_layout l;
    make_layout(pc, &l);
    jout counter = {NULL, 0};
    write_json(pc, &l, &counter);
    return total_size(counter.len, l.bin_len);
}

static unsigned char *put_u32(unsigned char *p, uint32_t v) {
    memcpy(p, &v, 4);
    return p + 4;
}

size_t glb_write(const point_cloud *pc, unsigned char *dst, size_t cap) {
    glb_layout l;
    make_layout(pc, &l);
    jout counter = {NULL, 0};
    write_json(pc, &l, &counter);
    size_t json_len = pad4(counter.len), total = total_size(counter.len, l.bin_len);
    if (!dst || cap < total || total > UINT32_MAX) return 0;

    unsigned char *p = put_u32(dst, GLB_MAGIC);
    p = put_u32(p, 2);
    p = put_u32(p, (uint32_t)total);
    p = put_u32(p, (uint32_t)json_len);
    p = put_u32(p, CHUNK_JSON);
    jout text = {(char *)p, 0};
    write_json(pc, &l, &text);
    memset(p + text.len, ' ', json_len - text.len); /* JSON chunk padding must be spaces */
    p += json_len;
    if (l.bin_len) {
        p = put_u32(p, (uint32_t)pad4(l.bin_len));
        p = put_u32(p, CHUNK_BIN);
        unsigned char *bin = p;
        if (l.n_points) {
            memcpy(bin + l.off_pos, pc->xyz, l.n_points * 12);
            memcpy(bin + l.off_col, pc->rgba, l.n_points * 4);
        }
        if (l.n_cameras) {
            memcpy(bin + l.off_cam_pos, pc->camera_lines, (size_t)l.n_cameras * CAM_VERTS * 12);
            for (int i = 0; i < l.n_cameras; i++)
                for (int v = 0; v < CAM_VERTS; v++)
                    memcpy(bin + l.off_cam_col + ((size_t)i * CAM_VERTS + v) * 4, pc->camera_rgba + 4 * i, 4);
        }
        memset(bin + l.bin_len, 0, pad4(l.bin_len) - l.bin_len); /* BIN padding must be zeros */
        p = bin + pad4(l.bin_len);
    }
    return (size_t)(p - dst);
}
