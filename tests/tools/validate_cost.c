/* validate-cost: how long the front's upload check (image_validate: a full entropy decode at 1/8
 * scale) takes for one image, single-threaded: the floor under the image-ack rate, printed by
 * `make bench-load` beside the measured rate. Usage: validate-cost IMAGE [RUNS] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/image_decode.h"
#include "common/util.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: validate-cost IMAGE [RUNS]\n");
        return 2;
    }
    int runs = argc > 2 ? atoi(argv[2]) : 300;
    if (runs < 1) runs = 1;
    size_t len;
    uint8_t *data = read_file(argv[1], &len);
    if (!data) {
        perror(argv[1]);
        return 1;
    }
    double *t = malloc(sizeof *t * (size_t)runs);
    char err[256];
    int w = 0, h = 0;
    for (int i = 0; i < runs; i++) {
        double t0 = now_mono();
        if (image_validate(data, len, &w, &h, err, sizeof err)) {
            fprintf(stderr, "validate-cost: %s\n", err);
            return 1;
        }
        t[i] = now_mono() - t0;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    double med = t[runs / 2];
    printf("upload check (image_validate) of %s: %dx%d, %zu bytes: median %.3f ms over %d runs, one thread\n", argv[1],
           w, h, len, med * 1e3, runs);
    printf("  -> at most %.0f image acks/s per core from the check alone\n", 1.0 / med);
    free(t);
    free(data);
    return 0;
}
