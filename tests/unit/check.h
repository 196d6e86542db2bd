/* A tiny assertion harness for the unit tests: each CHECK failure prints where and why, the
 * program exits non-zero at the end if any failed. */
#ifndef DA3_CHECK_H
#define DA3_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures = 0;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            check_failures++;                                                       \
        }                                                                           \
    } while (0)

#define CHECK_MSG(cond, ...)                                                  \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            check_failures++;                                                 \
        }                                                                     \
    } while (0)

#define CHECK_NEAR(a, b, tol) \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%g vs %g (tol %g)", (double)(a), (double)(b), (double)(tol))

/* The test data folder: $DA3_TEST_DATA, or tests/data (run from the repository root). */
static inline const char *test_data_dir(void) {
    const char *dir = getenv("DA3_TEST_DATA");
    return dir && *dir ? dir : "tests/data";
}

/* Ends main(): prints a summary and returns the exit status. */
#define CHECK_DONE(name)                                                        \
    do {                                                                        \
        if (check_failures) {                                                   \
            fprintf(stderr, "%s: %d check(s) FAILED\n", name, check_failures); \
            return 1;                                                           \
        }                                                                       \
        printf("%s: ok\n", name);                                               \
        return 0;                                                               \
    } while (0)

#endif
