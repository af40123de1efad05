#!/usr/bin/env bash
# Portable Linux wheels with cibuildwheel (config: [tool.cibuildwheel] in pyproject.toml), in
# manylinux_2_28 containers (docker or podman needed), x86_64 and aarch64 (aarch64 on an x86 host
# needs qemu binfmt for docker; a native arm64 runner is faster):
#   tools/build_wheels.sh cpu    the CPU kernel only: wheelhouse/cpu/ (what PyPI gets)
#   tools/build_wheels.sh cuda   plus the CUDA kernel (static cudart: the wheels still load and
#                                run on machines without a GPU): wheelhouse/cuda/, for an index of
#                                its own; nvcc comes from NVIDIA's RHEL 8 repository in the container
# Extra arguments go to cibuildwheel (e.g. --archs x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-cpu}
shift || true
python=$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )
"$python" -m pip install -q "cibuildwheel>=2.22"
case $variant in
  cpu) ;;
  cuda)
    export CIBW_CONFIG_SETTINGS_LINUX="cmake.define.HYPERONNX_CUDA=ON"
    # 12.8: the newest nvcc that still builds sm_72 and already builds sm_100/120 (custom_ops/cuda)
    export CIBW_BEFORE_ALL_LINUX='dnf install -y dnf-plugins-core &&
      dnf config-manager --add-repo https://developer.download.nvidia.com/compute/cuda/repos/rhel8/$(uname -m | sed s/aarch64/sbsa/)/cuda-rhel8.repo &&
      dnf install -y cuda-nvcc-12-8 cuda-cudart-devel-12-8'
    export CIBW_ENVIRONMENT_LINUX="PATH=/usr/local/cuda-12.8/bin:\$PATH CUDACXX=/usr/local/cuda-12.8/bin/nvcc HYPERONNX_GLIBC_FLOOR=2.28 HYPERONNX_GLIBCXX_FLOOR=3.4.24"
    export CIBW_REPAIR_WHEEL_COMMAND_LINUX="auditwheel repair --exclude 'libcuda.so.*' -w {dest_dir} {wheel}"
    ;;
  *) echo "usage: $0 cpu|cuda [cibuildwheel arguments]" >&2; exit 2 ;;
esac
"$python" -m cibuildwheel --platform linux --output-dir "wheelhouse/$variant" "$@"
