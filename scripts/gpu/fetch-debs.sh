#!/usr/bin/env bash
# Run HERE (a Debian 12 machine with its package registry) before a GPU check: downloads the C
# libraries the CUDA build links (the GPU machine reaches no registry) into .gpu-debs/, which the
# device run carries. They are unpacked there with dpkg -x into a private folder, never into /.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-debs
cd .gpu-debs
apt-get download libcivetweb-dev libcivetweb1 libjansson-dev libjansson4 libturbojpeg0-dev libturbojpeg0 \
  libpng-dev libpng16-16 2>&1 | tail -n 3
ls -l
