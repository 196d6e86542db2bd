#!/usr/bin/env bash
# `make bench`: prints speed figures (nothing is asserted). Machines here are noisy: compare
# numbers from one run only.
#   BENCH_VIEWS=1,4,16   view counts for the forward-pass benchmark (default 1,4)
#   BENCH_STREAM_VIEWS=16,64,256  session sizes for streaming vs plain generate ("" skips it; the
#                        default takes ~15 min on 2 cores); BENCH_STREAM_RES=504 its resolution
#   BENCH_REPEATS=3      generate runs per measurement after one warm-up
#   (also: what TLS in the front costs, tests/bench/bench_tls.py, ~20 s)
#   BENCH_SEED=1         also measure the seed's Python server (../shared/tools/seed_server, set up
#                        with its setup.sh) side by side, both on the seed's DA3-Small random weights
#   DA3_REF=DIR          also time the DA3 reference network in PyTorch (a local, uncommitted copy
#                        of its code, laid out as for ../shared/tools/da3_golden.py) on the same
#                        weights and input size as da3-infer, and print the ratio per view count
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
VIEWS=${BENCH_VIEWS:-1,4}
REPEATS=${BENCH_REPEATS:-3}
tmp=$(mktemp -d /tmp/da3-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

# The CPU and the OpenBLAS kernels (and who chose them: OpenBLAS, OPENBLAS_CORETYPE, or our
# correction of a generic fallback, worker/blas_kernels.h) go next to every figure below.
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
blas=$("$BUILD/da3-infer" --blas-info 2>/dev/null | sed -n 's/^blas: //p')
echo "== machine: $(nproc) cores, $cpu; da3-infer BLAS kernels: $blas"
# Python's torch (the reference network, the seed server) runs on OpenBLAS's own choice.
py_blas() {
  local core
  core=$(/usr/bin/python3 -c 'import ctypes, torch
f = ctypes.CDLL("libopenblas.so.0").openblas_get_corename; f.restype = ctypes.c_char_p
print(f().decode())' 2>/dev/null) || core=unknown
  if [[ -n "${OPENBLAS_CORETYPE:-}" ]]; then echo "$core (OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE)"
  else echo "$core (OpenBLAS's choice, not corrected)"; fi
}
imgs=()
for i in $(seq 1 10); do
  "$BUILD/tools/make_jpeg" "$tmp/frame_$i.jpg" 640 480 "$i" 90
  imgs+=("$tmp/frame_$i.jpg")
done

model=demo
seed=../shared/tools/seed_server
if [[ "${BENCH_SEED:-0}" == 1 ]]; then
  /usr/bin/python3 "$seed/run_seed_server.py" --save-weights "$tmp/seedw" >/dev/null 2>&1
  model="$tmp/seedw"
  echo "== both servers use the seed's DA3-Small random weights ($model)"
fi

# The forward pass is timed once per precision: on the demo weights, or, with DA3_REF, on the
# weights the reference network is timed with (same topology), followed by the ratios.
fwd_model=demo
if [[ -n "${DA3_REF:-}" ]]; then
  echo "== DA3 reference (PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), CPU fp32), 504x378; CPU $cpu; BLAS kernels $(py_blas)"
  /usr/bin/python3 tests/bench/reference_forward.py --ref "$DA3_REF" --weights "$tmp/refw" \
    --views "$VIEWS" --repeats "$REPEATS" 2>/dev/null | grep '^reference' | tee "$tmp/ref.txt"
  fwd_model="$tmp/refw"
fi
echo "== model forward, DA3-Small topology ($fwd_model), 504x378 per view; CPU $cpu; BLAS kernels $blas"
for prec in fp32 bf16; do
  echo "-- precision $prec"
  "$BUILD/da3-infer" --model "$fwd_model" --precision "$prec" --bench-views "$VIEWS" --bench-hw 378x504 \
    --repeats "$REPEATS" 2>/dev/null | grep '^bench' | tee "$tmp/ours-$prec.txt"
done
if [[ -n "${DA3_REF:-}" ]]; then
  echo "== speed-up over the reference (reference median / da3-infer median, same weights and size)"
  for prec in fp32 bf16; do
    # Lines pair up by view count.
    paste -d' ' "$tmp/ref.txt" <(grep '^bench views' "$tmp/ours-$prec.txt") | awk -v prec="$prec" '{
      for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "views") v = kv[2];
        if (kv[1] == "median_ms") { if (r == "") r = kv[2]; else o = kv[2] } }
      printf "views=%s reference_ms=%s da3_infer_%s_ms=%s speedup=%.2fx\n", v, r, prec, o, r / o; r = "" }'
  done
