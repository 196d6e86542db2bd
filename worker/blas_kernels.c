#include "worker/blas_kernels.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

const char *blas_best_coretype(const blas_cpu *cpu) {
    if (cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512dq)
        return cpu->avx512bf16 ? "Cooperlake" : "SkylakeX";
    if (cpu->avx2 && cpu->fma) return "Haswell";
    if (cpu->avx) return "Sandybridge";
    return NULL;
}

int blas_core_is_generic(const char *core) {
    /* OpenBLAS 0.3.21's x86-64 DYNAMIC_ARCH core names without AVX kernels. */
    static const char *generic[] = {"Unknown",  "Katmai",     "Coppermine", "Northwood", "Prescott",
                                    "Banias",   "Atom",       "Core2",      "Penryn",    "Dunnington",
                                    "Nehalem",  "Athlon",     "Opteron",    "Opteron_SSE3",
                                    "Barcelona", "Nano",      "Bobcat"};
    if (!core) return 0;
    for (size_t i = 0; i < sizeof generic / sizeof *generic; i++)
        if (!strcasecmp(core, generic[i])) return 1;
    return 0;
}

static void copy(char *dst, size_t len, const char *src, size_t n) {
    if (n >= len) n = len - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

blas_decision blas_decide(const char *core, const blas_cpu *cpu, const char *user_coretype,
                          const char *marker) {
    blas_decision d;
    memset(&d, 0, sizeof d);
    int user = user_coretype && *user_coretype, marked = marker && *marker;
    if (!core || !*core) return d; /* BLAS_BY_NONE */
    if (marked) {
        /* We restarted this process: "FROM:TO", valid while OPENBLAS_CORETYPE is still our TO. */
        const char *colon = strchr(marker, ':');
        if (colon && user && !strcasecmp(colon + 1, user_coretype)) {
            d.chooser = BLAS_BY_US;
            copy(d.from, sizeof d.from, marker, (size_t)(colon - marker));
            copy(d.wanted, sizeof d.wanted, colon + 1, strlen(colon + 1));
            return d;
        }
    }
    if (user) {
        d.chooser = BLAS_BY_USER;
        copy(d.wanted, sizeof d.wanted, user_coretype, strlen(user_coretype));
        return d;
    }
    d.chooser = BLAS_BY_OPENBLAS;
    const char *best = blas_best_coretype(cpu);
    if (!marked && best && blas_core_is_generic(core)) {
        d.reexec = 1;
        copy(d.coretype, sizeof d.coretype, best, strlen(best));
    }
    return d;
}

const char *blas_describe(char *buf, size_t len, const char *core, const blas_decision *d,
                          const char *note) {
    char why[160];
    switch (d->chooser) {
    case BLAS_BY_NONE: snprintf(why, sizeof why, "OpenBLAS not loaded"); break;
    case BLAS_BY_OPENBLAS: snprintf(why, sizeof why, "OpenBLAS's choice"); break;
    case BLAS_BY_USER: snprintf(why, sizeof why, "OPENBLAS_CORETYPE=%.40s", d->wanted); break;
    case BLAS_BY_US:
        if (core && !strcasecmp(core, d->wanted)) snprintf(why, sizeof why, "corrected from %s", d->from);
        else snprintf(why, sizeof why, "OpenBLAS ignored OPENBLAS_CORETYPE=%s, set to correct %s", d->wanted, d->from);
        break;
    }
    snprintf(buf, len, "%s (%s%s%s)", core && *core ? core : "unknown", why, note && *note ? "; " : "",
             note ? note : "");
    return buf;
}

const char *blas_supported_coretypes(char *buf, size_t len, const blas_cpu *cpu) {
    /* Zen's kernels are Haswell's AVX2/FMA ones with other blocking: any AVX2+FMA CPU runs them.
     * Prescott stands for the generic fallback (SSE3, every x86-64 CPU). */
    static const struct {
        const char *name;
        int need; /* 3: AVX-512 + BF16, 2: AVX-512, 1: AVX2+FMA, 0: AVX, -1: nothing */
    } sets[] = {{"Cooperlake", 3}, {"SkylakeX", 2}, {"Haswell", 1}, {"Zen", 1},
                {"Sandybridge", 0}, {"Prescott", -1}};
    int avx512 = cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512dq;
    int level = avx512 && cpu->avx512bf16 ? 3 : avx512 ? 2 : cpu->avx2 && cpu->fma ? 1 : cpu->avx ? 0 : -1;
    size_t used = 0;
    if (len) buf[0] = 0;
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) {
        if (sets[i].need > level) continue;
        int n = snprintf(buf + used, len > used ? len - used : 0, "%s%s", used ? " " : "", sets[i].name);
        if (n < 0 || used + (size_t)n >= len) {
            if (len) buf[used] = 0; /* never a cut name */
            break;
        }
        used += (size_t)n;
    }
    return buf;
}

