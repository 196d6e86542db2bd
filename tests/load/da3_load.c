/* da3-load: a load generator for da3-server: protocol v1 (HTTP session API + WebSocket) and v2
 * (one /ws/reconstruct socket and an init message; --protocol v2).
 *
 * Scenarios (each bounded by a count and/or --duration):
 *   idle       N sockets to N sessions held open, each pinging every --interval (ping -> pong)
 *   upload     M sessions at once: create, connect, upload K images, [generate + GLB], close, delete
 *   lifecycle  create, connect, upload 1, delete (while connected), repeated
 *   generate   S sessions upload K images each, then all generate at once; per-job wait/completion
 * Prints per message kind count, errors, p50/p99/max latency, throughput; with --pid the server's
 * RSS, threads and fds before and after. Exits 1 on any error, so tests can assert zero errors.
 * docs/load-testing.md explains the figures. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/b64.h"
#include "common/util.h"
#include "tests/load/load.h"
#include "tests/load/stats.h"
#include "tests/load/wsc.h"

#define SID_LEN 64

/* The image every upload sends, and its base64 JSON message (built once: the client must not
 * spend per upload what the server is being measured on). */
static uint8_t *g_img;
static size_t g_img_len;
static char *g_img_json;
static size_t g_img_json_len;

static double g_t_start; /* when the scenario started (now_s) */
static proc_snap g_held, g_self_held;
static int g_held_ok;

static void usage(FILE *f) {
    fprintf(f,
            "usage: da3-load SCENARIO [options]\n"
            "  SCENARIO: idle | upload | lifecycle | generate\n"
            "  --host H            server address (default 127.0.0.1)\n"
            "  --port P            server port (default 8000)\n"
            "  --pid PID           local server's pid: RSS, threads, open fds before/after (/proc)\n"
            "  -n, --count N       idle: sockets (100); upload: sessions (10); lifecycle: cycles (100,\n"
            "                      0 = until --duration); generate: sessions (4)\n"
            "  -c, --concurrency C sessions/cycles in flight at once (upload, generate: all; lifecycle: 1)\n"
            "  -k, --images K      images per session (upload 10, generate 2, lifecycle 1)\n"
            "  --image FILE        JPEG/PNG to upload (default: a generated --size PNG)\n"
            "  --size WxH          generated image size (default 640x480)\n"
            "  --binary | --base64 binary frames (default) or {\"type\":\"image\",\"data\":...} JSON\n"
            "  --generate          upload: generate after the uploads and receive the GLB\n"
            "  --process-res N     sessions' process_res (default 140)\n"
            "  --interval S        idle: seconds between pings on each socket (default 1)\n"
            "  --duration S        idle: hold time (default 10); others: start nothing new after S s\n"
            "  --timeout S         seconds allowed for any one reply (default 60; generate 600)\n"
            "  --stagger-ms MS     generate: gap between the sessions' generate messages (default 0)\n"
            "  --pipeline          upload: send all K images, then read the K acks\n"
            "  --connect-inflight N idle: handshakes in progress at once (default 64)\n"
            "  --client raw|civetweb idle: da3-load's epoll client (default) or CivetWeb's client\n"
            "  --settle S          after the run, wait up to S s for the server's fds to return (default 5)\n"
            "  --check-fds         exit 1 when the server's fd count has not returned to its start\n"
            "  --keep              do not delete the sessions\n"
            "  --protocol v1|v2    upload, lifecycle, generate: v1 (HTTP create + /ws/reconstruct/{id},\n"
            "                      the default) or v2 (one /ws/reconstruct socket and an init message)\n");
}

/* Parses "WxH"; 0 or -1. */
static int parse_size(const char *s, int *w, int *h) {
    return sscanf(s, "%dx%d", w, h) == 2 && *w > 0 && *h > 0 && *w <= 8192 && *h <= 8192 ? 0 : -1;
}

/* ---- generated image: an uncompressed PNG (stored deflate blocks), so da3-load needs no codec
 * library; the server decodes PNG like JPEG. ---- */

static uint32_t crc_table[256];

/* CRC-32 (PNG's) of n bytes continuing from crc. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    if (!crc_table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* Appends a big-endian u32. */
static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Writes one PNG chunk (length, type, data, CRC) at out; returns its size. */
static size_t png_chunk(uint8_t *out, const char *type, const uint8_t *data, size_t n) {
    put32(out, (uint32_t)n);
    memcpy(out + 4, type, 4);
    if (n) memcpy(out + 8, data, n);
    put32(out + 8 + n, crc32_update(0, out + 4, n + 4));
    return n + 12;
}

/* A w x h RGB PNG of a smooth pattern with some texture; malloc'd, length in *len. */
static uint8_t *make_png(int w, int h, size_t *len) {
    size_t row = (size_t)w * 3 + 1, raw_len = row * (size_t)h;
    uint8_t *raw = malloc(raw_len);
    uint32_t seed = 12345;
    for (int y = 0; y < h; y++) {
        uint8_t *r = raw + (size_t)y * row;
        r[0] = 0; /* filter: none */
        for (int x = 0; x < w; x++) {
            seed = seed * 1103515245u + 12345u;
            int n = (int)(seed >> 27);
            r[1 + 3 * x] = (uint8_t)(x * 255 / w + n);
            r[2 + 3 * x] = (uint8_t)(y * 255 / h + n);
            r[3 + 3 * x] = (uint8_t)(((x / 32 + y / 32) & 1) * 128 + n);
        }
    }
    /* zlib stream of stored blocks: 2-byte header, blocks of <= 65535 bytes, Adler-32. */
    size_t blocks = raw_len / 65535 + 1, z_len = 2 + raw_len + blocks * 5 + 4;
    uint8_t *z = malloc(z_len), *zp = z;
    *zp++ = 0x78, *zp++ = 0x01;
    uint32_t a = 1, b = 0;
    for (size_t off = 0; off < raw_len || off == 0;) {
        size_t n = raw_len - off > 65535 ? 65535 : raw_len - off;
        *zp++ = off + n == raw_len ? 1 : 0;
        *zp++ = (uint8_t)n, *zp++ = (uint8_t)(n >> 8), *zp++ = (uint8_t)~n, *zp++ = (uint8_t)(~n >> 8);
        memcpy(zp, raw + off, n);
        for (size_t i = 0; i < n; i++) a = (a + raw[off + i]) % 65521, b = (b + a) % 65521;
        zp += n;
        off += n;
        if (n == 0) break;
    }
    put32(zp, b << 16 | a);
    zp += 4;
    z_len = (size_t)(zp - z);
    uint8_t *png = malloc(8 + 25 + z_len + 12 + 12), *p = png;
    memcpy(p, "\x89PNG\r\n\x1a\n", 8);
    p += 8;
    uint8_t ihdr[13];
    put32(ihdr, (uint32_t)w);
    put32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8, ihdr[9] = 2, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0;
    p += png_chunk(p, "IHDR", ihdr, 13);
    p += png_chunk(p, "IDAT", z, z_len);
    p += png_chunk(p, "IEND", NULL, 0);
    free(raw);
    free(z);
    *len = (size_t)(p - png);
    return png;
}

