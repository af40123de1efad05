#!/usr/bin/env bash
# The CUDA kernels' checks on a GPU machine, in one go: build the library with nvcc, run the
# cuda-marked tests (DecodeWeights, the fused operators) and the CPU kernel tests against that
# library, then the benchmark (decode rows, fused rows against cuBLAS fp16).
# Each step's log goes to OUTDIR; a failing step does not stop the later ones; the exit status is
# the number of failed steps.
#
#   tools/gpu_check.sh OUTDIR            from the repository root
# Environment: ARCHS (CMake CUDA architectures, default 90; more builds after a space, e.g.
#   "90 75-virtual": those only run the cuda tests, "75-virtual" through the driver's PTX JIT and
#   the pre-sm_80 code), JOBS (default: all cores),
#   HYPERONNX_ORT_INCLUDE_DIR (ONNX Runtime headers, for machines without network),
#   HYPERONNX_CUDA_FIXTURES, HYPERONNX_CUDA_FUSED_FIXTURES (tests/test_cuda.py's and
#   tests/test_cuda_fused.py's cases, where hyperonnx cannot be imported: write them elsewhere with
#   `python tests/test_cuda.py --write-fixtures FILE`, idem test_cuda_fused.py),
#   BENCH_ARGS (arguments of `hyperonnx bench cuda`; "skip" skips it), SANITIZE=1 (also run
#   the cuda tests under compute-sanitizer: memcheck over both files, racecheck over the fused
#   products, whose kernels share tiles and sums through shared memory).
set -u
out=${1:?usage: tools/gpu_check.sh OUTDIR}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-/tmp/hyperonnx-gpu-build}
python=${PYTHON:-python3}
failed=0
step() {  # step NAME COMMAND...: runs it, logs to OUTDIR/NAME.log, prints a one-line verdict
  local name=$1; shift
  local t0=$SECONDS
  if "$@" >"$out/$name.log" 2>&1; then echo "ok    $name ($((SECONDS - t0)) s)"
  else echo "FAIL  $name ($((SECONDS - t0)) s): tail of $name.log"; tail -n 25 "$out/$name.log"; failed=$((failed + 1)); fi
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  nvcc --version | tail -n 2
  "$python" -c 'import sys, numpy, torch; print(sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__, torch.version.cuda)'
  "$python" -c 'import onnx, onnxruntime as o; print("onnx", onnx.__version__, "onnxruntime", o.__version__, o.get_available_providers())'
  "$python" -c 'import cupy; print("cupy", cupy.__version__)'
  "$python" -c 'import hyperonnx; print("hyperonnx imports")'
} 2>&1 | head -n 20

build_library() {  # build_library DIR ARCHS
  cmake -S "$root" -B "$1" -DHYPERONNX_CUDA=ON -DHYPERONNX_CUDA_ARCHITECTURES="$2" \
        -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$(command -v "$python")" &&
    cmake --build "$1" -j "${JOBS:-$(nproc)}"
}
read -r -a arch_sets <<<"${ARCHS:-90}"
step build build_library "$build" "${arch_sets[0]}"
export HYPERONNX_LIBRARY=$(find "$build" -name libhyperonnx_ops.so | head -n 1)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
cd "$root/tests" || exit 1
step test_cuda "$python" -m pytest -q -rs -p no:cacheprovider test_cuda.py
step test_trellis_cuda "$python" -m pytest -q -rs -p no:cacheprovider -m cuda test_trellis.py
step test_cuda_fused "$python" -m pytest -q -rs -p no:cacheprovider test_cuda_fused.py
for archs in "${arch_sets[@]:1}"; do
  tag=${archs//[^0-9a-z]/_}
  step "build_$tag" build_library "$build-$tag" "$archs"
  step "test_cuda_$tag" env HYPERONNX_LIBRARY="$(find "$build-$tag" -name libhyperonnx_ops.so | head -n 1)" \
       "$python" -m pytest -q -rs -p no:cacheprovider test_cuda.py
done
step test_kernel "$python" -m pytest -q -rs -p no:cacheprovider test_kernel.py test_kernel_fuzz.py test_runtime.py
cd "$root" || exit 1
if [ "${BENCH_ARGS:-}" != skip ]; then
  step bench env PYTHONUNBUFFERED=1 "$python" -m hyperonnx.cli bench cuda --json "$out/bench.json" ${BENCH_ARGS:-}
  cat "$out/bench.log"
fi
if [ "${SANITIZE:-0}" = 1 ]; then  # last: slow under the sanitizer, bounded
  cd "$root/tests" || exit 1
  step sanitize timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$python" -m pytest -q -x \
       -p no:cacheprovider test_cuda.py -k "not bytes_equal or direct"
  step sanitize_fused timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 "$python" -m pytest -q -x \
       -p no:cacheprovider test_cuda_fused.py
  step racecheck_fused timeout 300 compute-sanitizer --tool racecheck --error-exitcode 9 "$python" -m pytest -q -x \
       -p no:cacheprovider test_cuda_fused.py -k "products or gather_rows"
fi
exit $failed