fi

echo "== offline pipeline (da3-infer), 10 x 640x480 JPEG, process_res 504; CPU $cpu; BLAS kernels $blas"
"$BUILD/da3-infer" --model "$model" --images "${imgs[@]}" --glb "$tmp/offline.glb" --json "$tmp/offline.json"

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for prec in fp32 bf16; do
  "$BUILD/da3-server" --port "$port" --workers 1 --model "$model" --precision "$prec" --data-dir "$tmp/data" --log-level warn &
  front=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/status" | grep -q '"ready":1' && break
    sleep 0.1
  done
  worker_blas=$(curl -sf "http://127.0.0.1:$port/status" | /usr/bin/python3 -c 'import json, sys
print(", ".join(w.get("blas", "unknown") for w in json.load(sys.stdin)["workers"]["list"]))' 2>/dev/null || echo unknown)
  echo "== server end to end (1 CPU worker, --precision $prec), 10 x 640x480 JPEG, process_res 504; CPU $cpu; worker BLAS kernels $worker_blas"
  /usr/bin/python3 tests/bench/bench_server.py "$port" "${imgs[@]}" --repeats "$REPEATS" --pid "$front"
  kill "$front"; wait "$front" 2>/dev/null || true
done

if [[ "${BENCH_SEED:-0}" == 1 ]]; then
  echo "== seed Python server (same protocol, same weights), for comparison; CPU $cpu; BLAS kernels $(py_blas)"
  /usr/bin/python3 "$seed/run_seed_server.py" "$((port + 1))" --preload --weights "$model" >"$tmp/seed.log" 2>&1 &
  seedpid=$!
  for _ in $(seq 1 1200); do curl -sf "http://127.0.0.1:$((port + 1))/ws/sessions" >/dev/null && break; sleep 0.5; done
  /usr/bin/python3 tests/bench/bench_server.py "$((port + 1))" "${imgs[@]}" --repeats 1 --uploads 50 --pid "$seedpid"
  kill "$seedpid"
fi

# What TLS in the front costs (tests/bench/bench_tls.py: handshakes, idle memory, uploads).
echo "== TLS (--tls-cert) against plain, same build; CPU $cpu"
/usr/bin/python3 tests/bench/bench_tls.py "$BUILD" || echo "(bench_tls failed)"

# Streaming vs plain generate as a session grows (issue 10's figures). BENCH_STREAM_VIEWS sizes
# (chunk ends: multiples of chunk_size - overlap = 8), BENCH_STREAM_RES the resolution; "" skips.
STREAM_VIEWS=${BENCH_STREAM_VIEWS-16,64,256}
if [[ -n "$STREAM_VIEWS" ]]; then
  most=$(tr ',' '\n' <<<"$STREAM_VIEWS" | sort -n | tail -1)
  mkdir -p "$tmp/stream"
  for i in $(seq 1 "$most"); do "$BUILD/tools/make_jpeg" "$tmp/stream/$(printf %04d "$i").jpg" 640 480 "$((i + 100))" 90; done
  "$BUILD/da3-server" --port "$port" --workers 1 --model "$model" --data-dir "$tmp/data-stream" --log-level warn \
    --max-images "$((most + 8))" --client-msg-rate 0 &
  front=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/status" | grep -q '"ready":1' && break; sleep 0.1; done
  wpid=$(curl -sf "http://127.0.0.1:$port/status" | /usr/bin/python3 -c 'import json, sys
print(json.load(sys.stdin)["workers"]["list"][0]["pid"])')
  echo "== streaming vs plain generate, demo model (DA3-Small size), 640x480 JPEG at process_res ${BENCH_STREAM_RES:-504}; CPU $cpu; worker BLAS kernels $(curl -sf "http://127.0.0.1:$port/status" | /usr/bin/python3 -c 'import json, sys
print(json.load(sys.stdin)["workers"]["list"][0].get("blas", "unknown"))')"
  /usr/bin/python3 tests/bench/bench_stream.py "http://127.0.0.1:$port" "$wpid" "$tmp/stream" "$STREAM_VIEWS" \
    --res "${BENCH_STREAM_RES:-504}" || echo "(bench_stream failed)"
  kill "$front"; wait "$front" 2>/dev/null || true
fi
