/* worker/blas_kernels: the decision on every branch (fallback on AVX-512 -> SkylakeX/Cooperlake,
 * on AVX2 -> Haswell, on AVX -> Sandybridge, no AVX -> kept; a recognised core untouched; the
 * user's OPENBLAS_CORETYPE untouched; the marker stops a second restart), the descriptions, the
 * supported sets; then the real restart: a child started on Prescott (OpenBLAS initialised with
 * OPENBLAS_CORETYPE=Prescott, the variable then removed, which is what a fallback looks like)
 * must restart itself once onto the CPU's best set and report the correction. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/check.h"
#include "worker/blas_kernels.h"

static const blas_cpu NONE = {0};
static const blas_cpu AVX = {.avx = 1};
static const blas_cpu AVX2 = {.avx = 1, .avx2 = 1, .fma = 1};
static const blas_cpu AVX2_NOFMA = {.avx = 1, .avx2 = 1};
static const blas_cpu SKX = {1, 1, 1, 1, 1, 1, 1, 0};
static const blas_cpu SPR = {1, 1, 1, 1, 1, 1, 1, 1}; /* AVX-512 with BF16 (Sapphire Rapids) */
static const blas_cpu AVX512F_ONLY = {.avx = 1, .avx2 = 1, .fma = 1, .avx512f = 1}; /* Knights-like */

static void expect(const char *core, const blas_cpu *cpu, const char *user, const char *marker, int reexec,
                   const char *coretype, blas_chooser chooser) {
    blas_decision d = blas_decide(core, cpu, user, marker);
    CHECK_MSG(d.reexec == reexec, "core %s user %s marker %s: reexec %d", core ? core : "NULL",
              user ? user : "NULL", marker ? marker : "NULL", d.reexec);
    if (reexec) CHECK_MSG(!strcmp(d.coretype, coretype), "core %s: coretype %s, want %s", core, d.coretype, coretype);
    CHECK_MSG(d.chooser == chooser, "core %s user %s marker %s: chooser %d, want %d", core ? core : "NULL",
              user ? user : "NULL", marker ? marker : "NULL", (int)d.chooser, (int)chooser);
}

