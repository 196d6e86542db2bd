#!/usr/bin/env bash
# scripts/loadtest.sh SCENARIO [da3-load options...]: runs one of the standard load scenarios
# against a running da3-server (docs/load-testing.md).
#   SCENARIO   idle | upload | lifecycle | generate
#   HOST, PORT the server (default 127.0.0.1:8000); SERVER_PID its pid for /proc figures
#   BUILD      where da3-load and tools/make_jpeg are (default build)
#   LOADTEST_CLIENT=websocat|da3-load  which client (default: websocat when installed, else da3-load)
# Standard sizes are the capacity figures of docs/load-testing.md; options after SCENARIO are
# passed to da3-load after them, so they override (e.g. `scripts/loadtest.sh idle -n 50`).
# websocat is not a Debian 12 package, so da3-load is the usual path; the websocat path checks
# replies only (no latencies) and was written from websocat's documentation, not run here.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
scenario=${1:-}
[[ $# -gt 0 ]] && shift
case $scenario in idle|upload|lifecycle|generate) ;; *)
  echo "usage: scripts/loadtest.sh idle|upload|lifecycle|generate [da3-load options]" >&2; exit 2 ;;
esac
client=${LOADTEST_CLIENT:-$(command -v websocat >/dev/null 2>&1 && echo websocat || echo da3-load)}
tmp=$(mktemp -d /tmp/da3-loadtest.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# A 640x480 JPEG (what the figures are stated for), or da3-load's own generated PNG.
image=()
if [[ -x $BUILD/tools/make_jpeg ]]; then
  "$BUILD/tools/make_jpeg" "$tmp/frame.jpg" 640 480 1 90
  image=(--image "$tmp/frame.jpg")
fi

if [[ $client == da3-load ]]; then
  pid=()
  [[ -n ${SERVER_PID:-} ]] && pid=(--pid "$SERVER_PID")
  case $scenario in
    idle)      std=(-n 1000 --interval 1 --duration 30) ;;
    upload)    std=(-n 100 -k 10 --binary "${image[@]}") ;;
    lifecycle) std=(-n 1000 -c 4 "${image[@]}") ;;
    generate)  std=(-n 20 -k 2 --process-res 140 --stagger-ms 5 "${image[@]}") ;;
  esac
  exec "$BUILD/da3-load" "$scenario" --host "$HOST" --port "$PORT" "${pid[@]}" "${std[@]}" "$@"
fi

# ---- websocat: the recipes of docs/load-testing.md, checked by their replies ----
base=http://$HOST:$PORT
ws=ws://$HOST:$PORT/ws/reconstruct
[[ ${#image[@]} -gt 0 ]] || { echo "the websocat path needs $BUILD/tools/make_jpeg for its image" >&2; exit 2; }
img=$tmp/frame.jpg
size=$(stat -c %s "$img")
errors=0
n=${N:-} ; k=${K:-}

create() { # prints a new session id (max_images $1)
  curl -sf -X POST "$base/ws/session/create?max_images=$1&process_res=140" | sed -n 's/.*"session_id": *"\([^"]*\)".*/\1/p'
}
upload_one() { # session id, expected image_count: one binary message from a redirected file
  local out
  out=$(timeout 60 websocat -b -B $((size + 1024)) -n --max-messages-rev 2 "$ws/$1" <"$img")
  # Replies: connected (image_count $2 - 1), then the ack counting this image.
  grep -q '"type": *"ack"' <<<"$out" && grep -Eq "\"image_count\": *$2[,}]" <<<"$out"
}

case $scenario in
  idle)
    n=${n:-100}; secs=${DURATION:-10}
    for i in $(seq 1 "$n"); do
      sid=$(create 1)
      # One ping a second on one socket, then wait for all replies (connected + one pong each).
      ( for _ in $(seq 1 "$secs"); do echo '{"type":"ping"}'; sleep 1; done ) |
        timeout $((secs + 30)) websocat -t --max-messages-rev $((secs + 1)) "$ws/$sid" >"$tmp/idle.$i" 2>&1 &
      echo "$sid" >>"$tmp/sids"
    done
    wait
    for i in $(seq 1 "$n"); do
      [[ $(grep -c '"pong"' "$tmp/idle.$i" || true) -eq $secs ]] || errors=$((errors + 1))
    done
    while read -r sid; do curl -sf -X DELETE "$base/ws/session/$sid" >/dev/null || errors=$((errors + 1)); done <"$tmp/sids"
    echo "idle (websocat): $n sockets x $secs pings, $errors sockets with missing pongs" ;;
  upload|lifecycle)
    [[ $scenario == upload ]] && { n=${n:-10}; k=${k:-10}; } || { n=${n:-100}; k=1; }
    start=$(date +%s.%N)
    for i in $(seq 1 "$n"); do
      sid=$(create "$k") || { errors=$((errors + 1)); continue; }
      for j in $(seq 1 "$k"); do upload_one "$sid" "$j" || errors=$((errors + 1)); done
      curl -sf -X DELETE "$base/ws/session/$sid" >/dev/null || errors=$((errors + 1))
    done
    echo "$scenario (websocat): $n sessions x $k images, $errors errors," \
      "$(awk -v n="$n" -v k="$k" -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", n * k / (e - s) }')" \
      "acks/s (one connection per image)" ;;
  generate)
    n=${n:-4}
    for i in $(seq 1 "$n"); do
      sid=$(create 2); upload_one "$sid" 1 && upload_one "$sid" 2 || errors=$((errors + 1))
      echo "$sid" >>"$tmp/sids"
    done
    i=0
    while read -r sid; do
      i=$((i + 1))
      # Progress messages until complete: a generous cap on replies, and a timeout.
      ( echo '{"type":"generate"}'; sleep 600 ) | timeout 600 websocat -t -B 67108864 --max-messages-rev 64 "$ws/$sid" |
        grep -m1 -E '"type": ?"(complete|error)"' | cut -c1-40 >"$tmp/gen.$i" &
    done <"$tmp/sids"
    wait
    for f in "$tmp"/gen.*; do grep -q complete "$f" || errors=$((errors + 1)); done
    while read -r sid; do curl -sf -X DELETE "$base/ws/session/$sid" >/dev/null || true; done <"$tmp/sids"
    echo "generate (websocat): $n sessions, $errors without a complete result" ;;
esac
echo "result: $errors errors"
[[ $errors -eq 0 ]]
