#!/usr/bin/env bash
# Installs the Debian packages da3-server needs to build, run and test, when they are missing.
# Idempotent and quiet when everything is present. Usage: scripts/install-deps.sh [--test]
set -euo pipefail

# nodejs/npm: `make` copies the page's three.js out of its npm package (web/package.json);
# python3 + websockets + tqdm: the Python client (clients/python), which `make run` users get too.
build_pkgs=(build-essential pkg-config libcivetweb-dev libjansson-dev libssl-dev libpng-dev libturbojpeg0-dev
            libtorch-dev libopenblas0-pthread libheif-dev libwebp-dev nodejs npm
            python3 python3-websockets python3-tqdm)
# Tests drive the real server with Python's websockets, validate GLBs with the Khronos validator
# (node), parse /metrics with prometheus_client, drive the web page in a real Chromium, and put a
# real nginx in front for proxy tests. The Python client (clients/python) needs tqdm and, for
# --video, OpenCV; heif-enc (libheif-examples) and cwebp (webp) make the HEIC/WebP test images;
# clang + its libFuzzer runtime build the fuzz harnesses (tests/fuzz, `make fuzz`).
test_pkgs=(python3 python3-websockets python3-prometheus-client python3-tqdm python3-opencv
           nginx-light curl openssl chromium fonts-liberation libheif-examples webp clang libclang-rt-14-dev)

want=("${build_pkgs[@]}")
[[ "${1:-}" == "--test" ]] && want+=("${test_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  # nodejs/npm may come from elsewhere (e.g. NodeSource); a working binary is enough.
  if [[ $p == nodejs ]] && command -v node >/dev/null; then continue; fi
  if [[ $p == npm ]] && command -v npm >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || true
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
