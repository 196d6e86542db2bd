/* da3-infer: run the DA3 network from the command line.
 *   tensors:  da3-infer --model DIR --tensor-in io.safetensors --tensor-out out.safetensors
 *   images:   da3-infer --model DIR --images a.jpg b.png ... --glb out.glb [--json meta.json]
 *   speed:    da3-infer --model demo --bench-views 1,4,16 --bench-hw 378x504 [--repeats R]
 *   kernels:  da3-infer --blas-info
 * Run with --help for every option. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "worker/blas_kernels.h"
#include "worker/glb.h"
#include "worker/model.h"
#include "worker/pipeline.h"
#include "worker/safetensors.h"

#define MAX_BENCH_COUNTS 32

typedef struct {
    const char *model, *device;
    int threads;
    int bf16; /* --precision bf16 */
    ref_view_strategy ref_view;
    /* tensor mode */
    const char *tensor_in, *tensor_out;
    /* image mode; negative / NULL = keep the pipeline default */
    const char **images;
    int n_images;
    const char *glb, *json, *process_res_method, *cameras;
    int process_res, no_cameras;
    double conf_thresh_percentile;
    long num_max_points;
    /* bench mode */
    const char *bench_views, *bench_hw;
    int repeats;
    int blas_info; /* --blas-info */
} options;

