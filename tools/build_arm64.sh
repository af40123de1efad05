#!/usr/bin/env bash
# `make build-arm64` (and CI): cross-compiles the custom-op library for aarch64, compile only, so an
# x86-only intrinsic or builtin outside its guard fails here rather than on a user's ARM board.
# Installs g++-aarch64-linux-gnu with apt-get when it is missing (root, or sudo without a password);
# the build lives in build/arm64-ci/. Warnings in the library's own sources fail it (-Werror).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/build/arm64-ci}
PYTHON=${PYTHON:-python3}
start=$(date +%s)
if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "build-arm64: aarch64-linux-gnu-g++ is missing and this is not root (apt-get install g++-aarch64-linux-gnu)" >&2; exit 1; }
    sudo=(sudo -n)
  fi
  echo "build-arm64: installing g++-aarch64-linux-gnu"
  export DEBIAN_FRONTEND=noninteractive
  # a fresh machine's package lists may be stale or absent: update once when the first try fails
  "${sudo[@]}" apt-get install -y -q g++-aarch64-linux-gnu >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q g++-aarch64-linux-gnu >/dev/null; }
fi
cmake -S "$ROOT" -B "$OUT" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DHYPERONNX_CUDA=OFF -DCMAKE_CXX_FLAGS=-Werror \
  -DPython3_EXECUTABLE="$(command -v "$PYTHON")" >/dev/null
cmake --build "$OUT" -j2 >/dev/null || { cmake --build "$OUT" -j1 2>&1 | grep -E -B2 -A6 'error' | head -80; exit 1; }
file_info=$(od -An -tx1 -j18 -N2 "$OUT/custom_ops/libhyperonnx_ops.so" | tr -d ' ')
[ "$file_info" = "b700" ] || { echo "build-arm64: the library is not an aarch64 ELF (e_machine $file_info)" >&2; exit 1; }
echo "build-arm64: $(aarch64-linux-gnu-g++ --version | head -1): libhyperonnx_ops.so for aarch64 in $(( $(date +%s) - start )) s"
