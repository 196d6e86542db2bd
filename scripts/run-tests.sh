#!/usr/bin/env bash
# Runs every test: the C unit tests, then the integration tests that start the real server.
# Called by `make test` with BUILD set (build or build/san). Exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
export DA3_REPO=$PWD

if [[ ! -d tests/node_modules/gltf-validator ]]; then
  npm ci --prefix tests --no-audit --no-fund --loglevel=error >/dev/null || { echo "npm ci failed" >&2; exit 1; }
fi

if [[ "${SAN:-0}" == 1 ]]; then
  # libtorch allocates in ways LeakSanitizer reports as leaks at exit; leaks in our own code
  # are checked by the unit tests that do not load libtorch (see docs/testing.md).
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_odr_violation=0
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi

if [[ "${TSAN:-0}" == 1 ]]; then
  # Races in our code fail the run (the harness also fails a server whose log shows a report).
  # libtorch, OpenMP and OpenBLAS are not built with TSan: their internal synchronisation is
  # invisible to it, so reports from inside them are suppressed (tests/tsan.supp).
  export TSAN_OPTIONS="halt_on_error=1:exitcode=66:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"
fi

failed=()
start=$(date +%s)
for t in "$BUILD"/tests/test_*; do
  [[ -x $t ]] || continue
  name=$(basename "$t")
  if ! "$t"; then failed+=("$name"); fi
done

# The parsers' fuzz harnesses over their committed corpus plus fixed-seed mutations (make
# fuzz-smoke; tests/fuzz/README.md). Built by clang with its own sanitizers into build/fuzz, so
# not under SAN=1/TSAN=1, whose runs use other flags.
if [[ "${SAN:-0}" != 1 && "${TSAN:-0}" != 1 ]]; then
  echo "== fuzz-smoke"
  fuzz_start=$(date +%s)
  if ! make --no-print-directory fuzz-smoke; then failed+=("fuzz-smoke"); fi
  echo "fuzz-smoke took $(( $(date +%s) - fuzz_start )) s"
fi

# The golden fixtures once per OpenBLAS kernel set this CPU can run (da3-infer --blas-info lists
# them by CPUID; OPENBLAS_CORETYPE picks one): the run above used OpenBLAS's own choice. Only the
# six fixtures (test_da3_golden with folders as arguments), a few seconds per set; not under the
# sanitizers, whose runs are about our code, not OpenBLAS's.
if [[ "${SAN:-0}" != 1 && "${TSAN:-0}" != 1 && -x "$BUILD/tests/test_da3_golden" ]]; then
  sets=$("$BUILD/da3-infer" --blas-info 2>/dev/null | sed -n 's/^blas_supported: //p')
  passed=()
  for k in $sets; do
    # What OpenBLAS makes of the name (it may downgrade a set), asked cheaply through ctypes.
    in_use=$(OPENBLAS_CORETYPE=$k /usr/bin/python3 -c 'import ctypes
f = ctypes.CDLL("libopenblas.so.0").openblas_get_corename; f.restype = ctypes.c_char_p
print(f().decode())' 2>/dev/null || echo "?")
    echo "== test_da3_golden, OPENBLAS_CORETYPE=$k (OpenBLAS runs: $in_use)"
    # Every error figure when it fails, the verdict alone when it passes.
    if out=$(OPENBLAS_CORETYPE=$k "$BUILD/tests/test_da3_golden" tests/data/golden/*/ 2>&1); then
      passed+=("$k"); echo "${out##*$'\n'}"
    else echo "$out"; failed+=("test_da3_golden[OPENBLAS_CORETYPE=$k]"); fi
  done
  echo "golden fixtures passed under BLAS kernels: ${passed[*]:-none} (of: ${sets:-none found})"
fi

PY=/usr/bin/python3
for t in tests/integration/test_*.py; do
  [[ -f $t ]] || continue
  name=$(basename "$t")
  echo "== $name"
  if ! timeout 900 "$PY" -u "$t"; then failed+=("$name"); fi
done

echo "tests took $(( $(date +%s) - start )) s"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all tests passed"
