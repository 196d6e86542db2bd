#include "worker/pipeline.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "worker/pose_align.h"

void pipeline_params_default(pipeline_params *p) {
    memset(p, 0, sizeof *p);
    p->process_res = PROTOCOL_DEFAULT_PROCESS_RES;
    p->method = PROTOCOL_DEFAULT_RESIZE_METHOD;
    p->ref_view = (ref_view_strategy)PROTOCOL_DEFAULT_REF_VIEW;
    p->fusion.conf_thresh_percentile = PROTOCOL_DEFAULT_CONF_THRESH_PERCENTILE;
    p->fusion.num_max_points = PROTOCOL_DEFAULT_NUM_MAX_POINTS;
    p->fusion.show_cameras = PROTOCOL_DEFAULT_SHOW_CAMERAS;
    p->fusion.seed = PROTOCOL_SEED;
}

static void report(pipeline_progress_fn fn, void *ctx, const char *stage, double progress,
                   const char *message) {
    if (fn) fn(ctx, stage, progress, message);
}

/* Reads, decodes and resizes every view; with cams, carries each camera matrix through the same
 * resize into k_out (n x 9). Progress moves from 0.30 to 0.40 while decoding. */
static int load_views(const char *const *paths, const char *const *names, int n, const known_camera *cams,
                      const pipeline_params *p, pipeline_progress_fn progress, void *ctx,
                      rgb_image *views, double *k_out, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        const char *label = names && names[i] ? names[i] : paths[i];
        size_t len = 0;
        uint8_t *data = read_file(paths[i], &len);
        if (!data) {
            snprintf(err, errlen, "image %d (%s): cannot read the stored file", i, label);
            return -1;
        }
        rgb_image decoded = {0};
        char why[256] = "";
        int rc = cams ? camera_check_image(data, len, why, sizeof why) : 0;
        if (rc == 0) rc = image_decode(data, len, &decoded, why, sizeof why);
        free(data);
        if (rc == 0 && cams)
            rc = preprocess_intrinsics(cams[i].intrinsics, decoded.width, decoded.height, p->process_res,
                                       p->method, k_out + 9 * i, why, sizeof why);
        if (rc == 0) rc = preprocess_resize(&decoded, p->process_res, p->method, &views[i], why, sizeof why);
        image_free(&decoded);
        if (rc) {
            snprintf(err, errlen, "image %d (%s): %s", i, label, why);
            return -1;
        }
        char msg[96];
        snprintf(msg, sizeof msg, "Decoded image %d/%d", i + 1, n);
        report(progress, ctx, "inference", 0.30 + 0.10 * (i + 1) / n, msg);
    }
    return 0;
}

/* Known cameras on their way through the pipeline (all arrays n entries). */
typedef struct {
    double *ext;     /* client extrinsics, 4x4 each, contiguous as pose_align takes them */
    double *k;       /* client intrinsics carried through each view's preprocessing, 3x3 */
    float *net_ext;  /* what the network is given: normalised extrinsics, 4x4 */
    float *net_k;    /* ... and the batch's intrinsics, 3x3 */
    double median;   /* the normalisation's divisor (client units per network unit) */
} camera_work;

static void camera_work_free(camera_work *cw) {
    free(cw->ext);
    free(cw->k);
    free(cw->net_ext);
    free(cw->net_k);
    memset(cw, 0, sizeof *cw);
}

/* Allocates cw for n views (cams NULL: nothing to do). Returns 0 or -1 when out of memory. */
static int camera_work_init(camera_work *cw, const known_camera *cams, int n) {
    memset(cw, 0, sizeof *cw);
    if (!cams) return 0;
    cw->ext = malloc((size_t)n * 16 * sizeof *cw->ext);
    cw->k = calloc((size_t)n, 9 * sizeof *cw->k);
    cw->net_ext = malloc((size_t)n * 16 * sizeof *cw->net_ext);
    cw->net_k = malloc((size_t)n * 9 * sizeof *cw->net_k);
    if (!cw->ext || !cw->k || !cw->net_ext || !cw->net_k) {
        camera_work_free(cw);
        return -1;
    }
    for (int i = 0; i < n; i++) memcpy(cw->ext + 16 * i, cams[i].extrinsics, sizeof cams[i].extrinsics);
    return 0;
}

/* The network's view of the cameras: extrinsics normalised to view 0, intrinsics shifted by the
 * batch's centre crop (size differences are multiples of 14, so halves are exact). */
