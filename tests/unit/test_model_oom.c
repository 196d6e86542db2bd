/* A forward pass that needs more memory than the worker may have fails with a clear "out of
 * memory" error, frees what it took, and the model keeps working. The limit is an address-space
 * rlimit set after a first forward pass, so libtorch's threads and the weights already exist. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "tests/unit/check.h"
#include "worker/model.h"

/* The sanitizers' allocators abort on exhaustion instead of returning NULL (and ASan reserves
 * terabytes of shadow memory), so an address-space limit cannot be tested under them. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifndef UNDER_ASAN
/* Virtual memory in use now, in bytes (from /proc/self/statm, which counts pages). */
static long long vm_bytes(void) {
    long long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%lld", &pages) != 1) pages = 0;
        fclose(f);
    }
    return pages * sysconf(_SC_PAGESIZE);
}

/* Runs `views` views of h x w from x (zeros, big enough). */
static int forward(da3_model *m, const float *x, int views, int h, int w, char *err, size_t errlen) {
    da3_prediction p = {0};
    int rc = da3_model_forward(m, x, views, h, w, NULL, REF_VIEW_SADDLE_BALANCED, &p, err, errlen);
    da3_prediction_free(&p);
    return rc;
}

#endif

int main(void) {
#ifdef UNDER_ASAN
    (void)check_failures;
    printf("test_model_oom: skipped under a sanitizer (runs in the plain build)\n");
    return 0;
#else
    char err[1024] = "";
    da3_set_num_threads(2);
    da3_model *m = da3_model_open("demo", "cpu", err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    if (!m) CHECK_DONE("test_model_oom");
    enum { BIG_VIEWS = 4, BIG_H = 378, BIG_W = 504 };
    float *x = calloc((size_t)BIG_VIEWS * 3 * BIG_H * BIG_W, sizeof *x);
    CHECK(x != NULL);
    if (!x) CHECK_DONE("test_model_oom");
    /* Warm-up at both sizes first. oneDNN JIT-compiles a convolution kernel for each new shape
     * and crashes (SIGSEGV in its JIT) when that mmap is refused, instead of reporting it; with
     * the kernels compiled, the limit below hits ordinary tensor allocations, which libtorch
     * reports. (A worker killed by the kernel's OOM killer is restarted by the front, and the
     * job retried once: test_resilience covers that path.) */
    CHECK_MSG(forward(m, x, 1, 140, 140, err, sizeof err) == 0, "warm-up: %s", err);
    CHECK_MSG(forward(m, x, BIG_VIEWS, BIG_H, BIG_W, err, sizeof err) == 0, "warm-up: %s", err);

    /* 160 MiB of headroom: 4 views at 504x378 need far more (the head's full-size maps alone
     * are ~200 MB), but a 140x140 view fits. */
    struct rlimit old, lim;
    getrlimit(RLIMIT_AS, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)(vm_bytes() + (160ll << 20));
    if (old.rlim_max != RLIM_INFINITY && lim.rlim_cur > old.rlim_max) lim.rlim_cur = old.rlim_max;
    CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
    err[0] = 0;
    CHECK(forward(m, x, BIG_VIEWS, BIG_H, BIG_W, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "out of memory") != NULL, "error should say out of memory: %s", err);
    printf("refused: %.200s\n", err);
    /* Still usable, under the same limit, more than once: the failed pass gave its memory back. */
    for (int i = 0; i < 3; i++) CHECK_MSG(forward(m, x, 1, 140, 140, err, sizeof err) == 0, "after the failure: %s", err);
    setrlimit(RLIMIT_AS, &old);
    free(x);
    da3_model_close(m);
    CHECK_DONE("test_model_oom");
#endif
}