static void usage(FILE *out) {
    fprintf(out,
            "usage: da3-infer --model DIR|demo [options] MODE\n"
            "Runs the Depth Anything 3 any-view network on the CPU or a GPU.\n\n"
            "common options:\n"
            "  --model DIR|demo        model folder (config.json + model.safetensors) or the untrained\n"
            "                          DA3-Small-shaped demo network (default: demo); demo-base,\n"
            "                          demo-large, demo-giant: those topologies, random weights too\n"
            "  --device cpu|cuda[:i]   where to run (default: cpu)\n"
            "  --threads N             CPU threads (default: all online CPUs)\n"
            "  --precision fp32|bf16   CPU backbone precision (default fp32; bf16 = DA3's GPU numerics)\n"
            "  --ref-view S            reference view for >= 3 views without cameras:\n"
            "                          saddle_balanced (default), first, middle\n"
            "  --help                  this text\n\n"
            "mode 1, tensors in/out:\n"
            "  --tensor-in FILE        safetensors with `input` (1,N,3,H,W) normalised images and\n"
            "                          optionally `in_extrinsics` (1,N,4,4) + `in_intrinsics` (1,N,3,3)\n"
            "  --tensor-out FILE       writes depth, depth_conf (1,N,H,W), extrinsics (1,N,3,4),\n"
            "                          intrinsics (1,N,3,3), float32\n\n"
            "mode 2, photos to a point cloud:\n"
            "  --images A B ...        image files, the views of one scene\n"
            "  --glb FILE              output GLB (points + camera frustums)\n"
            "  --json FILE             also write the result metadata (cameras, counts) as JSON\n"
            "  --process-res N         processing resolution (default 504)\n"
            "  --process-res-method M  upper_bound_resize (default), upper_bound_crop,\n"
            "                          lower_bound_resize, lower_bound_crop\n"
            "  --conf-thresh-percentile P  drop roughly the lowest P%% by confidence (default 10)\n"
            "  --num-max-points N      keep at most N points (default 10000000)\n"
            "  --no-cameras            leave the camera frustums out\n"
            "  --cameras FILE          known cameras, JSON {\"extrinsics\": [N x 4x4 or 3x4 world-to-\n"
            "                          camera], \"intrinsics\": [N x 3x3 in the images' pixels]}: the\n"
            "                          pose-conditioned network, results in these cameras' frame\n\n"
            "mode 3, speed:\n"
            "  --bench-views LIST      view counts to time, e.g. 1,4,16\n"
            "  --bench-hw HxW          input size, e.g. 378x504 (multiples of 14)\n"
            "  --repeats R             timed runs per view count after one warm-up (default 3)\n\n"
            "mode 4, BLAS kernels (no model is loaded):\n"
            "  --blas-info             prints the CPU, the OpenBLAS kernels in use and who chose them,\n"
            "                          and the kernel sets this CPU can run (for OPENBLAS_CORETYPE)\n\n"
            "On OpenBLAS's generic fallback kernels (a CPU newer than the library) da3-infer restarts\n"
            "itself once with OPENBLAS_CORETYPE set to the best set the CPU runs, unless you set it.\n");
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Parses option `opt`'s integer value in [lo, hi]; prints why not and returns -1. */
static int int_option(const char *opt, const char *s, long lo, long hi, long *out) {
    if (parse_int(s, lo, hi, out) == 0) return 0;
    fprintf(stderr, "da3-infer: %s must be an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
    return -1;
}

static int parse_ref_view(const char *s, ref_view_strategy *out) {
    if (!strcmp(s, "saddle_balanced")) *out = REF_VIEW_SADDLE_BALANCED;
    else if (!strcmp(s, "first")) *out = REF_VIEW_FIRST;
    else if (!strcmp(s, "middle")) *out = REF_VIEW_MIDDLE;
    else return -1;
    return 0;
}

/* Returns 0, 1 for --help, or -1 after printing what is wrong. */
static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->model = "demo";
    o->device = "cpu";
    o->threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    o->ref_view = REF_VIEW_SADDLE_BALANCED;
    o->process_res = -1;
    o->conf_thresh_percentile = -1;
    o->num_max_points = -1;
    o->repeats = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        long v;
#define NEED_VALUE()                                                 \
    do {                                                             \
        if (!val) {                                                  \
            fprintf(stderr, "da3-infer: %s needs a value\n", a);     \
            return -1;                                               \
        }                                                            \
        i++;                                                         \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        else if (!strcmp(a, "--model")) { NEED_VALUE(); o->model = val; }
        else if (!strcmp(a, "--device")) { NEED_VALUE(); o->device = val; }
        else if (!strcmp(a, "--threads")) {
            NEED_VALUE();
            if (int_option("--threads", val, 1, 4096, &v)) return -1;
            o->threads = (int)v;
        } else if (!strcmp(a, "--precision")) {
            NEED_VALUE();
            if (strcmp(val, "fp32") && strcmp(val, "bf16")) {
                fprintf(stderr, "da3-infer: --precision must be fp32 or bf16\n");
                return -1;
            }
            o->bf16 = !strcmp(val, "bf16");
        } else if (!strcmp(a, "--ref-view")) {
            NEED_VALUE();
            if (parse_ref_view(val, &o->ref_view)) {
                fprintf(stderr, "da3-infer: --ref-view must be saddle_balanced, first or middle\n");
                return -1;
            }
        } else if (!strcmp(a, "--tensor-in")) { NEED_VALUE(); o->tensor_in = val; }
        else if (!strcmp(a, "--tensor-out")) { NEED_VALUE(); o->tensor_out = val; }
        else if (!strcmp(a, "--images")) {
            o->images = (const char **)&argv[i + 1];
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) { i++; o->n_images++; }
            if (o->n_images == 0) { fprintf(stderr, "da3-infer: --images needs at least one file\n"); return -1; }
        } else if (!strcmp(a, "--glb")) { NEED_VALUE(); o->glb = val; }
        else if (!strcmp(a, "--json")) { NEED_VALUE(); o->json = val; }
        else if (!strcmp(a, "--process-res")) {
            NEED_VALUE();
            if (int_option("--process-res", val, 14, 8192, &v)) return -1;
            o->process_res = (int)v;
        } else if (!strcmp(a, "--process-res-method")) { NEED_VALUE(); o->process_res_method = val; }
        else if (!strcmp(a, "--conf-thresh-percentile")) {
            NEED_VALUE();
            char *end;
            o->conf_thresh_percentile = strtod(val, &end);
            if (end == val || *end || !(o->conf_thresh_percentile >= 0 && o->conf_thresh_percentile <= 100)) {
                fprintf(stderr, "da3-infer: --conf-thresh-percentile must be in [0, 100]\n");
                return -1;
            }
        } else if (!strcmp(a, "--num-max-points")) {
            NEED_VALUE();
            if (int_option("--num-max-points", val, 1, 2000000000L, &v)) return -1;
            o->num_max_points = v;
        } else if (!strcmp(a, "--no-cameras")) o->no_cameras = 1;
        else if (!strcmp(a, "--cameras")) { NEED_VALUE(); o->cameras = val; }
        else if (!strcmp(a, "--bench-views")) { NEED_VALUE(); o->bench_views = val; }
        else if (!strcmp(a, "--bench-hw")) { NEED_VALUE(); o->bench_hw = val; }
        else if (!strcmp(a, "--blas-info")) o->blas_info = 1;
        else if (!strcmp(a, "--repeats")) {
            NEED_VALUE();
            if (int_option("--repeats", val, 1, 1000, &v)) return -1;
            o->repeats = (int)v;
        } else {
            fprintf(stderr, "da3-infer: unknown option '%s' (see --help)\n", a);
            return -1;
        }
#undef NEED_VALUE
    }
    int modes = !!(o->tensor_in || o->tensor_out) + !!(o->images || o->glb) + !!(o->bench_views || o->bench_hw) +
                o->blas_info;
    if (modes != 1) {
        fprintf(stderr, "da3-infer: choose exactly one mode: --tensor-in/--tensor-out, --images/--glb, "
                        "--bench-views/--bench-hw or --blas-info (see --help)\n");
        return -1;
    }
    if ((o->tensor_in || o->tensor_out) && !(o->tensor_in && o->tensor_out)) {
        fprintf(stderr, "da3-infer: --tensor-in and --tensor-out go together\n");
        return -1;
    }
    if ((o->images || o->glb) && !(o->images && o->glb)) {
        fprintf(stderr, "da3-infer: --images needs --glb\n");
        return -1;
    }
    if (o->cameras && !o->images) {
        fprintf(stderr, "da3-infer: --cameras goes with --images\n");
        return -1;
    }
    if ((o->bench_views || o->bench_hw) && !(o->bench_views && o->bench_hw)) {
        fprintf(stderr, "da3-infer: --bench-views and --bench-hw go together\n");
        return -1;
    }
    return 0;
}