/* Loads --image or generates the PNG, and builds the base64 JSON message; 0 or -1. */
static int load_image(const load_opts *o) {
    if (o->image_path) {
        g_img = read_file(o->image_path, &g_img_len);
        if (!g_img) {
            fprintf(stderr, "da3-load: %s: %s\n", o->image_path, strerror(errno));
            return -1;
        }
        if (g_img_len == 0) {
            fprintf(stderr, "da3-load: %s is empty\n", o->image_path);
            return -1;
        }
    } else {
        g_img = make_png(o->width, o->height, &g_img_len);
    }
    const char *pre = "{\"type\":\"image\",\"filename\":\"da3-load\",\"data\":\"";
    size_t pl = strlen(pre);
    g_img_json = malloc(pl + b64_encoded_len(g_img_len) + 3);
    memcpy(g_img_json, pre, pl);
    char *q = g_img_json + pl;
    q += b64_encode(g_img, g_img_len, q);
    *q++ = '"', *q++ = '}';
    *q = 0;
    g_img_json_len = (size_t)(q - g_img_json);
    return 0;
}

/* ---- HTTP session API ---- */

void load_msg_type(const char *msg, size_t len, char *out) {
    out[0] = 0;
    json_t *j = json_loadb(msg, len, 0, NULL);
    const char *t = j ? json_string_value(json_object_get(j, "type")) : NULL;
    if (t) snprintf(out, 32, "%s", t);
    json_decref(j);
}

int load_create_session(const load_opts *o, int max_images, char *sid) {
    char path[256], err[256];
    snprintf(path, sizeof path, "/ws/session/create?max_images=%d&process_res=%d", max_images, o->process_res);
    int status;
    char *body;
    uint64_t bytes = 0;
    double t0 = now_mono();
    sid[0] = 0;
    if (http_request(o->host, o->port, "POST", path, o->timeout, &status, &body, &bytes, err, sizeof err) < 0) {
        stats_err(K_CREATE, t0, now_mono(), "%s", err);
        return -1;
    }
    json_t *j = status == 200 ? json_loads(body, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(j, "session_id"));
    if (!id || strlen(id) >= SID_LEN) {
        stats_err(K_CREATE, t0, now_mono(), "HTTP %d: %.200s", status, body);
        json_decref(j);
        free(body);
        return -1;
    }
    snprintf(sid, SID_LEN, "%s", id);
    json_decref(j);
    free(body);
    stats_ok(K_CREATE, t0, now_mono(), bytes);
    return 0;
}

int load_delete_session(const load_opts *o, const char *sid) {
    char path[128], err[256];
    snprintf(path, sizeof path, "/ws/session/%s", sid);
    int status;
    char *body;
    uint64_t bytes = 0;
    double t0 = now_mono();
    if (http_request(o->host, o->port, "DELETE", path, o->timeout, &status, &body, &bytes, err, sizeof err) < 0) {
        stats_err(K_DELETE, t0, now_mono(), "%s", err);
        return -1;
    }
    if (status != 200) {
        stats_err(K_DELETE, t0, now_mono(), "HTTP %d: %.200s", status, body);
        free(body);
        return -1;
    }
    free(body);
    stats_ok(K_DELETE, t0, now_mono(), bytes);
    return 0;
}

typedef struct {
    const load_opts *o;
    long n;
    char *ids;
    atomic_long next, ok;
    int del;
} many_job;

/* Thread body of load_create_many / load_delete_many: takes indices until none are left. */
static void *many_thread(void *arg) {
    many_job *m = arg;
    for (long i; (i = atomic_fetch_add(&m->next, 1)) < m->n;) {
        char *sid = m->ids + i * SID_LEN;
        if (m->del) {
            if (sid[0]) load_delete_session(m->o, sid);
        } else if (load_create_session(m->o, 1, sid) == 0) {
            atomic_fetch_add(&m->ok, 1);
        }
    }
    return NULL;
}

/* Runs many_thread on 8 threads (enough to keep the front's HTTP path busy on a few cores). */
static long run_many(const load_opts *o, long n, char *ids, int del) {
    many_job m = {.o = o, .n = n, .ids = ids, .del = del};
    atomic_init(&m.next, 0);
    atomic_init(&m.ok, 0);
    pthread_t th[8];
    int nt = n < 8 ? (int)n : 8;
    for (int i = 0; i < nt; i++) pthread_create(&th[i], NULL, many_thread, &m);
    for (int i = 0; i < nt; i++) pthread_join(th[i], NULL);
    return atomic_load(&m.ok);
}

long load_create_many(const load_opts *o, long n, char *ids) { return run_many(o, n, ids, 0); }

void load_delete_many(const load_opts *o, long n, const char *ids) { run_many(o, n, (char *)ids, 1); }

/* ---- blocking per-session steps (upload, lifecycle, generate) ---- */

/* Opens the session's socket and reads its "connected" message, recording 'connect'; 0 or -1
 * (c is initialised either way; wsc_free it). */
static int sess_connect(const load_opts *o, wsc *c, const char *sid, uint64_t seed) {
    char path[128], err[256];
    snprintf(path, sizeof path, "/ws/reconstruct/%s", sid);
    double t0 = now_mono();
    if (wsc_open(c, o->host, o->port, path, o->timeout, seed, err, sizeof err) < 0) {
        stats_err(K_CONNECT, t0, now_mono(), "%s", err);
        return -1;
    }
    int r = wsc_recv(c, err, sizeof err);
    char type[32] = "";
    if (r == 1) load_msg_type((char *)c->msg, c->msg_len, type);
    if (strcmp(type, "connected") != 0) {
        stats_err(K_CONNECT, t0, now_mono(), "expected 'connected', got %s",
                  r == 1 ? (char *)c->msg : r == 0 ? "a close" : err);
        return -1;
    }
    stats_ok(K_CONNECT, t0, now_mono(), c->bytes_in + c->bytes_out);
    return 0;
}

/* Protocol v2: opens the bare /ws/reconstruct socket ('connect') and creates the session with an
 * init message ('create' = init to session_created); the id goes into sid. 0 or -1 (c is
 * initialised either way; wsc_free it). */
