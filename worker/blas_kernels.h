/* Which OpenBLAS kernels this process runs, and the correction of OpenBLAS's generic fallback.
 *
 * OpenBLAS (Debian's libtorch uses 0.3.21, built DYNAMIC_ARCH) picks its kernels from the CPU's
 * model number when it loads. A CPU newer than the library (e.g. Intel Sapphire Rapids for
 * 0.3.21) gets the generic "Prescott" SSE3 kernels: 3x slower there than the AVX-512 ones the
 * CPU can run. OPENBLAS_CORETYPE overrides the choice, but only if it is in the environment when
 * the library initialises, i.e. when the process starts, so a process that finds itself on a
 * fallback re-executes itself once with the variable set (blas_kernels_ensure). A core OpenBLAS
 * recognised is never overridden, nor a user's own OPENBLAS_CORETYPE.
 *
 * The decision (blas_decide) and the description (blas_describe) are pure functions, tested in
 * tests/unit/test_blas_kernels.c; the rest reads the CPU and the loaded library. */
#ifndef DA3_WORKER_BLAS_KERNELS_H
#define DA3_WORKER_BLAS_KERNELS_H

#include <stddef.h>

/* Set with OPENBLAS_CORETYPE by a correction, as "FROM:TO" (OpenBLAS's fallback, our choice): it
 * tells the re-executed process who chose, and stops a second re-exec. */
#define BLAS_MARKER_ENV "DA3_BLAS_CORRECTED"

/* The CPU features (usable: CPUID and the OS's register support) that decide the kernel set. */
typedef struct {
    int avx, avx2, fma, avx512f, avx512bw, avx512vl, avx512dq, avx512bf16;
} blas_cpu;

/* Who chose the kernels in use. */
typedef enum {
    BLAS_BY_NONE = 0, /* OpenBLAS is not loaded (another BLAS, or none): nothing to choose */
    BLAS_BY_OPENBLAS, /* OpenBLAS's own detection */
    BLAS_BY_USER,     /* the user's OPENBLAS_CORETYPE */
    BLAS_BY_US        /* our correction of a generic fallback (from = OpenBLAS's pick) */
} blas_chooser;

typedef struct {
    int reexec;          /* 1: restart the process with OPENBLAS_CORETYPE=coretype (+ marker) */
    char coretype[32];   /* the kernel set to restart with, when reexec */
    blas_chooser chooser; /* who chose the kernels running now */
    char from[32];       /* BLAS_BY_US: the fallback OpenBLAS had picked */
    char wanted[32];     /* BLAS_BY_US / BLAS_BY_USER: the kernel set that was asked for */
} blas_decision;

/* The best kernel set the CPU can run: "Cooperlake", "SkylakeX", "Haswell", "Sandybridge", or
 * NULL (no AVX: the generic kernels are the right ones). */
const char *blas_best_coretype(const blas_cpu *cpu);

/* 1 if core is one of OpenBLAS's generic pre-AVX kernel sets (Prescott, Core2, Nehalem, Atom,
 * Katmai, ... or "Unknown"), compared without case; 0 otherwise, NULL included. */
int blas_core_is_generic(const char *core);

/* Pure decision from OpenBLAS's core name (NULL: OpenBLAS not loaded), the CPU, the environment's
 * OPENBLAS_CORETYPE and BLAS_MARKER_ENV (NULL or "" when unset). Never asks for a re-exec when
 * the user chose, when OpenBLAS recognised the CPU, or when the marker is present (no loops). */
blas_decision blas_decide(const char *core, const blas_cpu *cpu, const char *user_coretype,
                          const char *marker);

/* Pure: one line for logs and /status, e.g. "Zen (OpenBLAS's choice)", "SkylakeX (corrected
 * from Prescott)", "Haswell (OPENBLAS_CORETYPE=haswell)"; note (NULL or "") is appended in the
 * parentheses (e.g. a failed re-exec). Returns buf. */
const char *blas_describe(char *buf, size_t len, const char *core, const blas_decision *d,
                          const char *note);

/* Pure: the kernel sets cpu can run that are worth testing, best first, space-separated
 * ("Haswell Zen Sandybridge Prescott" on an AVX2 machine). Returns buf. */
const char *blas_supported_coretypes(char *buf, size_t len, const blas_cpu *cpu);

/* This CPU's usable features (__builtin_cpu_supports). */
blas_cpu blas_cpu_detect(void);

/* OpenBLAS's core name in this process ("Zen"), or NULL if OpenBLAS is not loaded. */
const char *blas_core_name(void);

/* First thing in main: if OpenBLAS fell back to generic kernels on a CPU that can run better
 * ones, re-executes /proc/self/exe with argv, OPENBLAS_CORETYPE and BLAS_MARKER_ENV set (does not
 * return). Returns otherwise, or when exec failed (the reason goes into blas_kernels_in_use). */
void blas_kernels_ensure(char **argv);

/* The CPU's model name from /proc/cpuinfo ("AMD EPYC"), "unknown" if there is none. Returns buf. */
const char *blas_cpu_model(char *buf, size_t len);

/* The kernels in use, described as blas_describe does (after blas_kernels_ensure). Returns buf. */
const char *blas_kernels_in_use(char *buf, size_t len);

#endif
