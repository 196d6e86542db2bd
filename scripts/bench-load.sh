#!/usr/bin/env bash
# `make bench-load`: the capacity figures of docs/load-testing.md, printed, not asserted (machines
# here are noisy; compare figures from one run only). Starts its own da3-server on a free port
# with the demo model and 2 workers, then runs da3-load:
#   1. 1,000 concurrent WebSockets held, a ping a second each: ping p99
#   2. 100 sessions at once x 10 images (640x480 JPEG, binary frames): errors, image acks/s, over
#      protocol v1 and v2, beside the cost of the upload check alone (its floor on this CPU)
#   3. 1,000 session lifecycles (after 50 to warm up): fds and RSS before/after
#   4. 20 sessions generating at once over 2 workers (process_res 140): all complete, wait times
#   BENCH_LOAD_IDLE_S=30   how long the 1,000 sockets are held
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
IDLE_S=${BENCH_LOAD_IDLE_S:-30}
tmp=$(mktemp -d /tmp/da3-bench-load.XXXXXX)
front=
cleanup() {
  if [[ -n $front ]]; then kill "$front" 2>/dev/null || true; wait "$front" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$BUILD/tools/make_jpeg" "$tmp/frame.jpg" 640 480 1 90
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# 1,000 idle sockets need 1,000 sessions; everything else is the default configuration.
"$BUILD/da3-server" --host 127.0.0.1 --port "$port" --workers 2 --model demo --data-dir "$tmp/data" \
  --web-dir web --max-sessions 1200 --max-sessions-per-client 0 --max-ws-per-client 0 --client-msg-rate 0 \
  --log-level warn >"$tmp/server.log" 2>&1 &
front=$!
for _ in $(seq 1 1200); do
  curl -sf "http://127.0.0.1:$port/status" | grep -q '"ready":2' && break
  kill -0 "$front" 2>/dev/null || { cat "$tmp/server.log"; exit 1; }
  sleep 0.1
done
echo "== da3-server pid $front on port $port: demo model (untrained), 2 workers, --max-sessions 1200, per-client limits off (one load generator is one address)"

load() { "$BUILD/da3-load" "$@" --port "$port" --pid "$front" || echo "(da3-load exited $?)"; }
echo
echo "== 1. 1,000 concurrent WebSockets, one ping per second each, held ${IDLE_S} s (target: ping p99 < 20 ms)"
load idle -n 1000 --interval 1 --duration "$IDLE_S"
echo
echo "== 2. 100 sessions at once x 10 images, 640x480 JPEG ($(stat -c %s "$tmp/frame.jpg") bytes), binary frames (target: 0 errors, >= 2,000 image acks/s)"
"$BUILD/tools/validate_cost" "$tmp/frame.jpg" 300 | sed 's/^/   /'
load upload -n 100 -k 10 --binary --image "$tmp/frame.jpg"
echo
echo "== 2b. the same over protocol v2 (init on /ws/reconstruct instead of the HTTP create)"
load upload -n 100 -k 10 --binary --protocol v2 --image "$tmp/frame.jpg"
echo
echo "== 3. 1,000 session lifecycles (create, connect, upload 1, delete), 4 at once, after 50 to warm up (target: fds back, RSS within 10 %)"
"$BUILD/da3-load" lifecycle -n 50 -c 4 --image "$tmp/frame.jpg" --port "$port" >/dev/null || echo "(warm-up failed)"
load lifecycle -n 1000 -c 4 --image "$tmp/frame.jpg"
echo
echo "== 4. 20 sessions x 2 images generating at once over 2 workers, process_res 140 (target: all complete, FIFO, no session waits beyond its share)"
load generate -n 20 -k 2 --process-res 140 --stagger-ms 5 --image "$tmp/frame.jpg"
echo
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