static int sess_init_v2(const load_opts *o, wsc *c, int max_images, char *sid, uint64_t seed) {
    char err[256], init[160];
    sid[0] = 0;
    double t0 = now_mono();
    if (wsc_open(c, o->host, o->port, "/ws/reconstruct", o->timeout, seed, err, sizeof err) < 0) {
        stats_err(K_CONNECT, t0, now_mono(), "%s", err);
        return -1;
    }
    double t1 = now_mono();
    stats_ok(K_CONNECT, t0, t1, c->bytes_in + c->bytes_out);
    int n = snprintf(init, sizeof init, "{\"type\":\"init\",\"max_images\":%d,\"process_res\":%d}", max_images,
                     o->process_res);
    int r = wsc_send(c, WS_TEXT, init, (size_t)n) == 0 ? wsc_recv(c, err, sizeof err) : -1;
    char type[32] = "";
    if (r == 1) load_msg_type((char *)c->msg, c->msg_len, type);
    const char *id = r == 1 ? strstr((char *)c->msg, "\"session_id\":\"") : NULL;
    if (strcmp(type, "session_created") != 0 || !id || strlen(id + 14) < 36) {
        stats_err(K_CREATE, t1, now_mono(), "expected 'session_created', got %s",
                  r == 1 ? (char *)c->msg : r == 0 ? "a close" : err);
        return -1;
    }
    memcpy(sid, id + 14, 36);
    sid[36] = 0;
    stats_ok(K_CREATE, t1, now_mono(), (uint64_t)n + c->msg_len);
    return 0;
}

/* A session ready for uploads, by --protocol: v1 creates it over HTTP and connects to it, v2
 * sends init on a bare socket. 0 or -1; sid is "" when no session was made. */
static int sess_start(const load_opts *o, wsc *c, int max_images, char *sid, uint64_t seed) {
    if (o->v2) return sess_init_v2(o, c, max_images, sid, seed);
    wsc_init(c, -1, 1);
    if (load_create_session(o, max_images, sid) < 0) {
        sid[0] = 0;
        return -1;
    }
    wsc_free(c);
    return sess_connect(o, c, sid, seed);
}

/* Sends one image (binary frame or base64 JSON per --binary); 0 or -1 (recorded as an error). */
static int sess_send_image(const load_opts *o, wsc *c, double t0) {
    int r = o->binary ? wsc_send(c, WS_BINARY, g_img, g_img_len) : wsc_send(c, WS_TEXT, g_img_json, g_img_json_len);
    if (r < 0) stats_err(K_IMAGE, t0, now_mono(), "send: %s", strerror(errno));
    return r;
}

/* Reads one ack and checks it counts image n; records 'image' from t0; 0 or -1. */
static int sess_read_ack(wsc *c, int n, double t0, uint64_t bytes0) {
    char err[256], type[32] = "";
    int r = wsc_recv(c, err, sizeof err);
    if (r == 1) load_msg_type((char *)c->msg, c->msg_len, type);
    if (strcmp(type, "ack") != 0) {
        stats_err(K_IMAGE, t0, now_mono(), "expected an ack, got %.300s", r == 1 ? (char *)c->msg : r == 0 ? "a close" : err);
        return -1;
    }
    json_t *j = json_loadb((char *)c->msg, c->msg_len, 0, NULL);
    int count = (int)json_integer_value(json_object_get(j, "image_count"));
    json_decref(j);
    if (count != n) {
        stats_err(K_IMAGE, t0, now_mono(), "ack counts image %d, expected %d", count, n);
        return -1;
    }
    stats_ok(K_IMAGE, t0, now_mono(), c->bytes_in + c->bytes_out - bytes0);
    return 0;
}

/* Uploads k images (the session already holds `have`), sequentially or pipelined; 0 or -1. */
static int sess_upload(const load_opts *o, wsc *c, int k, int have) {
    if (!o->pipeline) {
        for (int i = 0; i < k; i++) {
            double t0 = now_mono();
            uint64_t b0 = c->bytes_in + c->bytes_out;
            if (sess_send_image(o, c, t0) < 0 || sess_read_ack(c, have + i + 1, t0, b0) < 0) return -1;
        }
        return 0;
    }
    /* Pipelined: acks are tiny and the front queues them, so sending everything first cannot
     * deadlock; each ack's latency runs from its own image's send. */
    double *t0 = calloc((size_t)k, sizeof *t0);
    int rc = 0, sent = 0;
    uint64_t per = (o->binary ? g_img_len : g_img_json_len) + 14;
    for (; sent < k; sent++) {
        t0[sent] = now_mono();
        if (sess_send_image(o, c, t0[sent]) < 0) {
            rc = -1;
            break;
        }
    }
    for (int i = 0; i < sent && rc == 0; i++) {
        uint64_t b0 = c->bytes_in + c->bytes_out - per; /* the image's own frame counts to it */
        if (sess_read_ack(c, have + i + 1, t0[i], b0) < 0) rc = -1;
    }
    free(t0);
    return rc;
}

/* Closes the socket with a close handshake, recording 'close'. */
static void sess_close(const load_opts *o, wsc *c) {
    double t0 = now_mono();
    uint64_t b0 = c->bytes_in + c->bytes_out;
    if (wsc_close(c, o->timeout < 10 ? o->timeout : 10) == 0) stats_ok(K_CLOSE, t0, now_mono(), c->bytes_in + c->bytes_out - b0);
    else stats_err(K_CLOSE, t0, now_mono(), "no close frame from the server");
}

typedef struct {
    double t_send, t_submit, t_claim, t_done; /* now_s; 0 = not seen */
    double queue_ms;                          /* server's metadata.timing.queue_ms, -1 = none */
    long glb_bytes;
    int ok;
} gen_result;

