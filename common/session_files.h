/* Where a session's images live on disk; shared by the front (writer) and the worker (reader) so
 * the naming scheme exists in one place. Names are chosen by the server: NNNNNN.{jpg,png,heic,webp}
 * under the session's images/ folder, beside NNNNNN.meta.json (display name) and, for a known
 * camera, NNNNNN.camera.json; a client's filename is display text only. */
#ifndef DA3_SESSION_FILES_H
#define DA3_SESSION_FILES_H

#include <stddef.h>
#include "common/image_decode.h"

/* Writes "<image_dir>/<index:06d>.<ext>" into dst; returns 0, or -1 if it does not fit. */
int session_image_path(char *dst, size_t cap, const char *image_dir, int index, image_format fmt);

/* Writes "<image_dir>/<index:06d>.meta.json" (the image's display name, written by the front
 * before the image) into dst; returns 0, or -1 if it does not fit. */
int session_meta_path(char *dst, size_t cap, const char *image_dir, int index);

/* Writes "<image_dir>/../stream" (a streaming session's chunk state, worker/stream_session.h)
 * into dst; returns 0, or -1 if it does not fit. */
int session_stream_dir(char *dst, size_t cap, const char *image_dir);

/* Finds the stored file of image `index` (any known extension); returns 0 or -1 if absent. */
int session_image_find(char *dst, size_t cap, const char *image_dir, int index);

#endif
