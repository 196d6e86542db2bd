#include "common/session_files.h"

#include <unistd.h>

#include "common/util.h"

int session_image_path(char *dst, size_t cap, const char *image_dir, int index, image_format fmt) {
    return fmt_path(dst, cap, "%s/%06d.%s", image_dir, index, image_format_ext(fmt));
}

int session_meta_path(char *dst, size_t cap, const char *image_dir, int index) {
    return fmt_path(dst, cap, "%s/%06d.meta.json", image_dir, index);
}

int session_stream_dir(char *dst, size_t cap, const char *image_dir) {
    return fmt_path(dst, cap, "%s/../stream", image_dir);
}

int session_image_find(char *dst, size_t cap, const char *image_dir, int index) {
    static const image_format formats[] = {IMAGE_FORMAT_JPEG, IMAGE_FORMAT_PNG, IMAGE_FORMAT_HEIF, IMAGE_FORMAT_WEBP};
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (!session_image_path(dst, cap, image_dir, index, formats[i]) && access(dst, R_OK) == 0)
            return 0;
    return -1;
}