/* Sends generate and reads progress up to the result, checking the GLB; fills *g; 0 or -1. */
static int sess_generate(wsc *c, gen_result *g) {
    char err[256], type[32];
    memset(g, 0, sizeof *g);
    g->queue_ms = -1;
    const char *msg = "{\"type\":\"generate\"}";
    uint64_t b0 = c->bytes_in + c->bytes_out;
    g->t_send = now_mono();
    if (wsc_send(c, WS_TEXT, msg, strlen(msg)) < 0) {
        stats_err(K_GENERATE, g->t_send, now_mono(), "send: %s", strerror(errno));
        return -1;
    }
    for (;;) {
        int r = wsc_recv(c, err, sizeof err);
        double t = now_mono();
        if (r != 1) {
            stats_err(K_GENERATE, g->t_send, t, "waiting for the result: %s", r == 0 ? "server closed" : err);
            return -1;
        }
        json_t *j = json_loadb((char *)c->msg, c->msg_len, 0, NULL);
        snprintf(type, sizeof type, "%s", j && json_string_value(json_object_get(j, "type")) ? json_string_value(json_object_get(j, "type")) : "");
        if (strcmp(type, "progress") == 0) {
            const char *stage = json_string_value(json_object_get(j, "stage"));
            /* The front sends loading_model when it queues the job; the first other stage comes
             * from the worker that claimed it, so its arrival marks the end of the wait. */
            if (stage && strcmp(stage, "loading_model") == 0) {
                if (!g->t_submit) g->t_submit = t;
            } else if (!g->t_claim) {
                g->t_claim = t;
            }
            stats_ok(K_PROGRESS, g->t_send, t, c->msg_len);
            json_decref(j);
            continue;
        }
        if (strcmp(type, "complete") == 0) {
            const char *b64 = json_string_value(json_object_get(j, "glb_base64"));
            json_t *md = json_object_get(j, "metadata");
            long want = (long)json_integer_value(json_object_get(md, "glb_size_bytes"));
            json_t *qm = json_object_get(json_object_get(md, "timing"), "queue_ms");
            if (json_is_number(qm)) g->queue_ms = json_number_value(qm);
            size_t bl = b64 ? strlen(b64) : 0;
            long got = bl >= 4 ? (long)(bl / 4 * 3) - (b64[bl - 1] == '=') - (b64[bl - 2] == '=') : 0;
            /* "glTF" base64-encodes to "Z2xURg": the payload is a GLB of the announced size. */
            if (!b64 || strncmp(b64, "Z2xURg", 6) != 0 || got != want) {
                stats_err(K_GENERATE, g->t_send, t, "complete without a valid GLB (%ld bytes, announced %ld)", got, want);
                json_decref(j);
                return -1;
            }
            g->glb_bytes = got;
            g->t_done = t;
            g->ok = 1;
            json_decref(j);
            stats_ok(K_GENERATE, g->t_send, t, c->bytes_in + c->bytes_out - b0);
            return 0;
        }
        stats_err(K_GENERATE, g->t_send, t, "expected progress or complete, got %.300s", (char *)c->msg);
        json_decref(j);
        return -1;
    }
}

/* ---- scenario: upload ---- */

typedef struct {
    const load_opts *o;
    atomic_long next;
    long n;
    gen_result *gen; /* per session, when --generate */
} upload_job;

/* Runs whole sessions until none are left or --duration has passed. */
static void *upload_thread(void *arg) {
    upload_job *u = arg;
    const load_opts *o = u->o;
    for (long i; (i = atomic_fetch_add(&u->next, 1)) < u->n;) {
        if (o->duration > 0 && now_mono() - g_t_start > o->duration) break;
        char sid[SID_LEN];
        wsc c;
        if (sess_start(o, &c, o->images > 0 ? o->images : 1, sid, (uint64_t)i + 1) == 0 &&
            sess_upload(o, &c, o->images, 0) == 0) {
            if (o->generate) sess_generate(&c, &u->gen[i]);
            sess_close(o, &c);
        }
        wsc_free(&c);
        if (sid[0] && !o->keep) load_delete_session(o, sid);
    }
    return NULL;
}

/* Starts `threads` copies of fn on arg and joins them. */
static void run_threads(int threads, void *(*fn)(void *), void *arg) {
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 256 << 10); /* blocking loops; hundreds of them need no 8 MB each */
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&th[started], &at, fn, arg) != 0) break;
    if (started < threads) fprintf(stderr, "da3-load: only %d of %d threads started\n", started, threads);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_attr_destroy(&at);
    free(th);
}

static int scenario_upload(const load_opts *o) {
    upload_job u = {.o = o, .n = o->count};
    atomic_init(&u.next, 0);
    u.gen = calloc((size_t)(o->count > 0 ? o->count : 1), sizeof *u.gen);
    int th = o->concurrency > 0 ? o->concurrency : (int)o->count;
    printf("upload: %ld sessions (%d at once) x %d images (%zu bytes, %s)%s\n", o->count, th, o->images, g_img_len,
           o->binary ? "binary frames" : "base64 JSON", o->generate ? ", then generate" : "");
    run_threads(th, upload_thread, &u);
    free(u.gen);
    return 0;
}

/* ---- scenario: lifecycle ---- */

typedef struct {
    const load_opts *o;
    atomic_long next;
} cycle_job;

/* One cycle: create, connect, upload 1, DELETE while connected; the socket must then get
 * "Session deleted" and a close ('close' = DELETE's reply to the server's close frame). */
static void one_cycle(const load_opts *o, long i) {
    char sid[SID_LEN], err[256];
    wsc c;
    if (sess_start(o, &c, 1, sid, (uint64_t)i + 1) < 0 || sess_upload(o, &c, 1, 0) < 0) {
        wsc_free(&c);
        if (sid[0]) load_delete_session(o, sid);
        return;
    }
    if (load_delete_session(o, sid) < 0) {
        wsc_free(&c);
        return;
    }
    double t0 = now_mono();
    int r = wsc_recv(&c, err, sizeof err);
    const char *want = "Session deleted";
    int told = r == 1 && strstr((char *)c.msg, want) != NULL;
    if (told) r = wsc_recv(&c, err, sizeof err);
    if (told && r == 0 && c.close_code != 1006) {
        uint8_t code[2] = {1000 >> 8, 1000 & 0xFF};
        wsc_send(&c, WS_CLOSE, code, 2); /* finish the close handshake the server began */
        stats_ok(K_CLOSE, t0, now_mono(), 0);
    } else {
        stats_err(K_CLOSE, t0, now_mono(), "after DELETE: %s", !told ? "no 'Session deleted' message" : "no close frame");
    }
    wsc_free(&c);
}

/* Runs cycles until the count is reached or --duration has passed. */
static void *cycle_thread(void *arg) {
    cycle_job *cj = arg;
    const load_opts *o = cj->o;
    for (;;) {
        if (o->duration > 0 && now_mono() - g_t_start > o->duration) break;
        long i = atomic_fetch_add(&cj->next, 1);
        if (o->count > 0 && i >= o->count) break;
        one_cycle(o, i);
    }
    return NULL;
}

static int scenario_lifecycle(const load_opts *o) {
    cycle_job cj = {.o = o};
    atomic_init(&cj.next, 0);
    int th = o->concurrency > 0 ? o->concurrency : 1;
    printf("lifecycle: %ld cycles%s (%d at once): create, connect, upload 1 (%zu bytes, %s), delete\n", o->count,
           o->count ? "" : " (until --duration)", th, g_img_len, o->binary ? "binary" : "base64 JSON");
    run_threads(th, cycle_thread, &cj);
    return 0;
}

/* ---- scenario: generate ---- */

typedef struct {
    const load_opts *o;
    atomic_long next;
    pthread_barrier_t ready;
    double t_go;
    gen_result *res;
} gen_job;

