/* make-jpeg: writes a deterministic synthetic test photo (gradients + shapes + noise) as JPEG or
 * PNG, for tests and benchmarks. Usage: make-jpeg OUT WIDTH HEIGHT [SEED] [QUALITY]
 * (OUT ending in .png writes PNG). */
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

static uint32_t rng_state;
static uint32_t next_rand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void paint(uint8_t *rgb, int w, int h, uint32_t seed) {
    rng_state = seed * 2654435761u + 1;
    int cx = (int)(next_rand() % (uint32_t)w), cy = (int)(next_rand() % (uint32_t)h);
    int r = 10 + (int)(next_rand() % (uint32_t)(w / 3 + 1));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            int inside = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
            int noise = (int)(next_rand() % 24);
            p[0] = (uint8_t)((x * 255 / w + noise + (inside ? 90 : 0)) & 255);
            p[1] = (uint8_t)((y * 255 / h + noise) & 255);
            p[2] = (uint8_t)(((x + y) * 128 / (w + h) + seed * 37 + (inside ? 0 : 60)) & 255);
        }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: make-jpeg OUT WIDTH HEIGHT [SEED] [QUALITY]\n");
        return 2;
    }
    int w = atoi(argv[2]), h = atoi(argv[3]);
    uint32_t seed = argc > 4 ? (uint32_t)atoi(argv[4]) : 1;
    int quality = argc > 5 ? atoi(argv[5]) : 90;
    if (w <= 0 || h <= 0 || w > 8192 || h > 8192) return 2;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    paint(rgb, w, h, seed);
    size_t n = strlen(argv[1]);
    if (n > 4 && !strcmp(argv[1] + n - 4, ".png")) {
        png_image img;
        memset(&img, 0, sizeof img);
        img.version = PNG_IMAGE_VERSION;
        img.width = (png_uint_32)w;
        img.height = (png_uint_32)h;
        img.format = PNG_FORMAT_RGB;
        int ok = png_image_write_to_file(&img, argv[1], 0, rgb, 0, NULL);
        free(rgb);
        return ok ? 0 : 1;
    }
    tjhandle tj = tjInitCompress();
    unsigned char *jpeg = NULL;
    unsigned long size = 0;
    if (tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_420, quality, 0)) {
        fprintf(stderr, "make-jpeg: %s\n", tjGetErrorStr2(tj));
        return 1;
    }
    FILE *f = fopen(argv[1], "wb");
    int ok = f && fwrite(jpeg, 1, size, f) == size;
    if (f) fclose(f);
    tjFree(jpeg);
    tjDestroy(tj);
    free(rgb);
    return ok ? 0 : 1;
}