static int network_cameras(camera_work *cw, int n, const int *view_w, const int *view_h, const da3_batch *batch,
                           char *err, size_t errlen) {
    double *norm = malloc((size_t)n * 16 * sizeof *norm);
    if (!norm || pose_normalize_extrinsics(n, cw->ext, norm, &cw->median)) {
        free(norm);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        cw->k[9 * i + 2] -= (view_w[i] - batch->width) / 2;
        cw->k[9 * i + 5] -= (view_h[i] - batch->height) / 2;
        for (int j = 0; j < 16; j++) cw->net_ext[16 * i + j] = (float)norm[16 * i + j];
        for (int j = 0; j < 9; j++) cw->net_k[9 * i + j] = (float)cw->k[9 * i + j];
    }
    free(norm);
    return 0;
}

/* DA3's _align_to_input_extrinsics_intrinsics (align_to_input_ext_scale=True): the client's own
 * cameras are the answer; depth is rescaled into its units by the Sim(3) scale between its
 * camera centres and the predicted ones. When that cannot be fitted (DA3 would raise), the
 * normalisation's own factor is used: the network saw translations divided by cw->median. */
static int return_to_client_frame(const camera_work *cw, da3_prediction *pred, pipeline_result *out, char *err,
                                  size_t errlen) {
    const int n = pred->n;
    double *ext_pred = malloc((size_t)n * 12 * sizeof *ext_pred);
    if (!ext_pred) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n * 12; i++) ext_pred[i] = pred->extrinsics[i];
    const double s = pose_alignment_scale(n, cw->ext, ext_pred, n >= 2 ? 1.0 / cw->median : 1.0,
                                          &out->pose_scale_fitted);
    free(ext_pred);
    const size_t pixels = (size_t)n * pred->height * pred->width;
    for (size_t i = 0; i < pixels; i++) pred->depth[i] = (float)(pred->depth[i] / s);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < 12; j++) pred->extrinsics[12 * i + j] = (float)cw->ext[16 * i + j];
        for (int j = 0; j < 9; j++) pred->intrinsics[9 * i + j] = (float)cw->k[9 * i + j];
    }
    out->pose_scale = s;
    out->known_cameras = 1;
    return 0;
}

int pipeline_predict_files(da3_model *m, const char *const *paths, const char *const *names, int n,
                           const known_camera *cams, const pipeline_params *p, pipeline_progress_fn progress,
                           void *ctx, pipeline_result *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->pose_scale = 1.0;
    if (n <= 0) {
        snprintf(err, errlen, "No images in session");
        return -1;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "Processing %d images...", n);
    report(progress, ctx, "inference", 0.3, msg);

    double t0 = now_mono();
    rgb_image *views = calloc((size_t)n, sizeof *views);
    da3_batch batch = {0};
    camera_work cw;
    int *view_w = calloc((size_t)n, sizeof *view_w), *view_h = calloc((size_t)n, sizeof *view_h);
    int rc = -1;
    if (camera_work_init(&cw, cams, n) || !views || !view_w || !view_h)
        snprintf(err, errlen, "out of memory");
    else
        rc = load_views(paths, names, n, cams, p, progress, ctx, views, cw.k, err, errlen);
    if (rc == 0) rc = preprocess_batch(views, n, &batch, err, errlen);
    for (int i = 0; views && i < n; i++) {
        view_w[i] = views[i].width;
        view_h[i] = views[i].height;
        image_free(&views[i]);
    }
    free(views);
    if (rc == 0 && cams) rc = network_cameras(&cw, n, view_w, view_h, &batch, err, errlen);
    out->decode_ms = (now_mono() - t0) * 1e3;
    if (rc) goto done;

    snprintf(msg, sizeof msg, "Running the network on %d views (%dx%d)...", n, batch.width,
             batch.height);
    report(progress, ctx, "inference", 0.4, msg);
    double t1 = now_mono();
    da3_known_cameras net_cams = {cw.net_ext, cw.net_k};
    rc = da3_model_forward(m, batch.input, batch.n, batch.height, batch.width, cams ? &net_cams : NULL,
                           p->ref_view, &out->pred, err, errlen);
    out->model_ms = (now_mono() - t1) * 1e3;
    if (rc) goto done;
    if (cams && (rc = return_to_client_frame(&cw, &out->pred, out, err, errlen)) != 0) goto done;
    out->rgb = batch.rgb; /* the result owns the colours from here */
    batch.rgb = NULL;

done:
    da3_batch_free(&batch);
    camera_work_free(&cw);
    free(view_w);
    free(view_h);
    if (rc) pipeline_result_free(out);
    return rc;
}