/* One session: create, connect, upload; wait for all; generate at t_go + i x stagger. */
static void *gen_thread(void *arg) {
    gen_job *gj = arg;
    const load_opts *o = gj->o;
    long i = atomic_fetch_add(&gj->next, 1);
    char sid[SID_LEN];
    wsc c;
    int ok = sess_start(o, &c, o->images, sid, (uint64_t)i + 1) == 0 && sess_upload(o, &c, o->images, 0) == 0;
    /* Every thread reaches the barrier, failed or not, so the others are never stranded. */
    if (pthread_barrier_wait(&gj->ready) == PTHREAD_BARRIER_SERIAL_THREAD) gj->t_go = now_mono() + 0.05;
    pthread_barrier_wait(&gj->ready);
    if (ok) {
        double at = gj->t_go + (double)i * o->stagger_ms / 1e3, d = at - now_mono();
        if (d > 0) {
            struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
            nanosleep(&ts, NULL);
        }
        sess_generate(&c, &gj->res[i]);
        sess_close(o, &c);
    }
    wsc_free(&c);
    if (sid[0] && !o->keep) load_delete_session(o, sid);
    return NULL;
}

static int cmp_submit(const void *a, const void *b) {
    const gen_result *x = *(gen_result *const *)a, *y = *(gen_result *const *)b;
    return (x->t_submit > y->t_submit) - (x->t_submit < y->t_submit);
}

/* Reads workers.configured from /status; -1 when unknown. */
static int server_workers(const load_opts *o) {
    int status;
    char *body, err[128];
    uint64_t bytes = 0;
    if (http_request(o->host, o->port, "GET", "/status", o->timeout, &status, &body, &bytes, err, sizeof err) < 0) return -1;
    json_t *j = json_loads(body, 0, NULL);
    int w = (int)json_integer_value(json_object_get(json_object_get(j, "workers"), "configured"));
    json_decref(j);
    free(body);
    return w > 0 ? w : -1;
}

static int scenario_generate(const load_opts *o) {
    long n = o->count;
    int workers = server_workers(o);
    printf("generate: %ld sessions x %d images (%zu bytes), process_res %d, all generating at once over %d worker(s)\n",
           n, o->images, g_img_len, o->process_res, workers);
    gen_job gj = {.o = o};
    atomic_init(&gj.next, 0);
    gj.res = calloc((size_t)n, sizeof *gj.res);
    pthread_barrier_init(&gj.ready, NULL, (unsigned)n);
    run_threads((int)n, gen_thread, &gj);
    pthread_barrier_destroy(&gj.ready);

    /* Per-job figures in the order the front queued the jobs (arrival of their first progress). */
    gen_result **by = calloc((size_t)n, sizeof *by);
    int m = 0, incomplete = 0;
    for (long i = 0; i < n; i++) {
        if (gj.res[i].ok && gj.res[i].t_submit && gj.res[i].t_claim) by[m++] = &gj.res[i];
        else incomplete++;
    }
    qsort(by, (size_t)m, sizeof *by, cmp_submit);
    printf("%-4s %10s %10s %10s %10s %10s %8s\n", "job", "submit_ms", "wait_ms", "queue_ms", "run_ms", "total_ms", "ahead");
    /* Submission times are when each session's thread saw its first progress: threads on a
     * busy machine see messages sent within a millisecond in either order, so jobs submitted
     * closer than TOL apart count as submitted together (--stagger-ms separates them), and two
     * workers' claims closer than TOL apart as simultaneous. */
    const double TOL = 0.002;
    int inversions = 0, excess = 0;
    double *waits = calloc((size_t)(m ? m : 1), sizeof *waits);
    for (int a = 0; a < m; a++) {
        gen_result *g = by[a];
        /* ahead: jobs claimed between this one's submission and its claim. FIFO over W workers
         * means those are at most the jobs submitted before it (its share); more means it was
         * overtaken. */
        int ahead = 0, share = 0;
        for (int b = 0; b < m; b++) {
            if (b == a) continue;
            if (by[b]->t_claim > g->t_submit && by[b]->t_claim < g->t_claim) ahead++;
            if (by[b]->t_submit < g->t_submit + TOL) share++;
        }
        for (int b = a + 1; b < m; b++)
            if (by[b]->t_submit > g->t_submit + TOL && by[b]->t_claim < g->t_claim - TOL) inversions++;
        if (ahead > share) excess++;
        waits[a] = (g->t_claim - g->t_send) * 1e3;
        printf("%-4d %10.1f %10.1f %10.1f %10.1f %10.1f %8d\n", a, (g->t_submit - gj.t_go) * 1e3, waits[a], g->queue_ms,
               (g->t_done - g->t_claim) * 1e3, (g->t_done - g->t_send) * 1e3, ahead);
    }
    double *sorted = calloc((size_t)(m ? m : 1), sizeof *sorted);
    memcpy(sorted, waits, (size_t)m * sizeof *sorted);
    for (int a = 1; a < m; a++)
        for (int b = a; b > 0 && sorted[b - 1] > sorted[b]; b--) {
            double t = sorted[b];
            sorted[b] = sorted[b - 1];
            sorted[b - 1] = t;
        }
    printf("jobs: %d complete, %d incomplete; wait p50 %.1f ms, max %.1f ms; claim-order inversions %d; "
           "jobs overtaken beyond their share %d\n",
           m, incomplete, percentile(sorted, (size_t)m, 0.5), m ? sorted[m - 1] : 0.0, inversions, excess);
    free(sorted);
    free(waits);
    free(by);
    free(gj.res);
    return incomplete ? -1 : 0;
}

/* ---- scenario: idle (one epoll loop, raw sockets) ---- */

enum { IC_NEW, IC_CONNECTING, IC_HANDSHAKE, IC_WAIT_CONNECTED, IC_OPEN, IC_CLOSING, IC_DONE };

typedef struct {
    wsc c;
    int state;
    char key[25];
    double t0;     /* start of the exchange in flight (connect, ping, close) */
    uint64_t b0;   /* bytes in+out at t0 */
    int ping_out;  /* a ping awaits its pong */
    double next_ping;
    uint8_t *pend; /* bytes the kernel did not take yet */
    size_t pend_len;
} iconn;

typedef struct {
    const load_opts *o;
    iconn *ics;
    long n;
    const char *ids;
    int ep;
} idle_ctx;

/* (Re)registers connection idx: input always, output while connecting or bytes are pending. */
static void ic_watch(idle_ctx *x, long idx, int op) {
    iconn *ic = &x->ics[idx];
    struct epoll_event ev = {.events = EPOLLIN | (ic->pend_len || ic->state == IC_CONNECTING ? EPOLLOUT : 0u),
                             .data.u64 = (uint64_t)idx};
    epoll_ctl(x->ep, op, ic->c.fd, &ev);
}

