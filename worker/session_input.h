/* A job's input as the front stored it: the files of a range of a session's images and their
 * known cameras (common/session_files.h, common/camera_json.h). Shared by the plain job and the
 * streaming chunks, which read different ranges of the same folder. */
#ifndef DA3_SESSION_INPUT_H
#define DA3_SESSION_INPUT_H

#include <stddef.h>
#include "common/camera_json.h"

#define SESSION_INPUT_PATH_MAX 704 /* an image_dir (640) plus "/NNNNNN.jpg" */

typedef struct {
    int first, n;                           /* images [first, first + n) */
    char (*paths)[SESSION_INPUT_PATH_MAX];  /* n stored file paths */
    const char **path_ptrs;                 /* n pointers into paths, as pipeline_* take them */
    const char **names;                     /* n stored names ("000003.jpg"): what error messages
                                             * show a client (never the server's paths) */
    known_camera *cams;                     /* n cameras, or NULL when no image has one */
} session_input;

/* Finds images [first, first + n) of image_dir and reads their cameras: all or none must have
 * one (a mix is refused, the network cannot take it). Messages name images by session index.
 * Returns 0, or -1 with err set (*in then freed). */
int session_input_load(session_input *in, const char *image_dir, int first, int n, char *err, size_t errlen);

/* Frees what session_input_load allocated; safe on a zeroed struct. */
void session_input_free(session_input *in);

#endif