static void decisions(void) {
    /* A real fallback: the best set the CPU runs. */
    expect("Prescott", &SPR, NULL, NULL, 1, "Cooperlake", BLAS_BY_OPENBLAS);
    expect("Prescott", &SKX, NULL, NULL, 1, "SkylakeX", BLAS_BY_OPENBLAS);
    expect("Prescott", &AVX2, NULL, NULL, 1, "Haswell", BLAS_BY_OPENBLAS);
    expect("Prescott", &AVX512F_ONLY, NULL, NULL, 1, "Haswell", BLAS_BY_OPENBLAS);
    expect("Prescott", &AVX2_NOFMA, NULL, NULL, 1, "Sandybridge", BLAS_BY_OPENBLAS);
    expect("Prescott", &AVX, NULL, NULL, 1, "Sandybridge", BLAS_BY_OPENBLAS);
    expect("prescott", &AVX2, "", "", 1, "Haswell", BLAS_BY_OPENBLAS); /* case, empty = unset */
    const char *generic[] = {"Core2", "Nehalem", "Atom", "Katmai", "Penryn", "Dunnington", "Unknown",
                             "Opteron_SSE3", "Barcelona", "Bobcat", "Nano", "Athlon", "Northwood"};
    for (size_t i = 0; i < sizeof generic / sizeof *generic; i++) {
        CHECK_MSG(blas_core_is_generic(generic[i]), "%s is generic", generic[i]);
        expect(generic[i], &SKX, NULL, NULL, 1, "SkylakeX", BLAS_BY_OPENBLAS);
    }
    /* Generic kernels on a CPU without AVX are the right ones. */
    expect("Prescott", &NONE, NULL, NULL, 0, NULL, BLAS_BY_OPENBLAS);
    expect("Atom", &NONE, NULL, NULL, 0, NULL, BLAS_BY_OPENBLAS);
    /* A core OpenBLAS recognised is never overridden, even a weaker one than the CPU could run. */
    const char *known[] = {"Zen", "Haswell", "SkylakeX", "Cooperlake", "Sandybridge", "Bulldozer",
                           "Piledriver", "Steamroller", "Excavator"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        CHECK_MSG(!blas_core_is_generic(known[i]), "%s is not generic", known[i]);
        expect(known[i], &SPR, NULL, NULL, 0, NULL, BLAS_BY_OPENBLAS);
        expect(known[i], &AVX2, NULL, NULL, 0, NULL, BLAS_BY_OPENBLAS);
    }
    /* The user's choice stands, whatever it is. */
    expect("Prescott", &SPR, "Prescott", NULL, 0, NULL, BLAS_BY_USER);
    expect("Haswell", &SPR, "Cooperlake", NULL, 0, NULL, BLAS_BY_USER); /* OpenBLAS downgraded it */
    expect("Zen", &AVX2, "zen", NULL, 0, NULL, BLAS_BY_USER);
    /* After our restart: the marker names our choice, so it is ours, and never a second restart. */
    expect("SkylakeX", &SKX, "SkylakeX", "Prescott:SkylakeX", 0, NULL, BLAS_BY_US);
    expect("Prescott", &SKX, "SkylakeX", "Prescott:SkylakeX", 0, NULL, BLAS_BY_US); /* refused */
    /* A marker that no longer matches OPENBLAS_CORETYPE: the user changed it. */
    expect("Haswell", &SKX, "Haswell", "Prescott:SkylakeX", 0, NULL, BLAS_BY_USER);
    /* A marker without OPENBLAS_CORETYPE (someone removed it): no restart, no loop. */
    expect("Prescott", &SKX, NULL, "Prescott:SkylakeX", 0, NULL, BLAS_BY_OPENBLAS);
    expect("Prescott", &SKX, NULL, "garbage", 0, NULL, BLAS_BY_OPENBLAS);
    /* No OpenBLAS in the process: nothing to decide. */
    expect(NULL, &SKX, NULL, NULL, 0, NULL, BLAS_BY_NONE);
    expect("", &SKX, "SkylakeX", NULL, 0, NULL, BLAS_BY_NONE);
    CHECK(!blas_core_is_generic(NULL));

    blas_decision d = blas_decide("Prescott", &SKX, "SkylakeX", "Prescott:SkylakeX");
    CHECK(!strcmp(d.from, "Prescott") && !strcmp(d.wanted, "SkylakeX"));
    CHECK(blas_best_coretype(&NONE) == NULL);
    CHECK(!strcmp(blas_best_coretype(&SPR), "Cooperlake"));
}