/* Sends bytes on the non-blocking socket, keeping what the kernel does not take; 0 or -1. */
static int ic_send(idle_ctx *x, long idx, const uint8_t *p, size_t n) {
    iconn *ic = &x->ics[idx];
    if (!ic->pend_len) {
        ssize_t w = send(ic->c.fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) return -1;
        if (w < 0) w = 0;
        ic->c.bytes_out += (uint64_t)w;
        p += w;
        n -= (size_t)w;
        if (!n) return 0;
    }
    ic->pend = realloc(ic->pend, ic->pend_len + n);
    memcpy(ic->pend + ic->pend_len, p, n);
    ic->pend_len += n;
    ic_watch(x, idx, EPOLL_CTL_MOD);
    return 0;
}

/* Sends one frame; 0 or -1. */
static int ic_frame(idle_ctx *x, long idx, int opcode, const void *p, size_t n) {
    size_t len = wsc_build(&x->ics[idx].c, opcode, p, n);
    return ic_send(x, idx, x->ics[idx].c.out, len);
}

/* The kind of exchange a connection is in, for its errors. */
static kind ic_kind(const iconn *ic) {
    return ic->state == IC_CLOSING ? K_CLOSE : ic->state == IC_OPEN ? K_PING : K_CONNECT;
}

/* Ends a connection after an error (recorded against its current exchange). */
static void ic_fail(iconn *ic, const char *why) {
    stats_err(ic_kind(ic), ic->t0, now_mono(), "%s", why);
    if (ic->c.fd >= 0) close(ic->c.fd); /* closing the fd also drops it from epoll */
    ic->c.fd = -1;
    ic->state = IC_DONE;
}

/* Starts the non-blocking connect of connection idx. */
static void ic_start(idle_ctx *x, long idx) {
    iconn *ic = &x->ics[idx];
    char err[256];
    ic->t0 = now_mono();
    int fd = tcp_connect_nb(x->o->host, x->o->port, err, sizeof err);
    wsc_init(&ic->c, fd, (uint64_t)idx + 1);
    ic->state = IC_CONNECTING;
    if (fd < 0) {
        ic_fail(ic, err);
        return;
    }
    ic_watch(x, idx, EPOLL_CTL_ADD);
}

/* Acts on one complete message or control frame on an idle connection. */
static void ic_message(idle_ctx *x, long idx, int ev) {
    iconn *ic = &x->ics[idx];
    double t = now_mono();
    if (ev == WSE_PING) {
        uint8_t p[126];
        memcpy(p, ic->c.ctl, ic->c.ctl_len);
        if (ic_frame(x, idx, WS_PONG, p, ic->c.ctl_len) < 0) ic_fail(ic, "pong send failed");
        return;
    }
    if (ev == WSE_CLOSE) {
        if (ic->state == IC_CLOSING) {
            stats_ok(K_CLOSE, ic->t0, t, ic->c.bytes_in + ic->c.bytes_out - ic->b0);
            close(ic->c.fd);
            ic->c.fd = -1;
            ic->state = IC_DONE;
        } else {
            char why[64];
            snprintf(why, sizeof why, "server closed the socket (code %d)", ic->c.close_code);
            ic_fail(ic, why);
        }
        return;
    }
    char type[32];
    load_msg_type((char *)ic->c.msg, ic->c.msg_len, type);
    if (ic->state == IC_WAIT_CONNECTED && strcmp(type, "connected") == 0) {
        stats_ok(K_CONNECT, ic->t0, t, ic->c.bytes_in + ic->c.bytes_out);
        ic->state = IC_OPEN;
    } else if (ic->state == IC_OPEN && ic->ping_out && strcmp(type, "pong") == 0) {
        stats_ok(K_PING, ic->t0, t, ic->c.bytes_in + ic->c.bytes_out - ic->b0);
        ic->ping_out = 0;
        ic->next_ping += x->o->interval;
        if (ic->next_ping < t) ic->next_ping = t; /* a late pong shifts the schedule, never bunches it */
    } else if (ic->state != IC_CLOSING) {
        char why[400];
        snprintf(why, sizeof why, "unexpected message: %.300s", (char *)ic->c.msg);
        ic_fail(ic, why);
    }
}

