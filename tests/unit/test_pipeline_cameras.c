/* Known cameras through the whole pipeline (decode, resize, batch crop, network, back to the
 * client's frame) with the demo network: intrinsics follow each image's resize and the batch's
 * centre crop, the client's extrinsics come back, and rotated JPEGs are refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/unit/check.h"
#include "worker/pipeline.h"

/* Writes a w x h JPEG of smooth colours to path; returns 0 or -1. */
static int write_jpeg(const char *path, int w, int h) {
    unsigned char *rgb = malloc((size_t)w * h * 3), *jpeg = NULL;
    unsigned long size = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned char *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (unsigned char)(x * 255 / w);
            p[1] = (unsigned char)(y * 255 / h);
            p[2] = (unsigned char)((x + y) * 127 / (w + h));
        }
    tjhandle tj = tjInitCompress();
    int rc = tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_444, 90, 0);
    if (rc == 0) rc = write_file_atomic_nosync(path, jpeg, size);
    tjFree(jpeg);
    tjDestroy(tj);
    free(rgb);
    return rc;
}

/* Camera i: identity rotation, centre (i, 0.5 i, 0); intrinsics for an image of w x h. */
static void camera(int i, int w, int h, known_camera *c) {
    memset(c, 0, sizeof *c);
    for (int k = 0; k < 3; k++) c->extrinsics[k * 5] = 1;
    c->extrinsics[3] = -1.0 * i;
    c->extrinsics[7] = -0.5 * i;
    c->extrinsics[15] = 1;
    double k[9] = {100, 0, w / 2.0, 0, 100, h / 2.0, 0, 0, 1};
    memcpy(c->intrinsics, k, sizeof k);
}

int main(void) {
    char dir[] = "/tmp/da3-pipeline-cams-XXXXXX", a[300], b[300], err[512] = "";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(a, sizeof a, "%s/a.jpg", dir);
    snprintf(b, sizeof b, "%s/b.jpg", dir);
    CHECK(write_jpeg(a, 140, 105) == 0 && write_jpeg(b, 140, 140) == 0);
    da3_model *m = da3_model_open("demo", "cpu", err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    if (!m) CHECK_DONE("test_pipeline_cameras");

    pipeline_params p;
    pipeline_params_default(&p);
    p.process_res = 140;
    known_camera cams[2];
    camera(0, 140, 105, &cams[0]);
    camera(1, 140, 140, &cams[1]);
    const char *paths[2] = {a, b};
    pipeline_result r;
    CHECK_MSG(pipeline_run_files(m, paths, NULL, 2, cams, &p, NULL, NULL, &r, err, sizeof err) == 0, "%s", err);
    if (r.pred.n == 2) {
        /* 140x105 -> 140x112 (rows resized by 112/105); 140x140 stays; the batch is 112 x 140,
         * so the square view loses 14 rows at the top. Both principal points land on row 56. */
        CHECK(r.pred.height == 112 && r.pred.width == 140);
        const float *k0 = r.pred.intrinsics, *k1 = r.pred.intrinsics + 9;
        CHECK_NEAR(k0[0], 100, 1e-4);
        CHECK_NEAR(k0[2], 70, 1e-4);
        CHECK_NEAR(k0[4], 100 * 112 / 105.0, 1e-4);
        CHECK_NEAR(k0[5], 56, 1e-4);
        CHECK_NEAR(k1[4], 100, 1e-4);
        CHECK_NEAR(k1[5], 70 - 14, 1e-4);
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 12; j++)
                CHECK_NEAR(r.pred.extrinsics[12 * i + j], cams[i].extrinsics[j], 1e-6);
        CHECK(r.known_cameras == 1 && r.pose_scale > 0);
        printf("pose scale %.4g (%s)\n", r.pose_scale, r.pose_scale_fitted ? "fitted" : "normalisation's");
    }
    pipeline_result_free(&r);

    /* A JPEG shown rotated (EXIF orientation 6) cannot take a camera of its stored pixels. */
    char rotated[600];
    snprintf(rotated, sizeof rotated, "%s/images/orient_6.jpg", test_data_dir());
    const char *paths2[2] = {a, rotated};
    CHECK(pipeline_run_files(m, paths2, NULL, 2, cams, &p, NULL, NULL, &r, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "EXIF orientation 6") && strstr(err, "image 1"), "%s", err);
    pipeline_result_free(&r);
    /* Without cameras the same image is fine (decoded upright). */
    p.process_res = 28;
    CHECK_MSG(pipeline_run_files(m, paths2, NULL, 2, NULL, &p, NULL, NULL, &r, err, sizeof err) == 0, "%s", err);
    pipeline_result_free(&r);

    da3_model_close(m);
    unlink(a);
    unlink(b);
    rmdir(dir);
    CHECK_DONE("test_pipeline_cameras");
}
