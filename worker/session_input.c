#include "worker/session_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/session_files.h"

/* The cameras stored with the images: all of them (in->cams), none (NULL), or an error for a mix. */
static int load_cameras(session_input *in, const char *image_dir, char *err, size_t errlen) {
    known_camera *cams = calloc((size_t)in->n, sizeof *cams);
    if (!cams) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int with = 0, first_without = -1;
    for (int i = 0; i < in->n; i++) {
        int rc = camera_file_read(image_dir, in->first + i, &cams[i], err, errlen);
        if (rc < 0) {
            free(cams);
            return -1;
        }
        if (rc == 1) with++;
        else if (first_without < 0) first_without = in->first + i;
    }
    if (with == 0) {
        free(cams);
        return 0;
    }
    if (with < in->n) {
        snprintf(err, errlen,
                 "known cameras were sent with %d of the %d images (image %d has none): send "
                 "extrinsics and intrinsics with every image, or with none",
                 with, in->n, first_without);
        free(cams);
        return -1;
    }
    in->cams = cams;
    return 0;
}

int session_input_load(session_input *in, const char *image_dir, int first, int n, char *err, size_t errlen) {
    memset(in, 0, sizeof *in);
    if (first < 0 || n <= 0) {
        snprintf(err, errlen, "No images in session");
        return -1;
    }
    in->first = first;
    in->n = n;
    in->paths = calloc((size_t)n, sizeof *in->paths);
    in->path_ptrs = calloc((size_t)n, sizeof *in->path_ptrs);
    in->names = calloc((size_t)n, sizeof *in->names);
    if (!in->paths || !in->path_ptrs || !in->names) {
        snprintf(err, errlen, "out of memory");
        session_input_free(in);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (session_image_find(in->paths[i], sizeof in->paths[i], image_dir, first + i)) {
            snprintf(err, errlen, "image %d is missing from the session's storage", first + i);
            session_input_free(in);
            return -1;
        }
        in->path_ptrs[i] = in->paths[i];
        const char *slash = strrchr(in->paths[i], '/');
        in->names[i] = slash ? slash + 1 : in->paths[i];
    }
    if (load_cameras(in, image_dir, err, errlen) != 0) {
        session_input_free(in);
        return -1;
    }
    return 0;
}

void session_input_free(session_input *in) {
    free(in->paths);
    free(in->path_ptrs);
    free(in->names);
    free(in->cams);
    memset(in, 0, sizeof *in);
}