/* ---- mode 1: tensors ---- */

static int run_tensors(da3_model *m, const options *o) {
    char err[1024];
    int rc = 1;
    st_file *in = st_open(o->tensor_in, err, sizeof err);
    if (!in) { fprintf(stderr, "da3-infer: %s\n", err); return 1; }
    float *input = NULL, *ext = NULL, *ixt = NULL;
    da3_prediction p = {0};
    st_writer *w = NULL;
    const st_tensor *t = st_find_f32(in, "input", 5, NULL, err, sizeof err);
    if (!t || t->shape[0] != 1 || t->shape[2] != 3 || t->shape[1] > INT32_MAX || t->shape[3] > INT32_MAX ||
        t->shape[4] > INT32_MAX) {
        fprintf(stderr, "da3-infer: %s: %s\n", o->tensor_in, t ? "`input` must be (1, N, 3, H, W)" : err);
        goto out;
    }
    const int n = (int)t->shape[1], h = (int)t->shape[3], wd = (int)t->shape[4];
    input = st_dup_f32(t);
    const int64_t ext_shape[4] = {1, n, 4, 4}, ixt_shape[4] = {1, n, 3, 3};
    const st_tensor *te = st_find(in, "in_extrinsics"), *ti = st_find(in, "in_intrinsics");
    da3_known_cameras cams = {0};
    if (te || ti) {
        te = st_find_f32(in, "in_extrinsics", 4, ext_shape, err, sizeof err);
        if (te) ti = st_find_f32(in, "in_intrinsics", 4, ixt_shape, err, sizeof err);
        if (!te || !ti) { fprintf(stderr, "da3-infer: %s: %s\n", o->tensor_in, err); goto out; }
        cams.extrinsics = ext = st_dup_f32(te);
        cams.intrinsics = ixt = st_dup_f32(ti);
    }
    if (!input || (te && (!ext || !ixt))) { fprintf(stderr, "da3-infer: out of memory\n"); goto out; }

    double t0 = now_ms();
    if (da3_model_forward(m, input, n, h, wd, te ? &cams : NULL, o->ref_view, &p, err, sizeof err) != 0) {
        fprintf(stderr, "da3-infer: %s\n", err);
        goto out;
    }
    printf("forward: %d view(s) %dx%d%s in %.1f ms (peak RSS %.0f MB)\n", n, h, wd,
           te ? " with known cameras" : "", now_ms() - t0, peak_rss_mb());

    const int64_t px_shape[4] = {1, n, h, wd}, e_shape[4] = {1, n, 3, 4}, k_shape[4] = {1, n, 3, 3};
    w = st_writer_new();
    if (!w || st_writer_add_f32(w, "depth", p.depth, 4, px_shape) || st_writer_add_f32(w, "depth_conf", p.conf, 4, px_shape) ||
        st_writer_add_f32(w, "extrinsics", p.extrinsics, 4, e_shape) ||
        st_writer_add_f32(w, "intrinsics", p.intrinsics, 4, k_shape)) {
        fprintf(stderr, "da3-infer: out of memory\n");
        goto out;
    }
    if (st_writer_save(w, o->tensor_out, err, sizeof err) != 0) {
        fprintf(stderr, "da3-infer: %s\n", err);
        goto out;
    }
    printf("wrote %s\n", o->tensor_out);
    rc = 0;
out:
    st_writer_free(w);
    da3_prediction_free(&p);
    free(input);
    free(ext);
    free(ixt);
    st_close(in);
    return rc;
}