blas_cpu blas_cpu_detect(void) {
    __builtin_cpu_init();
    blas_cpu c = {
        .avx = !!__builtin_cpu_supports("avx"),
        .avx2 = !!__builtin_cpu_supports("avx2"),
        .fma = !!__builtin_cpu_supports("fma"),
        .avx512f = !!__builtin_cpu_supports("avx512f"),
        .avx512bw = !!__builtin_cpu_supports("avx512bw"),
        .avx512vl = !!__builtin_cpu_supports("avx512vl"),
        .avx512dq = !!__builtin_cpu_supports("avx512dq"),
        .avx512bf16 = !!__builtin_cpu_supports("avx512bf16"),
    };
    return c;
}

const char *blas_core_name(void) {
    /* libtorch links OpenBLAS (through libblas.so.3), so its symbols are global in this process. */
    void *sym = dlsym(RTLD_DEFAULT, "openblas_get_corename");
    if (!sym) return NULL;
    char *(*corename)(void);
    memcpy(&corename, &sym, sizeof corename); /* object pointer -> function pointer, ISO-clean */
    return corename();
}

/* Why a needed re-exec did not happen (empty when none failed). */
static char ensure_note[160];

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

void blas_kernels_ensure(char **argv) {
    blas_cpu cpu = blas_cpu_detect();
    const char *core = blas_core_name();
    blas_decision d = blas_decide(core, &cpu, env("OPENBLAS_CORETYPE"), env(BLAS_MARKER_ENV));
    if (!d.reexec) return;
    char marker[80];
    snprintf(marker, sizeof marker, "%s:%s", core, d.coretype);
    if (setenv("OPENBLAS_CORETYPE", d.coretype, 1) == 0 && setenv(BLAS_MARKER_ENV, marker, 1) == 0) {
        fflush(NULL);
        execv("/proc/self/exe", argv);
    }
    int e = errno;
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(BLAS_MARKER_ENV);
    snprintf(ensure_note, sizeof ensure_note, "restarting with %s failed: %s", d.coretype, strerror(e));
}

const char *blas_kernels_in_use(char *buf, size_t len) {
    blas_cpu cpu = blas_cpu_detect();
    const char *core = blas_core_name();
    blas_decision d = blas_decide(core, &cpu, env("OPENBLAS_CORETYPE"), env(BLAS_MARKER_ENV));
    const char *note = ensure_note;
    char hint[120];
    if (!note[0] && d.reexec) { /* blas_kernels_ensure was not called */
        snprintf(hint, sizeof hint, "a generic fallback: OPENBLAS_CORETYPE=%s would be faster", d.coretype);
        note = hint;
    }
    return blas_describe(buf, len, core, &d, note);
}

const char *blas_cpu_model(char *buf, size_t len) {
    snprintf(buf, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return buf;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) || !colon) continue;
        colon++;
        while (*colon == ' ' || *colon == '\t') colon++;
        size_t n = strcspn(colon, "\n");
        while (n && colon[n - 1] == ' ') n--;
        if (n) copy(buf, len, colon, n);
        break;
    }
    fclose(f);
    return buf;
}
