#!/usr/bin/env bash
# `make soak`: minutes of mixed load on a da3-server it starts itself (demo model, its own
# temporary data dir), a row of server figures every SOAK_INTERVAL s, then a verdict per series;
# exits 1 when a series grows or does not come back when idle (docs/load-testing.md, "Soak").
# Not part of `make test` / CI. The work is tests/soak/soak.py; every knob is an environment
# variable, listed with its default by `scripts/soak.sh --help`:
#   SOAK_SECONDS=600   load duration      SOAK_INTERVAL=10   seconds between rows
#   SOAK_FULL, SOAK_RECONNECT, SOAK_IDLE, SOAK_ABANDON, SOAK_NOREAD   clients of each kind
#   BUILD=build        where da3-server, da3-worker, da3-load and tools/make_jpeg are
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --help || ${1:-} == -h ]]; then
  exec /usr/bin/python3 - <<'PY'
import sys; sys.path.insert(0, "tests/soak"); import soak
print("scripts/soak.sh: environment knobs (default: meaning)")
for k, (d, what) in soak.KNOBS.items(): print(f"  SOAK_{k}={d}: {what}")
PY
fi
export BUILD=${BUILD:-build}
for b in da3-server da3-worker da3-load tools/make_jpeg; do
  [[ -x $BUILD/$b ]] || { echo "soak: $BUILD/$b is missing (make BUILD=$BUILD all)" >&2; exit 2; }
done
exec /usr/bin/python3 -u tests/soak/soak.py
