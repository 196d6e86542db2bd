/* Known cameras in JSON. See camera_json.h. */
#include "common/camera_json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/image_decode.h"
#include "common/json_bounded.h"
#include "common/util.h"

/* How far from orthonormal a rotation may be: clients send float32 matrices from other tools. */
#define ROTATION_TOLERANCE 1e-3
/* Far beyond any real scene in any unit, and small enough that squared distances stay finite. */
#define MAX_TRANSLATION 1e9
/* 25 numbers at 17 digits and their JSON: under 1 KB; anything far larger is not ours. */
#define CAMERA_FILE_MAX_BYTES (64u << 10)

/* Reads a rows x cols array of numbers into out. Returns 0, or -1 with err set. */
static int read_matrix(const json_t *m, const char *field, const char *shape, int rows, int cols, double *out,
                       char *err, size_t errlen) {
    if (!json_is_array(m) || (int)json_array_size(m) != rows) {
        set_error(err, errlen, "'%s' must be a %s array of numbers", field, shape);
        return -1;
    }
    for (int r = 0; r < rows; r++) {
        const json_t *row = json_array_get(m, (size_t)r);
        if (!json_is_array(row) || (int)json_array_size(row) != cols) {
            set_error(err, errlen, "'%s' must be a %s array of numbers (row %d)", field, shape, r);
            return -1;
        }
        for (int c = 0; c < cols; c++) {
            const json_t *v = json_array_get(row, (size_t)c);
            if (!json_is_number(v) || !isfinite(json_number_value(v))) {
                set_error(err, errlen, "'%s'[%d][%d] is not a finite number", field, r, c);
                return -1;
            }
            out[r * cols + c] = json_number_value(v);
        }
    }
    return 0;
}

static int check_rotation(const double *ext, char *err, size_t errlen) {
    double worst = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) { /* (R R^T)[a][b] against the identity */
            double dot = 0;
            for (int k = 0; k < 3; k++) dot += ext[a * 4 + k] * ext[b * 4 + k];
            double dev = fabs(dot - (a == b ? 1.0 : 0.0));
            if (dev > worst) worst = dev;
        }
    double det = ext[0] * (ext[5] * ext[10] - ext[6] * ext[9]) - ext[1] * (ext[4] * ext[10] - ext[6] * ext[8]) +
                 ext[2] * (ext[4] * ext[9] - ext[5] * ext[8]);
    if (worst > ROTATION_TOLERANCE || det < 0) {
        set_error(err, errlen,
                  "'extrinsics' must be world-to-camera [R|t] with R a rotation (R R^T is off the "
                  "identity by %.3g, det %.3g)", worst, det);
        return -1;
    }
    return 0;
}

int camera_from_json(const json_t *extrinsics, const json_t *intrinsics, known_camera *out, char *err,
                     size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!extrinsics || !intrinsics) {
        set_error(err, errlen, "known cameras need both 'extrinsics' and 'intrinsics'");
        return -1;
    }
    int rows = json_is_array(extrinsics) && json_array_size(extrinsics) == 3 ? 3 : 4;
    if (read_matrix(extrinsics, "extrinsics", "4x4 or 3x4", rows, 4, out->extrinsics, err, errlen)) return -1;
    if (rows == 3) {
        out->extrinsics[15] = 1.0;
    } else if (fabs(out->extrinsics[12]) > 1e-6 || fabs(out->extrinsics[13]) > 1e-6 ||
               fabs(out->extrinsics[14]) > 1e-6 || fabs(out->extrinsics[15] - 1.0) > 1e-6) {
        set_error(err, errlen, "'extrinsics' last row must be [0, 0, 0, 1]");
        return -1;
    }
    if (check_rotation(out->extrinsics, err, errlen)) return -1;
    for (int r = 0; r < 3; r++)
        if (fabs(out->extrinsics[r * 4 + 3]) > MAX_TRANSLATION) {
            set_error(err, errlen, "'extrinsics' translation %g is beyond %g", out->extrinsics[r * 4 + 3],
                      MAX_TRANSLATION);
            return -1;
        }
    if (read_matrix(intrinsics, "intrinsics", "3x3", 3, 3, out->intrinsics, err, errlen)) return -1;
    const double *k = out->intrinsics;
    if (!(k[0] > 0) || !(k[4] > 0) || fabs(k[3]) > 1e-6 || fabs(k[6]) > 1e-6 || fabs(k[7]) > 1e-6 ||
        fabs(k[8] - 1.0) > 1e-6) {
        set_error(err, errlen, "'intrinsics' must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0");
        return -1;
    }
    return 0;
}

int camera_check_image(const uint8_t *data, size_t len, char *err, size_t errlen) {
    const int orientation = image_orientation(data, len);
    if (orientation == 1) return 0;
    set_error(err, errlen,
              "the image has EXIF orientation %d (shown rotated or mirrored); known cameras need an image "
              "stored upright: rotate its pixels (and the camera) or drop the orientation tag",
              orientation);
    return -1;
}

json_t *json_matrix_rows(const double *m, int rows, int cols) {
    json_t *all = json_array();
    for (int r = 0; r < rows; r++) {
        json_t *row = json_array();
        for (int c = 0; c < cols; c++) json_array_append_new(row, json_real(m[r * cols + c]));
        json_array_append_new(all, row);
    }
    return all;
}

json_t *camera_to_json(const known_camera *cam) {
    json_t *o = json_object();
    json_object_set_new(o, "extrinsics", json_matrix_rows(cam->extrinsics, 4, 4));
    json_object_set_new(o, "intrinsics", json_matrix_rows(cam->intrinsics, 3, 3));
    return o;
}

static int camera_path(char *dst, size_t cap, const char *image_dir, int index) {
    return fmt_path(dst, cap, "%s/%06d.camera.json", image_dir, index);
}

int camera_file_write(const char *image_dir, int index, const known_camera *cam, int durable) {
    char path[800];
    if (camera_path(path, sizeof path, image_dir, index)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    json_t *o = camera_to_json(cam);
    char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    if (!text) {
        errno = ENOMEM;
        return -1;
    }
    int rc = durable ? write_file_atomic(path, text, strlen(text)) : write_file_atomic_nosync(path, text, strlen(text));
    free(text);
    return rc;
}

int camera_file_read(const char *image_dir, int index, known_camera *out, char *err, size_t errlen) {
    char path[800];
    if (camera_path(path, sizeof path, image_dir, index)) {
        set_error(err, errlen, "image %d: camera path too long", index);
        return -1;
    }
    if (access(path, F_OK) != 0) return 0;
    json_error_t jerr;
    /* A client's numbers went into this file: read it back bounded like any client input. */
    json_t *o = json_load_file_bounded(path, CAMERA_FILE_MAX_BYTES, JSON_MAX_DEPTH_CLIENT, &jerr);
    if (!o) {
        set_error(err, errlen, "image %d: cannot read its stored camera: %s", index, jerr.text);
        return -1;
    }
    char why[256];
    int rc = camera_from_json(json_object_get(o, "extrinsics"), json_object_get(o, "intrinsics"), out, why, sizeof why);
    json_decref(o);
    if (rc) {
        set_error(err, errlen, "image %d: stored camera is invalid: %s", index, why);
        return -1;
    }
    return 1;
}

void camera_file_remove(const char *image_dir, int index) {
    char path[800];
    if (!camera_path(path, sizeof path, image_dir, index)) unlink(path);
}
