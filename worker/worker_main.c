/* da3-worker: one inference process, started by the front (prefork). Loads the model once on its
 * device, then loops: claim the oldest queued job from the shared job table, run the pipeline,
 * write the GLB and its metadata straight into the shared arena, mark the job done. It never
 * outlives its front (see front_alive). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/log.h"
#include "common/session_files.h"
#include "common/util.h"
#include "shm/shm_queue.h"
#include "worker/blas_kernels.h"
#include "worker/glb.h"
#include "worker/pipeline.h"

static volatile sig_atomic_t stop_requested = 0;
static void on_term(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* The front that started us (--front-pid); 0 when run by hand. */
static pid_t front_pid;

/* A worker without its front would hold its device and compete with the next front's workers,
 * so it exits at once, wherever it notices: PR_SET_PDEATHSIG is the main mechanism, this check
 * covers the front dying before prctl took effect (and anything that clears the death signal). */
static void exit_if_orphaned(const char *where) {
    if (front_pid > 0 && getppid() != front_pid) {
        log_warn("the front (pid %d) is gone (%s): exiting", (int)front_pid, where);
        _exit(4);
    }
}

typedef struct {
    shmq *q;
    int slot;
    uint64_t job_id;
} job_ctx;

static void forward_progress(void *ctx, const char *stage, double progress, const char *message) {
    job_ctx *jc = ctx;
    exit_if_orphaned("between stages");
    shmq_progress(jc->q, jc->slot, jc->job_id, stage, progress, message);
}

static void params_from_job(const shmq_job_params *jp, pipeline_params *p) {
    pipeline_params_default(p);
    p->process_res = jp->process_res;
    p->method = (resize_method)jp->resize_method;
    p->ref_view = (ref_view_strategy)jp->ref_view;
    p->fusion.conf_thresh_percentile = jp->conf_thresh_percentile;
    p->fusion.num_max_points = jp->num_max_points;
    p->fusion.show_cameras = jp->show_cameras;
    p->fusion.seed = jp->seed;
}

/* The cameras stored with the job's images: all of them (*out, n entries), none (*out NULL), or
 * an error for a mix, which the network cannot take. Returns 0 or -1 with err set. */
static int load_cameras(const char *image_dir, int n, known_camera **out, char *err, size_t errlen) {
    *out = NULL;
    known_camera *cams = calloc((size_t)n, sizeof *cams);
    if (!cams) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int with = 0, first_without = -1;
    for (int i = 0; i < n; i++) {
        int rc = camera_file_read(image_dir, i, &cams[i], err, errlen);
        if (rc < 0) {
            free(cams);
            return -1;
        }
        if (rc == 1) with++;
        else if (first_without < 0) first_without = i;
    }
    if (with == 0) {
        free(cams);
        return 0;
    }
    if (with < n) {
        snprintf(err, errlen,
                 "known cameras were sent with %d of the %d images (image %d has none): send "
                 "extrinsics and intrinsics with every image, or with none",
                 with, n, first_without);
        free(cams);
        return -1;
    }
    *out = cams;
    return 0;
}

/* Runs one claimed job to DONE or FAILED. */
static void run_job(shmq *q, da3_model *model, int slot, uint64_t job_id, const shmq_job_params *jp) {
    job_ctx jc = {q, slot, job_id};
    int n = jp->image_count;
    char err[512] = "";
    char (*paths)[600] = calloc((size_t)n, sizeof *paths);
    const char **path_ptrs = calloc((size_t)n, sizeof *path_ptrs);
    pipeline_result res = {0};
    int rc = (paths && path_ptrs) ? 0 : -1;
    if (rc) snprintf(err, sizeof err, "out of memory");
    for (int i = 0; rc == 0 && i < n; i++) {
        if (session_image_find(paths[i], sizeof paths[i], jp->image_dir, i)) {
            snprintf(err, sizeof err, "image %d is missing from the session's storage", i);
            rc = -1;
        }
        path_ptrs[i] = paths[i];
    }
    known_camera *cams = NULL;
    if (rc == 0) rc = load_cameras(jp->image_dir, n, &cams, err, sizeof err);
    pipeline_params pp;
    params_from_job(jp, &pp);
    if (rc == 0)
        rc = pipeline_run_files(model, path_ptrs, NULL, n, cams, &pp, forward_progress, &jc, &res, err,
                                sizeof err);
    free(cams);
    if (rc == 0) {
        double t0 = now_mono();
        size_t glb_len = glb_size(&res.cloud);
        char *meta = pipeline_metadata_json(&res, da3_model_name(model), da3_model_is_trained(model),
                                            glb_len);
        size_t meta_len = meta ? strlen(meta) : 0;
        uint64_t off = 0;
        unsigned char *dst = meta ? shmq_result_alloc(q, slot, job_id, glb_len + meta_len, &off) : NULL;
        if (!dst) {
            snprintf(err, sizeof err,
                     "the result (%.1f MB GLB, %zu points) does not fit in the shared result arena "
                     "right now; lower num_max_points or start the server with a larger --arena-mb",
                     glb_len / 1e6, res.cloud.n_points);
            rc = -1;
        } else {
            shmq_progress(q, slot, job_id, "exporting", 0.9, "Writing GLB...");
            glb_write(&res.cloud, dst, glb_len);
            memcpy(dst + glb_len, meta, meta_len);
            double ms[4] = {res.decode_ms, res.model_ms, res.fusion_ms, (now_mono() - t0) * 1e3};
            shmq_finish(q, slot, job_id, off, glb_len, meta_len, ms);
            log_info("job %llu: %d images, %zu points, GLB %zu bytes; decode %.0f ms, model %.0f ms, "
                     "fusion %.0f ms, glb %.0f ms",
                     (unsigned long long)job_id, n, res.cloud.n_points, glb_len, ms[0], ms[1], ms[2],
                     ms[3]);
        }
        free(meta);
    }
    if (rc) {
        log_warn("job %llu failed: %s", (unsigned long long)job_id, err);
        shmq_fail(q, slot, job_id, err);
    }
    pipeline_result_free(&res);
    free(paths);
    free(path_ptrs);
}