static void descriptions(void) {
    char buf[160];
    blas_decision d = blas_decide("Zen", &AVX2, NULL, NULL);
    CHECK(!strcmp(blas_describe(buf, sizeof buf, "Zen", &d, NULL), "Zen (OpenBLAS's choice)"));
    d = blas_decide("SkylakeX", &SKX, "SkylakeX", "Prescott:SkylakeX");
    CHECK(!strcmp(blas_describe(buf, sizeof buf, "SkylakeX", &d, ""), "SkylakeX (corrected from Prescott)"));
    d = blas_decide("Prescott", &SKX, "SkylakeX", "Prescott:SkylakeX");
    blas_describe(buf, sizeof buf, "Prescott", &d, NULL);
    CHECK_MSG(!strcmp(buf, "Prescott (OpenBLAS ignored OPENBLAS_CORETYPE=SkylakeX, set to correct Prescott)"), "%s", buf);
    d = blas_decide("Haswell", &SKX, "haswell", NULL);
    CHECK(!strcmp(blas_describe(buf, sizeof buf, "Haswell", &d, NULL), "Haswell (OPENBLAS_CORETYPE=haswell)"));
    d = blas_decide(NULL, &SKX, NULL, NULL);
    CHECK(!strcmp(blas_describe(buf, sizeof buf, NULL, &d, NULL), "unknown (OpenBLAS not loaded)"));
    d = blas_decide("Prescott", &SKX, NULL, NULL);
    blas_describe(buf, sizeof buf, "Prescott", &d, "restarting with SkylakeX failed: x");
    CHECK_MSG(!strcmp(buf, "Prescott (OpenBLAS's choice; restarting with SkylakeX failed: x)"), "%s", buf);
    char tiny[8];
    blas_describe(tiny, sizeof tiny, "SkylakeX", &d, NULL);
    CHECK(strlen(tiny) == 7);

    CHECK(!strcmp(blas_supported_coretypes(buf, sizeof buf, &SPR),
                  "Cooperlake SkylakeX Haswell Zen Sandybridge Prescott"));
    CHECK(!strcmp(blas_supported_coretypes(buf, sizeof buf, &SKX), "SkylakeX Haswell Zen Sandybridge Prescott"));
    CHECK(!strcmp(blas_supported_coretypes(buf, sizeof buf, &AVX2), "Haswell Zen Sandybridge Prescott"));
    CHECK(!strcmp(blas_supported_coretypes(buf, sizeof buf, &AVX), "Sandybridge Prescott"));
    CHECK(!strcmp(blas_supported_coretypes(buf, sizeof buf, &NONE), "Prescott"));
    CHECK(!strcmp(blas_supported_coretypes(tiny, sizeof tiny, &SKX), "")); /* never a cut name */
}

/* Child: OpenBLAS is (or is made) loaded; on the first run OPENBLAS_CORETYPE=Prescott initialised
 * it and is then removed, so blas_kernels_ensure sees a fallback and must restart us. */
static int child(char **argv) {
    if (!blas_core_name()) dlopen("libopenblas.so.0", RTLD_NOW | RTLD_GLOBAL);
    const char *runs = getenv("TEST_BLAS_RUNS");
    int n = runs ? atoi(runs) : 0;
    if (n >= 3) {
        printf("LOOP\n");
        return 1;
    }
    char num[16];
    snprintf(num, sizeof num, "%d", n + 1);
    setenv("TEST_BLAS_RUNS", num, 1);
    if (!getenv(BLAS_MARKER_ENV)) unsetenv("OPENBLAS_CORETYPE");
    blas_kernels_ensure(argv);
    char buf[160];
    printf("runs=%d core=%s blas=%s\n", n + 1, blas_core_name() ? blas_core_name() : "none",
           blas_kernels_in_use(buf, sizeof buf));
    return 0;
}

static void restart(const char *self) {
    blas_cpu cpu = blas_cpu_detect();
    const char *best = blas_best_coretype(&cpu);
    if (!best) {
        printf("test_blas_kernels: restart check skipped (no AVX on this CPU)\n");
        return;
    }
    int fd[2];
    CHECK(pipe(fd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        setenv("OPENBLAS_CORETYPE", "Prescott", 1);
        unsetenv(BLAS_MARKER_ENV);
        unsetenv("TEST_BLAS_RUNS");
        execl(self, self, "--child", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char out[512] = "";
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd[0], out + got, sizeof out - 1 - got)) > 0) got += (size_t)r;
    out[got] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (strstr(out, "core=none")) {
        printf("test_blas_kernels: restart check skipped (OpenBLAS not found)\n");
        return;
    }
    char want[160];
    snprintf(want, sizeof want, "runs=2 core=%s blas=%s (corrected from Prescott)\n", best, best);
    /* OpenBLAS may downgrade a set (e.g. Cooperlake without its BF16 support): then it says so. */
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0 && !strcmp(out, want), "child said '%s', want '%s'", out, want);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--child")) return child(argv);
    decisions();
    descriptions();
    restart("/proc/self/exe");
    CHECK_DONE("test_blas_kernels");
}
