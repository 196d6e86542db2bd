#!/usr/bin/env bash
# Run ON THE GPU MACHINE (the device tool), from the repository root, carrying .gpu-debs/ (made by
# scripts/gpu/fetch-debs.sh). Builds the CUDA path against the PyTorch that machine has
# (TORCH_DIR = torch's own folder: include/ and lib/ of libtorch), then:
#   1. the golden fixtures on CUDA in bf16 (DA3's GPU numerics) and in float32 (DA3_CUDA_FP32=1);
#   2. the forward pass per view count for the Small, Large and Giant topologies (random weights)
#      at 504x378, with the backbone's matmul throughput and the GPU's peak memory;
#   3. the offline pipeline (images -> GLB) on CUDA.
# Results go to $OUT (the device tool brings them back). One command:
#   bash scripts/gpu/check.sh            (VIEWS=1,4,16 REPEATS=5 by default)
set -uo pipefail
OUT=${OUT:-/tmp/da3-gpu-out}
mkdir -p "$OUT"
VIEWS=${VIEWS:-1,4,16}
REPEATS=${REPEATS:-5}
B=build/cuda
exec > >(tee "$OUT/check.log") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)'
g++ --version | head -n 1

deps=/tmp/da3-cdeps
mkdir -p "$deps"
for f in .gpu-debs/*.deb; do dpkg -x "$f" "$deps"; done
TORCH_DIR=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export CPPFLAGS="-I$deps/usr/include -I$deps/usr/include/x86_64-linux-gnu"
export LDFLAGS="-L$deps/usr/lib/x86_64-linux-gnu -Wl,-rpath,$deps/usr/lib/x86_64-linux-gnu"
echo "== build (TORCH_DIR=$TORCH_DIR)"
# Warnings from a newer libtorch's API are reported, not fatal, on this first build.
if ! make -j"$(nproc)" BUILD=$B TORCH_DIR="$TORCH_DIR" WARN="-Wall -Wextra" \
    $B/da3-infer $B/tests/test_da3_golden $B/tools/make_jpeg >"$OUT/build.log" 2>&1; then
  grep -n "error" "$OUT/build.log" | head -n 40   # with -j the first error is not always last
  tail -n 30 "$OUT/build.log"
  echo "BUILD FAILED"
  exit 1
fi
grep -c "warning:" "$OUT/build.log" | sed 's/^/build warnings: /'

echo "== golden fixtures on cuda, bf16 backbone"
DA3_TEST_DEVICE=cuda $B/tests/test_da3_golden 2>&1 | grep -v "^  broken\|^  cuda on" | tee "$OUT/golden-bf16.txt" | tail -n 40
echo "== golden fixtures on cuda, float32"
DA3_TEST_DEVICE=cuda DA3_CUDA_FP32=1 $B/tests/test_da3_golden 2>&1 | grep "max rel\|ok\|FAIL" | tail -n 12

echo "== forward per view count (random weights), 504x378, median of $REPEATS"
for model in demo demo-large demo-giant; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$OUT/mem-$model.txt" &
  smi=$!
  timeout 240 $B/da3-infer --model $model --device cuda --bench-views "$VIEWS" --bench-hw 378x504 \
    --repeats "$REPEATS" 2>&1 | grep -v "^\[" | tail -n 5
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  echo "peak GPU memory used ($model, whole process incl. cache): $(sort -n "$OUT/mem-$model.txt" | tail -n 1) MiB"
done

echo "== offline pipeline on cuda: 10 x 640x480 JPEG -> GLB"
for i in $(seq 1 10); do $B/tools/make_jpeg "/tmp/f$i.jpg" 640 480 "$i" 90; done
$B/da3-infer --model demo --device cuda --images /tmp/f{1..10}.jpg --glb "$OUT/cuda.glb" --json "$OUT/cuda.json" 2>&1 | tail -n 2
echo "== done"