int pipeline_fuse(pipeline_result *r, const pipeline_params *p, pipeline_progress_fn progress, void *ctx,
                  char *err, size_t errlen) {
    report(progress, ctx, "exporting", 0.7, "Generating 3D model...");
    double t0 = now_mono();
    int rc = fuse_point_cloud(&r->pred, r->rgb, &p->fusion, &r->cloud, err, errlen);
    r->fusion_ms = (now_mono() - t0) * 1e3;
    return rc;
}

int pipeline_run_files(da3_model *m, const char *const *paths, const char *const *names, int n,
                       const known_camera *cams, const pipeline_params *p, pipeline_progress_fn progress, void *ctx,
                       pipeline_result *out, char *err, size_t errlen) {
    if (pipeline_predict_files(m, paths, names, n, cams, p, progress, ctx, out, err, errlen) != 0) return -1;
    if (pipeline_fuse(out, p, progress, ctx, err, errlen) != 0) {
        pipeline_result_free(out);
        return -1;
    }
    return 0;
}

static json_t *matrices_json(const float *m, int n, int rows, int cols) {
    json_t *all = json_array();
    for (int i = 0; i < n; i++) {
        json_t *mat = json_array();
        for (int r = 0; r < rows; r++) {
            json_t *row = json_array();
            for (int c = 0; c < cols; c++)
                json_array_append_new(row, json_real(m[(i * rows + r) * cols + c]));
            json_array_append_new(mat, row);
        }
        json_array_append_new(all, mat);
    }
    return all;
}

json_t *pipeline_metadata_object(const pipeline_meta *f, const char *model_name, int model_trained,
                                 size_t glb_bytes) {
    json_t *meta = json_object();
    if (!meta) return NULL;
    json_object_set_new(meta, "num_frames", json_integer(f->n_views));
    json_object_set_new(meta, "glb_size_bytes", json_integer((json_int_t)glb_bytes));
    json_object_set_new(meta, "intrinsics", matrices_json(f->intrinsics, f->n_views, 3, 3));
    json_object_set_new(meta, "extrinsics", matrices_json(f->extrinsics, f->n_views, 3, 4));
    json_object_set_new(meta, "num_points", json_integer((json_int_t)f->n_points));
    json_t *size = json_array();
    json_array_append_new(size, json_integer(f->height));
    json_array_append_new(size, json_integer(f->width));
    json_object_set_new(meta, "processed_size", size);
    json_t *align = json_array();
    for (int i = 0; i < 4; i++) {
        json_t *row = json_array();
        for (int j = 0; j < 4; j++) json_array_append_new(row, json_real(f->alignment[i * 4 + j]));
        json_array_append_new(align, row);
    }
    json_object_set_new(meta, "hf_alignment", align);
    json_object_set_new(meta, "known_cameras", json_boolean(f->known_cameras));
    if (f->known_cameras) {
        json_object_set_new(meta, "pose_scale", json_real(f->pose_scale));
        json_object_set_new(meta, "pose_scale_fitted", json_boolean(f->pose_scale_fitted));
    }
    json_t *model = json_object();
    json_object_set_new(model, "name", json_string(model_name ? model_name : "unknown"));
    json_object_set_new(model, "trained", json_boolean(model_trained));
    if (!model_trained)
        json_object_set_new(model, "warning",
                            json_string(PROTOCOL_UNTRAINED_WARNING));
    json_object_set_new(meta, "model", model);
    json_t *timing = json_object();
    json_object_set_new(timing, "decode_ms", json_real(f->decode_ms));
    json_object_set_new(timing, "model_ms", json_real(f->model_ms));
    json_object_set_new(timing, "fusion_ms", json_real(f->fusion_ms));
    json_object_set_new(meta, "timing", timing);
    return meta;
}

char *pipeline_metadata_dump(json_t *meta) {
    if (!meta) return NULL;
    char *text = json_dumps(meta, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(meta);
    return text;
}

char *pipeline_metadata_json(const pipeline_result *r, const char *model_name, int model_trained,
                             size_t glb_bytes) {
    const da3_prediction *pr = &r->pred;
    pipeline_meta f = {pr->n, pr->height, pr->width, pr->intrinsics, pr->extrinsics, r->cloud.n_points,
                       r->cloud.alignment, r->known_cameras, r->pose_scale, r->pose_scale_fitted,
                       r->decode_ms, r->model_ms, r->fusion_ms};
    return pipeline_metadata_dump(pipeline_metadata_object(&f, model_name, model_trained, glb_bytes));
}

void pipeline_result_free(pipeline_result *r) {
    da3_prediction_free(&r->pred);
    free(r->rgb);
    r->rgb = NULL;
    point_cloud_free(&r->cloud);
}