/* ---- mode 2: images -> GLB ---- */

static void print_progress(void *ctx, const char *stage, double progress, const char *message) {
    (void)ctx;
    fprintf(stderr, "[%3.0f%%] %s%s%s\n", progress * 100.0, stage, message && *message ? ": " : "",
            message ? message : "");
}

static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t done = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && done == len) ? 0 : -1;
}

/* Reads --cameras: one camera per image, in the metadata's own layout. Returns a malloc'd array or
 * NULL with err set. */
static known_camera *read_cameras(const char *path, int n, char *err, size_t errlen) {
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        snprintf(err, errlen, "%s: %s (line %d)", path, jerr.text, jerr.line);
        return NULL;
    }
    json_t *ext = json_object_get(root, "extrinsics"), *intr = json_object_get(root, "intrinsics");
    known_camera *cams = NULL;
    if (!json_is_array(ext) || !json_is_array(intr) || (int)json_array_size(ext) != n ||
        (int)json_array_size(intr) != n) {
        snprintf(err, errlen, "%s: needs \"extrinsics\" and \"intrinsics\" arrays with one entry per image (%d)",
                 path, n);
    } else if ((cams = calloc((size_t)n, sizeof *cams)) == NULL) {
        snprintf(err, errlen, "out of memory");
    } else {
        for (int i = 0; i < n; i++) {
            char why[256];
            if (camera_from_json(json_array_get(ext, (size_t)i), json_array_get(intr, (size_t)i), &cams[i], why,
                                 sizeof why)) {
                snprintf(err, errlen, "%s: camera %d: %s", path, i, why);
                free(cams);
                cams = NULL;
                break;
            }
        }
    }
    json_decref(root);
    return cams;
}

