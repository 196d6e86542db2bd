#!/usr/bin/env bash
# Runs the libFuzzer harnesses built by `make fuzz-build` (tests/fuzz/README.md). Called by the
# Makefile; run from the repository root.
#   run.sh fuzz  SECONDS NAME...   each harness for SECONDS (-max_total_time), new inputs kept in
#                                  build/fuzz/corpus/NAME; prints executions and exec/s
#   run.sh smoke RUNS NAME...      each harness over its committed corpus plus RUNS mutations with
#                                  a fixed seed (the same inputs every time); fails on any report
# Crashing inputs land in build/fuzz/crashes/NAME-*; logs in build/fuzz/logs/NAME.log.
# One harness at a time, one process each (no -jobs/-fork): the machine is shared.
set -uo pipefail
mode=${1:?usage: run.sh fuzz|smoke SECONDS|RUNS NAME...}
amount=${2:?usage: run.sh fuzz|smoke SECONDS|RUNS NAME...}
shift 2
dir=build/fuzz
mkdir -p "$dir/logs" "$dir/crashes"
# Sanitizer reports are crashes; leaks are checked per input by libFuzzer (-detect_leaks=1).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Microseconds now (bash's EPOCHREALTIME, no external tools), and a difference as seconds.
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }
secs_since() { local d=$(( $(now_us) - $1 )); printf '%d.%d' $((d / 1000000)) $((d / 100000 % 10)); }

failed=()
total_start=$(now_us)
for name in "$@"; do
  bin=$dir/fuzz_$name seeds=tests/fuzz/corpus/$name log=$dir/logs/$name.log
  [[ -x $bin && -d $seeds ]] || { echo "fuzz_$name: missing $bin or $seeds" >&2; failed+=("$name"); continue; }
  # libFuzzer writes new inputs into its first folder: never the committed one.
  if [[ $mode == smoke ]]; then
    work=$dir/smoke/$name
    rm -rf "$work"
    opts=(-runs="$amount" -seed=1)
  else
    work=$dir/corpus/$name
    opts=(-max_total_time="$amount")
  fi
  mkdir -p "$work"
  start=$(now_us)
  # -timeout: an input running 25 s is a hang, reported as a crash; memory past libFuzzer's
  # default 2 GB limit (RSS or one malloc) is reported too.
  "$bin" "${opts[@]}" -timeout=25 -print_final_stats=1 \
    -artifact_prefix="$dir/crashes/$name-" "$work" "$seeds" >"$log" 2>&1
  rc=$?
  secs=$(secs_since "$start")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # libFuzzer's rate is whole executions per whole second: 0 for a run under a second.
  us=$(( $(now_us) - start ))
  [[ ${rate:-0} == 0 && -n $execs && $us -gt 0 ]] && rate=$(( execs * 1000000 / us ))
  if [[ $rc -eq 0 ]]; then verdict=ok
  else verdict="FAILED (exit $rc): $(grep -m1 -E 'ERROR|invariant failed|runtime error' "$log")"; failed+=("$name"); fi
  printf 'fuzz_%-15s %12s execs %8s exec/s %7s s  %s\n' "$name" "${execs:-?}" "${rate:-?}" "$secs" "$verdict"
done
label=$([[ $mode == smoke ]] && echo fuzz-smoke || echo fuzz)
echo "$label: $# harnesses in $(secs_since "$total_start") s"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "$label FAILED: ${failed[*]} (logs in $dir/logs, inputs in $dir/crashes; tests/fuzz/README.md)" >&2
  exit 1
fi
