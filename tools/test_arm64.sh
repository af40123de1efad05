#!/usr/bin/env bash
# `make test-arm64`: the kernel byte-equality suite on aarch64, here, under qemu-user.
#  1. cross-compiles the library with Debian's aarch64-linux-gnu-g++ (NEON loops: aarch64 has no
#     other vector path, so the suite below runs them);
#  2. unpacks Debian's arm64 python3 (and the libraries it needs) into a sysroot, without
#     installing it: apt-get download against a private apt state, dpkg -x;
#  3. installs the aarch64 wheels of onnxruntime, numpy, onnx, ... into a folder beside it;
#  4. runs tests/test_kernel.py (both codecs, every output type, bytes against the reference
#     decoder; the NEON float16 conversion on all 2^32 float32 patterns; HyperonnxVectorPairs, which
#     shows the NEON loops ran) in that Python under qemu-aarch64 -L SYSROOT. qemu shows the guest the host's /proc/cpuinfo, on which
#     onnxruntime's aarch64 build crashes at start: -L makes the guest read SYSROOT/proc/cpuinfo,
#     an ARM one (Neoverse N1) written below.
# Installs g++-aarch64-linux-gnu and qemu-user with apt-get when they are missing (needs root).
# Everything else lives in build/arm64/ and is reused by the next run. Debian hosts only (the arm64
# packages come from the host's apt sources; Ubuntu keeps them on another mirror).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/build/arm64
HOST_PYTHON=${HOST_PYTHON:-$ROOT/.venv/bin/python}
start=$(date +%s)

missing=()
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
if ((${#missing[@]})); then
  echo "test-arm64: installing ${missing[*]}"
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

# 1. the library
cmake -S "$ROOT" -B "$OUT/lib" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DHYPERONNX_CUDA=OFF -DPython3_EXECUTABLE="$HOST_PYTHON" >/dev/null
cmake --build "$OUT/lib" -j2 >/dev/null
LIBRARY=$OUT/lib/custom_ops/libhyperonnx_ops.so

# 2. an aarch64 Python in a sysroot
SYSROOT=$OUT/sysroot
if [ ! -e "$SYSROOT/.ready" ]; then
  state=$OUT/apt
  rm -rf "$state" "$SYSROOT" && mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/empty" "$state/debs"
  apt_options=(-o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o Dir::State::Status=/dev/null
               -o APT::Architecture=arm64 -o APT::Architectures=arm64 -o "Dir::Etc::PreferencesParts=$state/empty"
               -o Acquire::Languages=none -o APT::Sandbox::User= -q)
  apt-get "${apt_options[@]}" update >/dev/null
  # the interpreter and the shared libraries it and onnxruntime load; not the packaging tools
  packages=$(apt-cache "${apt_options[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
               --no-breaks --no-replaces --no-enhances python3-minimal libpython3-stdlib libstdc++6 |
             grep -v '^[ <]' | grep -vE '^(perl.*|libperl.*|dpkg|tar|install-info|mailcap|mime-support|media-types|python3-minimal|libpython3-stdlib)$' | sort -u)
  (cd "$state/debs" && apt-get "${apt_options[@]}" download $packages >/dev/null)
  for deb in "$state"/debs/*.deb; do dpkg -x "$deb" "$SYSROOT"; done
  mkdir -p "$SYSROOT/proc"
  printf '%s\n' "processor	: 0" "BogoMIPS	: 50.00" \
    "Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" \
    "CPU implementer	: 0x41" "CPU architecture: 8" "CPU variant	: 0x3" "CPU part	: 0xd0c" "CPU revision	: 1" "" \
    > "$SYSROOT/proc/cpuinfo"
  touch "$SYSROOT/.ready"
fi
GUEST_PYTHON=$(cd "$SYSROOT" && ls usr/bin/python3.* | grep -E 'python3\.[0-9]+$' | head -1)
GUEST_VERSION=${GUEST_PYTHON#usr/bin/python}

# 3. the aarch64 wheels: the package's dependencies (pyproject.toml), onnxruntime, pytest
SITE=$OUT/site-$GUEST_VERSION
if [ ! -e "$SITE/.ready" ]; then
  requirements=$("$HOST_PYTHON" -c 'import tomllib; print(" ".join(tomllib.load(open("'"$ROOT"'/pyproject.toml", "rb"))["project"]["dependencies"]))')
  "$HOST_PYTHON" -m pip install -q --target "$SITE" --only-binary=:all: --implementation cp --python-version "$GUEST_VERSION" \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    $requirements onnxruntime pytest hypothesis 2>&1 | grep -v "is ignored" || true
  touch "$SITE/.ready"
fi

# 4. the suite under qemu
echo "test-arm64: $(aarch64-linux-gnu-g++ --version | head -1), Python $GUEST_VERSION (Debian arm64), onnxruntime $(ls "$SITE" | sed -n 's/^onnxruntime-\(.*\)\.dist-info$/\1/p') (aarch64 wheel), $(qemu-aarch64 --version | head -1)"
cd "$ROOT/tests"
set +e
PYTHONPATH="$SITE:$ROOT" HYPERONNX_LIBRARY="$LIBRARY" qemu-aarch64 -L "$SYSROOT" "$SYSROOT/$GUEST_PYTHON" \
  -m pytest -q -p no:cacheprovider -m "slow or not slow" test_kernel.py "$@"
status=$?
set -e
echo "test-arm64: exit $status, $(( $(date +%s) - start )) s in all"
exit $status
