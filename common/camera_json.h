/* Known cameras as clients send them (protocol field names): "extrinsics" a 4x4 or 3x4
 * world-to-camera matrix (OpenCV axes), "intrinsics" a 3x3 pixel matrix of the image as sent.
 * Shared by the front (validates and stores one per image) and the worker (reads them back). */
#ifndef DA3_CAMERA_JSON_H
#define DA3_CAMERA_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    double extrinsics[16]; /* 4x4 world-to-camera, row-major (a 3x4 gets [0 0 0 1] appended) */
    double intrinsics[9];  /* 3x3, row-major */
} known_camera;

/* Parses and checks one camera: finite numbers, the rotation part orthonormal with det +1
 * (to 1e-3), a 4x4's last row [0 0 0 1], intrinsics [[fx s cx] [0 fy cy] [0 0 1]] with fx, fy
 * > 0. Returns 0, or -1 with a message naming the field in err. */
int camera_from_json(const json_t *extrinsics, const json_t *intrinsics, known_camera *out, char *err,
                     size_t errlen);

/* Known cameras describe the pixels as stored. A JPEG whose EXIF tag rotates or mirrors it for
 * display is decoded upright, so its camera would no longer match (DA3 ignores the tag): such an
 * image cannot take a camera. Returns 0 when the image can, -1 with the reason in err. */
int camera_check_image(const uint8_t *data, size_t len, char *err, size_t errlen);

/* The camera as {"extrinsics": 4x4, "intrinsics": 3x3} (new reference). */
json_t *camera_to_json(const known_camera *cam);

/* A row-major rows x cols matrix as a JSON array of row arrays (the files' matrix form). */
json_t *json_matrix_rows(const double *m, int rows, int cols);

/* Writes the camera of image `index` as <image_dir>/<index:06d>.camera.json (atomically, fsync
 * when `durable`). Returns 0, or -1 with errno set. */
int camera_file_write(const char *image_dir, int index, const known_camera *cam, int durable);

/* Reads image `index`'s camera. Returns 1 when found and valid, 0 when the image has none, -1 with
 * err set when the file is unreadable or invalid. */
int camera_file_read(const char *image_dir, int index, known_camera *out, char *err, size_t errlen);

/* Removes image `index`'s camera file if there is one. */
void camera_file_remove(const char *image_dir, int index);

#endif