static int run_images(da3_model *m, const options *o) {
    char err[1024];
    known_camera *cams = NULL;
    if (o->cameras && !(cams = read_cameras(o->cameras, o->n_images, err, sizeof err))) {
        fprintf(stderr, "da3-infer: %s\n", err);
        return 1;
    }
    pipeline_params pp;
    pipeline_params_default(&pp);
    pp.ref_view = o->ref_view;
    if (o->process_res > 0) pp.process_res = o->process_res;
    if (o->process_res_method && resize_method_parse(o->process_res_method, &pp.method) != 0) {
        fprintf(stderr, "da3-infer: unknown --process-res-method '%s'\n", o->process_res_method);
        return 1;
    }
    if (o->conf_thresh_percentile >= 0) pp.fusion.conf_thresh_percentile = o->conf_thresh_percentile;
    if (o->num_max_points > 0) pp.fusion.num_max_points = o->num_max_points;
    if (o->no_cameras) pp.fusion.show_cameras = 0;

    pipeline_result r;
    memset(&r, 0, sizeof r);
    int failed = pipeline_run_files(m, o->images, NULL, o->n_images, cams, &pp, print_progress, NULL, &r, err,
                                    sizeof err);
    free(cams);
    if (failed) {
        fprintf(stderr, "da3-infer: %s\n", err);
        pipeline_result_free(&r);
        return 1;
    }
    int rc = 1;
    size_t size = glb_size(&r.cloud);
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf || glb_write(&r.cloud, buf, size) != size) {
        fprintf(stderr, "da3-infer: could not build the GLB (%zu bytes)\n", size);
    } else if (write_file(o->glb, buf, size) != 0) {
        fprintf(stderr, "da3-infer: cannot write %s: %s\n", o->glb, strerror(errno));
    } else {
        rc = 0;
        printf("wrote %s: %zu points, %d camera(s), %zu bytes; decode %.0f ms, model %.0f ms, fusion %.0f ms\n",
               o->glb, r.cloud.n_points, r.cloud.n_cameras, size, r.decode_ms, r.model_ms, r.fusion_ms);
    }
    if (rc == 0 && o->json) {
        char *json = pipeline_metadata_json(&r, da3_model_name(m), da3_model_is_trained(m), size);
        if (!json || write_file(o->json, json, strlen(json)) != 0) {
            fprintf(stderr, "da3-infer: cannot write %s\n", o->json);
            rc = 1;
        } else {
            printf("wrote %s\n", o->json);
        }
        free(json);
    }
    free(buf);
    pipeline_result_free(&r);
    return rc;
}

/* ---- mode 3: bench ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Deterministic input roughly like normalised photos (values in about [-2, 2]). */
static void fill_random(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(s >> 40) / (double)(1ULL << 24) * 4.0 - 2.0);
    }
}