/* Handles epoll events on connection idx. */
static void ic_event(idle_ctx *x, long idx, uint32_t events) {
    iconn *ic = &x->ics[idx];
    char err[256];
    if (ic->state == IC_DONE) return;
    if (ic->state == IC_CONNECTING) {
        int e = 0;
        socklen_t el = sizeof e;
        getsockopt(ic->c.fd, SOL_SOCKET, SO_ERROR, &e, &el);
        if (e) {
            ic_fail(ic, strerror(e));
            return;
        }
        if (!(events & EPOLLOUT)) return;
        char req[1024], path[128];
        snprintf(path, sizeof path, "/ws/reconstruct/%s", x->ids + idx * SID_LEN);
        size_t n = ws_handshake_request(&ic->c, req, sizeof req, x->o->host, x->o->port, path, ic->key);
        ic->state = IC_HANDSHAKE;
        if (ic_send(x, idx, (uint8_t *)req, n) < 0) {
            ic_fail(ic, "handshake send failed");
            return;
        }
        ic_watch(x, idx, EPOLL_CTL_MOD);
        return;
    }
    if ((events & EPOLLOUT) && ic->pend_len) {
        ssize_t w = send(ic->c.fd, ic->pend, ic->pend_len, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) {
            ic_fail(ic, "send failed");
            return;
        }
        if (w > 0) {
            ic->c.bytes_out += (uint64_t)w;
            memmove(ic->pend, ic->pend + w, ic->pend_len - (size_t)w);
            ic->pend_len -= (size_t)w;
            if (!ic->pend_len) ic_watch(x, idx, EPOLL_CTL_MOD);
        }
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    int eof = 0;
    for (;;) {
        long r = wsc_read(&ic->c, 65536);
        if (r > 0) continue;
        if (r == 0) eof = 1;
        else if (errno != EAGAIN) {
            ic_fail(ic, strerror(errno));
            return;
        }
        break;
    }
    if (ic->state == IC_HANDSHAKE) {
        int h = ws_handshake_check(&ic->c, ic->key, err, sizeof err);
        if (h < 0) {
            ic_fail(ic, err);
            return;
        }
        if (h > 0) ic->state = IC_WAIT_CONNECTED;
    }
    while (ic->state != IC_DONE && ic->state != IC_HANDSHAKE) {
        int ev = wsc_feed(&ic->c, err, sizeof err);
        if (ev == WSE_NONE) break;
        if (ev == WSE_ERROR) {
            ic_fail(ic, err);
            return;
        }
        ic_message(x, idx, ev);
    }
    if (eof && ic->state != IC_DONE) ic_fail(ic, "server closed the connection without a close frame");
}

/* Runs the idle scenario on n sessions with da3-load's own epoll client. */
static void idle_raw(const load_opts *o, const char *ids, long n) {
    idle_ctx x = {.o = o, .n = n, .ids = ids, .ics = calloc((size_t)n, sizeof(iconn)), .ep = epoll_create1(EPOLL_CLOEXEC)};
    for (long i = 0; i < n; i++) x.ics[i].c.fd = -1;
    enum { CONNECT, HOLD, DRAIN, CLOSE, END } phase = CONNECT;
    long started = 0;
    double t_hold = 0, t_phase = now_mono();
    struct epoll_event evs[256];
    while (phase != END) {
        double t = now_mono(), wake = t + 0.05;
        long busy = 0, open = 0, pings_out = 0;
        for (long i = 0; i < n; i++) {
            iconn *ic = &x.ics[i];
            if (ic->state == IC_DONE) continue;
            if (ic->state == IC_NEW) continue;
            if (ic->state < IC_OPEN || ic->state == IC_CLOSING) {
                busy++;
                if (t - ic->t0 > o->timeout) ic_fail(ic, "timed out");
                continue;
            }
            open++;
            if (ic->ping_out) {
                pings_out++;
                if (t - ic->t0 > o->timeout) ic_fail(ic, "no pong in time");
            } else if (phase == HOLD) {
                if (t >= ic->next_ping) {
                    ic->t0 = t;
                    ic->b0 = ic->c.bytes_in + ic->c.bytes_out;
                    ic->ping_out = 1;
                    pings_out++;
                    const char *ping = "{\"type\":\"ping\"}";
                    if (ic_frame(&x, i, WS_TEXT, ping, strlen(ping)) < 0) ic_fail(ic, "ping send failed");
                } else if (ic->next_ping < wake) {
                    wake = ic->next_ping;
                }
            }
        }
        if (phase == CONNECT) {
            /* A bounded number of handshakes at once: a SYN flood into the listen backlog
             * would measure the kernel's retransmit timer, not the server. */
            while (started < n && busy < o->connect_inflight) {
                ic_start(&x, started++);
                busy++;
            }
            if (started == n && busy == 0) {
                phase = HOLD;
                t_hold = t_phase = now_mono();
                printf("idle: %ld of %ld sockets open in %.2f s; holding for %.1f s\n", open, n, t_hold - g_t_start,
                       o->duration);
                fflush(stdout);
                for (long i = 0; i < n; i++) /* pings spread evenly over one interval */
                    x.ics[i].next_ping = t_hold + o->interval * (double)i / (double)n;
                continue;
            }
        } else if (phase == HOLD && t - t_hold >= o->duration) {
            phase = DRAIN;
            t_phase = t;
        } else if (phase == DRAIN && (pings_out == 0 || t - t_phase > o->timeout)) {
            load_snapshot_held(o);
            for (long i = 0; i < n; i++) {
                iconn *ic = &x.ics[i];
                if (ic->state != IC_OPEN) continue;
                ic->state = IC_CLOSING;
                ic->t0 = now_mono();
                ic->b0 = ic->c.bytes_in + ic->c.bytes_out;
                uint8_t code[2] = {1000 >> 8, 1000 & 0xFF};
                if (ic_frame(&x, i, WS_CLOSE, code, 2) < 0) ic_fail(ic, "close send failed");
            }
            phase = CLOSE;
            continue;
        } else if (phase == CLOSE && busy == 0) {
            phase = END;
            continue;
        }
        int ms = (int)ceil((wake - now_mono()) * 1e3);
        if (ms < 0) ms = 0;
        int got = epoll_wait(x.ep, evs, 256, ms);
        for (int e = 0; e < got; e++) ic_event(&x, (long)evs[e].data.u64, evs[e].events);
    }
    for (long i = 0; i < n; i++) {
        if (x.ics[i].c.fd >= 0) close(x.ics[i].c.fd);
        x.ics[i].c.fd = -1;
        wsc_free(&x.ics[i].c);
        free(x.ics[i].pend);
    }
    close(x.ep);
    free(x.ics);
}

void load_snapshot_held(const load_opts *o) {
    if (o->pid > 0 && proc_read(o->pid, &g_held) == 0) g_held_ok = 1;
    proc_read(getpid(), &g_self_held);
}

static int scenario_idle(const load_opts *o) {
    long n = o->count;
    printf("idle: %ld sockets to %ld sessions, a ping every %.2f s each, held %.1f s (%s client)\n", n, n, o->interval,
           o->duration, o->client);
    char *ids = calloc((size_t)n, SID_LEN);
    long made = load_create_many(o, n, ids);
    if (made < n) fprintf(stderr, "da3-load: only %ld of %ld sessions created\n", made, n);
    if (strcmp(o->client, "civetweb") == 0) idle_civetweb(o, ids, n);
    else idle_raw(o, ids, n);
    if (!o->keep) load_delete_many(o, n, ids);
    free(ids);
    return made == n ? 0 : -1;
}

/* ---- main ---- */

/* Prints a /proc snapshot row. */
static void print_snap(const char *label, const proc_snap *s) {
    printf("  %-8s %10ld %10ld %8ld %6ld %9.2f\n", label, s->rss_kb, s->hwm_kb, s->threads, s->fds, s->cpu_s);
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
        return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    load_opts o = {.scenario = argv[1], .host = "127.0.0.1", .port = 8000, .count = -1, .images = -1, .width = 640,
                   .height = 480, .binary = 1, .process_res = 140, .interval = 1, .duration = -1, .timeout = -1,
                   .settle = 5, .connect_inflight = 64, .client = "raw"};
    enum { O_HOST = 256, O_PORT, O_PID, O_IMAGE, O_SIZE, O_BINARY, O_BASE64, O_GENERATE, O_RES, O_INTERVAL, O_DURATION,
           O_TIMEOUT, O_STAGGER, O_PIPELINE, O_INFLIGHT, O_CLIENT, O_SETTLE, O_CHECKFDS, O_KEEP, O_PROTOCOL };
    static const struct option lo[] = {
        {"host", 1, 0, O_HOST}, {"port", 1, 0, O_PORT}, {"pid", 1, 0, O_PID}, {"count", 1, 0, 'n'},
        {"concurrency", 1, 0, 'c'}, {"images", 1, 0, 'k'}, {"image", 1, 0, O_IMAGE}, {"size", 1, 0, O_SIZE},
        {"binary", 0, 0, O_BINARY}, {"base64", 0, 0, O_BASE64}, {"generate", 0, 0, O_GENERATE},
        {"process-res", 1, 0, O_RES}, {"interval", 1, 0, O_INTERVAL}, {"duration", 1, 0, O_DURATION},
        {"timeout", 1, 0, O_TIMEOUT}, {"stagger-ms", 1, 0, O_STAGGER}, {"pipeline", 0, 0, O_PIPELINE},
        {"connect-inflight", 1, 0, O_INFLIGHT}, {"client", 1, 0, O_CLIENT}, {"settle", 1, 0, O_SETTLE},
        {"check-fds", 0, 0, O_CHECKFDS}, {"keep", 0, 0, O_KEEP}, {"protocol", 1, 0, O_PROTOCOL}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 2;
    for (int c; (c = getopt_long(argc, argv, "n:c:k:h", lo, NULL)) != -1;) {
        switch (c) {
        case O_HOST: o.host = optarg; break;
        case O_PORT: o.port = atoi(optarg); break;
        case O_PID: o.pid = (pid_t)atol(optarg); break;
        case 'n': o.count = atol(optarg); break;
        case 'c': o.concurrency = atoi(optarg); break;
        case 'k': o.images = atoi(optarg); break;
        case O_IMAGE: o.image_path = optarg; break;
        case O_SIZE:
            if (parse_size(optarg, &o.width, &o.height) < 0) {
                fprintf(stderr, "da3-load: --size wants WxH (at most 8192x8192)\n");
                return 2;
            }
            break;
        case O_BINARY: o.binary = 1; break;
        case O_BASE64: o.binary = 0; break;
        case O_GENERATE: o.generate = 1; break;
        case O_RES: o.process_res = atoi(optarg); break;
        case O_INTERVAL: o.interval = atof(optarg); break;
        case O_DURATION: o.duration = atof(optarg); break;
        case O_TIMEOUT: o.timeout = atof(optarg); break;
        case O_STAGGER: o.stagger_ms = atof(optarg); break;
        case O_PIPELINE: o.pipeline = 1; break;
        case O_INFLIGHT: o.connect_inflight = atoi(optarg); break;
        case O_CLIENT: o.client = optarg; break;
        case O_SETTLE: o.settle = atof(optarg); break;
        case O_CHECKFDS: o.check_fds = 1; break;
        case O_KEEP: o.keep = 1; break;
        case O_PROTOCOL:
            if (strcmp(optarg, "v1") != 0 && strcmp(optarg, "v2") != 0) {
                fprintf(stderr, "da3-load: --protocol is v1 or v2\n");
                return 2;
            }
            o.v2 = optarg[1] == '2';
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int sc = strcmp(o.scenario, "idle") == 0 ? 0 : strcmp(o.scenario, "upload") == 0 ? 1
           : strcmp(o.scenario, "lifecycle") == 0 ? 2 : strcmp(o.scenario, "generate") == 0 ? 3 : -1;
    if (sc < 0 || optind < argc || (strcmp(o.client, "raw") != 0 && strcmp(o.client, "civetweb") != 0)) {
        usage(stderr);
        return 2;
    }
    static const long def_count[] = {100, 10, 100, 4};
    static const int def_images[] = {0, 10, 1, 2};
    if (o.count < 0) o.count = o.duration > 0 && sc == 2 ? 0 : def_count[sc];
    if (o.images < 0) o.images = def_images[sc];
    if (o.duration < 0) o.duration = sc == 0 ? 10 : 0;
    if (o.timeout <= 0) o.timeout = sc == 3 || o.generate ? 600 : 60;
    if (o.interval <= 0) o.interval = 1;
    if (o.connect_inflight < 1) o.connect_inflight = 1;
    if ((o.count <= 0 && sc != 2) || (sc == 2 && o.count <= 0 && o.duration <= 0) || (sc != 0 && o.images < 1)) {
        fprintf(stderr, "da3-load: nothing to do (count %ld, images %d, duration %g)\n", o.count, o.images, o.duration);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* One fd per socket plus the HTTP ones: the default soft limit of 1,024 is too low for 1,000 sockets. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (sc != 0 && load_image(&o) < 0) return 2;

    proc_snap before = {0}, after = {0};
    int have_proc = o.pid > 0 && proc_read(o.pid, &before) == 0;
    if (o.pid > 0 && !have_proc) fprintf(stderr, "da3-load: cannot read /proc/%d (not a local process?)\n", (int)o.pid);
    printf("da3-load %s against %s:%d\n", o.scenario, o.host, o.port);
    fflush(stdout);
    g_t_start = now_mono();
    int rc = sc == 0 ? scenario_idle(&o) : sc == 1 ? scenario_upload(&o) : sc == 2 ? scenario_lifecycle(&o) : scenario_generate(&o);
    double elapsed = now_mono() - g_t_start;
    stats_print(stdout);
    printf("elapsed %.2f s\n", elapsed);

    int fds_back = 1;
    if (have_proc) {
        /* The front closes a socket when it sees our close or EOF: give it a moment, then read. */
        double until = now_mono() + o.settle;
        while (proc_read(o.pid, &after) == 0 && after.fds > before.fds && now_mono() < until) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        fds_back = after.fds <= before.fds;
        printf("server pid %d    rss_kb     hwm_kb  threads    fds     cpu_s\n", (int)o.pid);
        print_snap("before", &before);
        if (g_held_ok) print_snap("held", &g_held);
        print_snap("after", &after);
        printf("server: fds_before=%ld fds_after=%ld rss_kb_before=%ld rss_kb_after=%ld rss_change_pct=%.1f "
               "threads_before=%ld threads_after=%ld\n",
               before.fds, after.fds, before.rss_kb, after.rss_kb,
               before.rss_kb ? 100.0 * (double)(after.rss_kb - before.rss_kb) / (double)before.rss_kb : 0.0,
               before.threads, after.threads);
        printf("server: cpu_s=%.2f over the run (the front process only; workers are other processes)\n",
               after.cpu_s - before.cpu_s);
    }
    proc_snap self;
    if (proc_read(getpid(), &self) == 0)
        printf("da3-load itself: threads %ld%s, peak rss %ld KB, cpu_s %.2f\n",
               g_self_held.threads ? g_self_held.threads : self.threads, g_self_held.threads ? " (while held)" : "",
               self.hwm_kb, self.cpu_s);
    uint64_t errors = stats_errors();
    printf("result: %llu errors%s\n", (unsigned long long)errors,
           !fds_back ? (o.check_fds ? ", server fds did not return (--check-fds)" : ", server fds did not return") : "");
    return errors || rc < 0 || (o.check_fds && !fds_back) ? 1 : 0;
}
