/* Fuzzes common/camera_json.c: the input is a camera as stored in NNNNNN.camera.json (what the
 * worker and a reloading front read back) and as a client sends its two fields. It goes through
 * camera_file_read (the file written into this process's scratch folder, so through
 * json_load_file_bounded) and camera_from_json on the same text parsed bounded (the WebSocket
 * path). Invariants:
 *   - both readers agree, and an accepted camera has finite entries, a rotation orthonormal to
 *     the tolerance with det > 0, a [0 0 0 1] last row, and fx, fy > 0;
 *   - an accepted camera written back (camera_file_write) reads back bit for bit, and
 *     camera_to_json parses back to the same numbers. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/camera_json.h"
#include "common/json_bounded.h"
#include "fuzz_util.h"

static char image_dir[600];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_quiet_logs();
    snprintf(image_dir, sizeof image_dir, "%s", fuzz_tmp_dir());
    return 0;
}

static void check_camera(const known_camera *c) {
    for (int i = 0; i < 16; i++) FUZZ_ASSERT(isfinite(c->extrinsics[i]));
    for (int i = 0; i < 9; i++) FUZZ_ASSERT(isfinite(c->intrinsics[i]));
    FUZZ_ASSERT(c->extrinsics[12] == 0 || fabs(c->extrinsics[12]) <= 1e-6);
    FUZZ_ASSERT(fabs(c->extrinsics[15] - 1) <= 1e-6);
    const double *e = c->extrinsics;
    double det = e[0] * (e[5] * e[10] - e[6] * e[9]) - e[1] * (e[4] * e[10] - e[6] * e[8]) +
                 e[2] * (e[4] * e[9] - e[5] * e[8]);
    FUZZ_ASSERT(det > 0);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            double dot = 0;
            for (int k = 0; k < 3; k++) dot += e[a * 4 + k] * e[b * 4 + k];
            FUZZ_ASSERT(fabs(dot - (a == b)) <= 1e-3);
        }
    FUZZ_ASSERT(c->intrinsics[0] > 0 && c->intrinsics[4] > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[700];
    snprintf(path, sizeof path, "%s/000007.camera.json", image_dir);
    fuzz_write_file(path, data, size);
    known_camera from_file, from_msg;
    char err[400] = "";
    int rf = camera_file_read(image_dir, 7, &from_file, err, sizeof err);
    FUZZ_ASSERT(rf == 1 || (rf == -1 && err[0]));

    json_t *o = json_loadb_bounded((const char *)data, size, JSON_MAX_DEPTH_CLIENT, NULL);
    int rm = -1;
    if (o) rm = camera_from_json(json_object_get(o, "extrinsics"), json_object_get(o, "intrinsics"), &from_msg, err,
                                 sizeof err);
    json_decref(o);
    FUZZ_ASSERT((rf == 1) == (rm == 0));
    if (rf == 1) {
        FUZZ_ASSERT(!memcmp(&from_file, &from_msg, sizeof from_file));
        check_camera(&from_file);
        /* Stored as the front stores it, read as the worker reads it: the same bits. */
        FUZZ_ASSERT(camera_file_write(image_dir, 8, &from_file, 0) == 0);
        known_camera back;
        FUZZ_ASSERT(camera_file_read(image_dir, 8, &back, err, sizeof err) == 1);
        FUZZ_ASSERT(!memcmp(&back, &from_file, sizeof back));
        json_t *j = camera_to_json(&from_file);
        known_camera again;
        FUZZ_ASSERT(camera_from_json(json_object_get(j, "extrinsics"), json_object_get(j, "intrinsics"), &again, err,
                                     sizeof err) == 0);
        FUZZ_ASSERT(!memcmp(&again, &from_file, sizeof again));
        json_decref(j);
        camera_file_remove(image_dir, 8);
    }
    camera_file_remove(image_dir, 7);
    return 0;
}