static void usage(void) {
    fprintf(stderr,
            "usage: da3-worker --shm NAME --index I [--front-pid PID] [--model PATH|demo]\n"
            "                  [--device cpu|cuda[:i]] [--threads N] [--precision fp32|bf16]\n"
            "                  [--log-level info]\n"
            "Started by da3-server; not meant to be run by hand.\n");
}

int main(int argc, char **argv) {
    const char *shm_name = NULL, *model_path = "demo", *device = "cpu", *level = "info";
    int index = 0, threads = 0, bf16 = 0;
    /* Before anything else (getopt permutes argv): on OpenBLAS's generic fallback kernels this
     * restarts the process, same pid, with OPENBLAS_CORETYPE set (worker/blas_kernels.h). */
    blas_kernels_ensure(argv);
    static const struct option opts[] = {
        {"shm", required_argument, 0, 's'},     {"index", required_argument, 0, 'i'},
        {"model", required_argument, 0, 'm'},   {"device", required_argument, 0, 'd'},
        {"threads", required_argument, 0, 't'}, {"log-level", required_argument, 0, 'l'},
        {"precision", required_argument, 0, 'p'}, {"front-pid", required_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': shm_name = optarg; break;
        case 'i': index = atoi(optarg); break;
        case 'm': model_path = optarg; break;
        case 'd': device = optarg; break;
        case 't': threads = atoi(optarg); break;
        case 'p': bf16 = !strcmp(optarg, "bf16"); break;
        case 'l': level = optarg; break;
        case 'f': front_pid = (pid_t)atoi(optarg); break;
        default: usage(); return c == 'h' ? 0 : 2;
        }
    }
    if (!shm_name || index < 0 || index >= SHMQ_MAX_WORKERS) {
        usage();
        return 2;
    }
    char tag[32];
    snprintf(tag, sizeof tag, "worker%d", index);
    log_init(tag, log_level_parse(level));
    /* Die with the front, at once: SIGKILL, not SIGTERM, whose graceful path would finish the
     * current job (tens of seconds) for a client that is gone. The signal comes when the thread
     * that forked us exits; the front forks only from its supervisor thread, which outlives
     * every worker (frontend/supervisor.h). The check after it catches a front that died before
     * the prctl. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    exit_if_orphaned("at start");
    /* exec keeps the signal mask, and the front blocks TERM/INT in all its threads (it sigwaits
     * for them): unblock here, where every launcher is covered. */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char err[512] = "";
    shmq *q = shmq_attach(shm_name, err, sizeof err);
    if (!q) {
        log_error("%s", err);
        return 1;
    }
    char blas[160];
    blas_kernels_in_use(blas, sizeof blas);
    shmq_worker_set_blas(q, index, (int)getpid(), blas);
    log_info("BLAS kernels: %s", blas);
    if (threads > 0) da3_set_num_threads(threads);
    da3_set_cpu_bf16(bf16);
    double t0 = now_mono();
    da3_model *model = da3_model_open(model_path, device, err, sizeof err);
    if (!model) {
        log_error("cannot load model %s on %s: %s", model_path, device, err);
        char why[600];
        snprintf(why, sizeof why, "model load failed: %s", err);
        shmq_worker_set_error(q, index, why);
        shmq_close(q, 0);
        return 3;
    }
    exit_if_orphaned("after loading the model");
    shmq_worker_set_ready(q, index, (int)getpid(), da3_model_name(model), da3_model_is_trained(model),
                          device);
    log_info("ready: model %s on %s (loaded in %.1f s)%s", da3_model_name(model), device,
             now_mono() - t0, da3_model_is_trained(model) ? "" : " [UNTRAINED random weights]");

    while (!stop_requested) {
        exit_if_orphaned("between jobs");
        shmq_job_params jp;
        uint64_t job_id = 0;
        int slot = shmq_claim(q, index, 1.0, &jp, &job_id);
        if (slot < 0) continue;
        log_debug("claimed job %llu (session %s, %d images)", (unsigned long long)job_id,
                  jp.session_id, jp.image_count);
        run_job(q, model, slot, job_id, &jp);
    }
    log_info("stopping");
    da3_model_close(model);
    shmq_close(q, 0);
    return 0;
}
