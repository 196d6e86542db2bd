/* da3-worker: one inference process, started by the front (prefork). Loads the model once on its
 * device, then loops: claim the oldest queued job from the shared job table, run the pipeline,
 * write the GLB and its metadata straight into the shared arena, mark the job done. It never
 * outlives its front (see front_alive). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fault.h"
#include "common/log.h"
#include "common/util.h"
#include "shm/shm_queue.h"
#include "worker/blas_kernels.h"
#include "worker/glb.h"
#include "worker/pipeline.h"
#include "worker/session_input.h"
#include "worker/stream_session.h"

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

/* Writes a finished job's result into the arena (the GLB, then the metadata that make_meta builds
 * for the GLB's size) and marks it done; stream_end >= 0 is recorded first (streaming jobs).
 * stage_ms[0..2] come filled, [3] gets the GLB time, *glb_len the GLB's size. Returns 0, or -1
 * with err set. */
typedef char *(*metadata_fn)(const void *result, da3_model *model, size_t glb_bytes);
static int publish(shmq *q, int slot, uint64_t job_id, da3_model *model, const point_cloud *cloud,
                   metadata_fn make_meta, const void *result, int stream_end, double stage_ms[4],
                   size_t *glb_bytes, char *err, size_t errlen) {
    double t0 = now_mono();
    size_t glb_len = *glb_bytes = glb_size(cloud);
    char *meta = make_meta(result, model, glb_len);
    size_t meta_len = meta ? strlen(meta) : 0;
    uint64_t off = 0;
    unsigned char *dst = meta ? shmq_result_alloc(q, slot, job_id, glb_len + meta_len, &off) : NULL;
    if (!dst) {
        snprintf(err, errlen,
                 "the result (%.1f MB GLB, %zu points) does not fit in the shared result arena "
                 "right now; lower num_max_points or start the server with a larger --arena-mb",
                 glb_len / 1e6, cloud->n_points);
        free(meta);
        return -1;
    }
    shmq_progress(q, slot, job_id, "exporting", 0.9, "Writing GLB...");
    glb_write(cloud, dst, glb_len);
    fault_point("worker_glb_write"); /* a test kills us here: the block holds a GLB without its metadata */
    memcpy(dst + glb_len, meta, meta_len);
    free(meta);
    stage_ms[3] = (now_mono() - t0) * 1e3;
    if (stream_end >= 0) shmq_set_stream_end(q, slot, job_id, stream_end);
    shmq_finish(q, slot, job_id, off, glb_len, meta_len, stage_ms);
    return 0;
}

static char *plain_metadata(const void *result, da3_model *model, size_t glb_bytes) {
    return pipeline_metadata_json(result, da3_model_name(model), da3_model_is_trained(model), glb_bytes);
}

static char *stream_metadata(const void *result, da3_model *model, size_t glb_bytes) {
    return stream_metadata_json(result, da3_model_name(model), da3_model_is_trained(model), glb_bytes);
}

/* A plain job: the whole session's images through the pipeline. */
static int run_plain_job(shmq *q, da3_model *model, int slot, uint64_t job_id, const shmq_job_params *jp,
                         const pipeline_params *pp, char *err, size_t errlen) {
    job_ctx jc = {q, slot, job_id};
    session_input in;
    pipeline_result res = {0};
    int rc = session_input_load(&in, jp->image_dir, 0, jp->image_count, err, errlen);
    if (rc == 0)
        rc = pipeline_run_files(model, in.path_ptrs, in.names, in.n, in.cams, pp, forward_progress, &jc, &res, err, errlen);
    session_input_free(&in);
    double ms[4] = {res.decode_ms, res.model_ms, res.fusion_ms, 0};
    size_t glb_len = 0;
    if (rc == 0) rc = publish(q, slot, job_id, model, &res.cloud, plain_metadata, &res, -1, ms, &glb_len, err, errlen);
    if (rc == 0)
        log_info("job %llu: %d images, %zu points, GLB %zu bytes; decode %.0f ms, model %.0f ms, "
                 "fusion %.0f ms, glb %.0f ms",
                 (unsigned long long)job_id, jp->image_count, res.cloud.n_points, glb_len, ms[0], ms[1], ms[2],
                 ms[3]);
    pipeline_result_free(&res);
    return rc;
}

/* A streaming job (params.stream_chunk_size > 0): one chunk's delta, or a finalize's whole cloud
 * (worker/stream_session.h). */
static int run_stream_job(shmq *q, da3_model *model, int slot, uint64_t job_id, const shmq_job_params *jp,
                          const pipeline_params *pp, char *err, size_t errlen) {
    job_ctx jc = {q, slot, job_id};
    stream_request rq = {jp->stream_chunk_size, jp->stream_overlap, jp->stream_from, jp->image_count, jp->finalize};
    stream_result res;
    int rc = stream_session_run(model, jp->image_dir, &rq, pp, forward_progress, &jc, &res, err, errlen);
    if (rc) return -1;
    double ms[4] = {res.decode_ms, res.model_ms, res.fusion_ms, 0};
    size_t glb_len = 0;
    rc = publish(q, slot, job_id, model, &res.cloud, stream_metadata, &res, res.end, ms, &glb_len, err, errlen);
    if (rc == 0) {
        if (res.chunk >= 0)
            log_info("job %llu: stream chunk %d (new images %d..%d)%s, %zu points; decode %.0f ms, model %.0f ms, "
                     "fusion %.0f ms, glb %.0f ms (%zu bytes)",
                     (unsigned long long)job_id, res.chunk, res.state.chunks[res.chunk].new_start, res.end - 1,
                     res.rebuilt ? " rebuilt after a retry" : "", res.cloud.n_points, ms[0], ms[1], ms[2], ms[3],
                     glb_len);
        else
            log_info("job %llu: stream finalized, %d images in %d chunks (%d run now), %zu points; model %.0f ms, "
                     "fusion %.0f ms, glb %.0f ms (%zu bytes)",
                     (unsigned long long)job_id, res.end, res.state.n_chunks, res.chunks_run, res.cloud.n_points,
                     ms[1], ms[2], ms[3], glb_len);
    }
    stream_result_free(&res);
    return rc;
}

/* Runs one claimed job to DONE or FAILED. */
static void run_job(shmq *q, da3_model *model, int slot, uint64_t job_id, const shmq_job_params *jp) {
    char err[512] = "";
    pipeline_params pp;
    params_from_job(jp, &pp);
    int rc = jp->stream_chunk_size > 0 ? run_stream_job(q, model, slot, job_id, jp, &pp, err, sizeof err)
                                       : run_plain_job(q, model, slot, job_id, jp, &pp, err, sizeof err);
    if (rc) {
        /* A session deleted or expired while its job ran loses its folder first: not a fault. */
        struct stat st;
        if (stat(jp->image_dir, &st) != 0 && errno == ENOENT)
            log_info("job %llu stopped: its session's files were removed meanwhile (%s)", (unsigned long long)job_id, err);
        else
            log_warn("job %llu failed: %s", (unsigned long long)job_id, err);
        shmq_fail(q, slot, job_id, err);
    }
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
