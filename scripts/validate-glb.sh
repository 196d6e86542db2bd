#!/usr/bin/env bash
# Validates GLB files with the Khronos glTF validator (npm gltf-validator, pinned in
# tests/package.json). Usage: scripts/validate-glb.sh file.glb...
# Installs tests/node_modules with `npm ci --prefix tests` on first use, prints each file's
# errors and warnings, and exits non-zero if any file has an error.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

if [[ $# -eq 0 ]]; then
  echo "usage: $0 file.glb..." >&2
  exit 2
fi
if [[ ! -d $repo/tests/node_modules/gltf-validator ]]; then
  npm ci --prefix "$repo/tests" --no-audit --no-fund --loglevel=error >&2 \
    || { echo "validate-glb: npm ci --prefix tests failed" >&2; exit 2; }
fi
exec node "$repo/tests/tools/gltf_validate.js" "$@"