static int run_bench(da3_model *m, const options *o) {
    int counts[MAX_BENCH_COUNTS], n_counts = 0, h = 0, w = 0;
    char tail;
    if (sscanf(o->bench_hw, "%dx%d%c", &h, &w, &tail) != 2 || h < 14 || w < 14 || h % 14 || w % 14) {
        fprintf(stderr, "da3-infer: --bench-hw must be HxW with multiples of 14, e.g. 378x504\n");
        return 1;
    }
    const char *p = o->bench_views;
    while (*p && n_counts < MAX_BENCH_COUNTS) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 4096 || (*end && *end != ',')) {
            fprintf(stderr, "da3-infer: --bench-views must be a comma-separated list like 1,4,16\n");
            return 1;
        }
        counts[n_counts++] = (int)v;
        p = *end ? end + 1 : end;
    }
    char cpu[128], blas[160];
    const char *core = blas_core_name();
    printf("bench: model %s, %d thread(s), %dx%d, %d timed run(s) after a warm-up; CPU %s; BLAS %s\n",
           da3_model_name(m), o->threads, h, w, o->repeats, blas_cpu_model(cpu, sizeof cpu),
           blas_kernels_in_use(blas, sizeof blas));
    for (int c = 0; c < n_counts; c++) {
        const int n = counts[c];
        const size_t elems = (size_t)n * 3 * h * w;
        float *x = malloc(elems * sizeof *x);
        double *ms = malloc(sizeof(double) * (size_t)o->repeats);
        if (!x || !ms) { fprintf(stderr, "da3-infer: out of memory\n"); free(x); free(ms); return 1; }
        fill_random(x, elems, (uint64_t)n);
        char err[1024];
        for (int r = -1; r < o->repeats; r++) {
            da3_prediction pred = {0};
            double t0 = now_ms();
            int rc = da3_model_forward(m, x, n, h, w, NULL, o->ref_view, &pred, err, sizeof err);
            double dt = now_ms() - t0;
            da3_prediction_free(&pred);
            if (rc != 0) {
                fprintf(stderr, "da3-infer: %d view(s): %s\n", n, err);
                free(x);
                free(ms);
                return 1;
            }
            if (r >= 0) ms[r] = dt;
        }
        qsort(ms, (size_t)o->repeats, sizeof *ms, cmp_double);
        const double median = o->repeats % 2 ? ms[o->repeats / 2]
                                             : 0.5 * (ms[o->repeats / 2 - 1] + ms[o->repeats / 2]);
        /* Backbone matmul work over the whole forward time: a floor on the backbone's throughput
         * (the head and element-wise work are in the time, not in the count). */
        const double gflop = da3_model_backbone_flops(m, n, h, w) / 1e9;
        printf("bench views=%d hw=%dx%d median_ms=%.1f min_ms=%.1f per_view_ms=%.1f peak_rss_mb=%.0f "
               "backbone_gflop=%.1f gflops_per_s=%.1f blas=%s\n",
               n, h, w, median, ms[0], median / n, peak_rss_mb(), gflop, gflop / (median / 1e3),
               core ? core : "unknown");
        fflush(stdout);
        free(x);
        free(ms);
    }
    return 0;
}

/* Mode 4: what blas_kernels_ensure left us on, and what else this CPU can run. */
static int run_blas_info(void) {
    char cpu[128], blas[160], sets[128];
    blas_cpu c = blas_cpu_detect();
    const char *best = blas_best_coretype(&c);
    printf("cpu: %s\n", blas_cpu_model(cpu, sizeof cpu));
    printf("blas: %s\n", blas_kernels_in_use(blas, sizeof blas));
    printf("blas_best: %s\n", best ? best : "(generic: no AVX)");
    printf("blas_supported: %s\n", blas_supported_coretypes(sets, sizeof sets, &c));
    return 0;
}

int main(int argc, char **argv) {
    /* First: OpenBLAS's generic fallback kernels are corrected by restarting with
     * OPENBLAS_CORETYPE set (worker/blas_kernels.h); returns when nothing needs doing. */
    blas_kernels_ensure(argv);
    options o;
    int prc = parse_args(argc, argv, &o);
    if (prc == 1) { usage(stdout); return 0; }
    if (prc != 0) return 2;
    if (o.blas_info) return run_blas_info();
    da3_set_num_threads(o.threads);
    da3_set_cpu_bf16(o.bf16);

    char err[2048];
    double t0 = now_ms();
    da3_model *m = da3_model_open(o.model, o.device, err, sizeof err);
    if (!m) { fprintf(stderr, "da3-infer: %s\n", err); return 1; }
    fprintf(stderr, "model: %s on %s, loaded in %.0f ms%s\n", da3_model_name(m), o.device, now_ms() - t0,
            da3_model_is_trained(m) ? "" : " (UNTRAINED: outputs are not meaningful)");
    char blas[160];
    fprintf(stderr, "BLAS kernels: %s\n", blas_kernels_in_use(blas, sizeof blas));

    int rc = o.tensor_in ? run_tensors(m, &o) : o.images ? run_images(m, &o) : run_bench(m, &o);
    da3_model_close(m);
    return rc;
}
