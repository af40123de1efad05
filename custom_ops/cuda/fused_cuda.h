// Fused operators, CUDA kernels (docs/FORMAT.md §8): DecodeMatMul, DecodeGemm and DecodeGather
// straight from the encoded weight, which stays on the GPU as its seed (and scales). Shared by
// the onnxruntime op (fused_cuda_op.cc) and the exported test entry points there. No CUDA or ORT
// headers here: the op's .cc file compiles with the host compiler only.
//
// Every value is decoded by the DecodeWeights kernels' device code (decode_device.cuh), so the
// weights are bit-identical to the reference decoder's; products are summed in float32 with FMA
// in an order of the kernels' own (FORMAT.md §8.2's bound). Kernels, by the activation's rows M:
// - M <= 8, W [K, N] (MatMul, Gemm transB=0): each thread decodes 8 consecutive columns of a row
//   in registers and accumulates them into M x 8 sums; a block covers 256 columns and a slice of
//   K (its 8 warps interleave the rows, so the seed is read once, front to back per row), then
//   adds its sums into Y with atomicAdd: the order of the slices' sums varies between runs;
// - M <= 8, W stored [N, K] (Gemm transB=1): a warp per output column, each lane 8 consecutive
//   weights of the row at a time, a warp reduction, deterministic;
// - M > 8: a 64-column x (16 or 64)-row output tile per block; each K step of 16 decodes the
//   16 x 64 weight tile into shared memory once (float32) and runs a register-blocked float32
//   FMA loop over it (no tensor cores: FORMAT.md §8.2's float32 bound rules out fp16 / tf32);
// - Gather: only the rows asked for, each decoded straight into the output.
// Per-tensor tables in shared memory, copied per block from a global copy made at upload: the
// lattice coordinates v(m) for b <= 13, the trellis values h(s) for L <= 13 (same operations,
// same bits); above that the arithmetic runs per value. Winding keeps its ring scales there.
//
// None of this has run on a GPU yet (the machine that wrote it has none): tests/test_cuda_fused.py
// and tools/gpu_check.sh are the checks to run first.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "hyperonnx/decode_weights_format.h"

namespace hyperonnx::cuda {

// Y [rows x cols] = alpha * (A [rows x depth] * W) + beta * C, W(k, n) = w[k * cols + n], or
// w[n * depth + k] when `trans`. C (or nullptr) broadcasts from [c_rows x c_cols] (each 1 or the
// full size), as Gemm's; MatMul is alpha = 1 without C. All pointers are device memory.
struct GemmArgs {
  const float* a = nullptr;
  uint64_t rows = 0, depth = 0, cols = 0;
  bool trans = false;
  float alpha = 1.0f, beta = 1.0f;
  const float* c = nullptr;
  int64_t c_rows = 1, c_cols = 1;
  float* y = nullptr;
};

// A fused node's weight on the GPU: the seed and scales copied once, the codec's table.
class DeviceWeight {
 public:
  // Copies a seed (and scales) that passed FORMAT.md's rules on the host (ValidateWinding /
  // ValidateLattice / ValidateTrellis, the lengths, rules 5-7 over every value) to the current
  // device, on `stream` (a cudaStream_t), and waits for it: the host buffers may go afterwards.
  // The weight must be float32 (rule 9). "" and *out set, or the CUDA error.
  static std::string Create(const WindingParams& p, const uint8_t* seed, void* stream,
                            std::unique_ptr<DeviceWeight>* out);
  static std::string Create(const LatticeParams& p, const uint8_t* seed, const uint16_t* scales, void* stream,
                            std::unique_ptr<DeviceWeight>* out);
  static std::string Create(const TrellisParams& p, const uint8_t* seed, const uint16_t* scales, void* stream,
                            std::unique_ptr<DeviceWeight>* out);
  ~DeviceWeight();
  DeviceWeight(const DeviceWeight&) = delete;
  DeviceWeight& operator=(const DeviceWeight&) = delete;

  uint64_t num_elements() const;
  // Launches the product on `stream`; g.depth * g.cols must be num_elements(). Asynchronous:
  // "" or the CUDA error of the launch.
  std::string Gemm(const GemmArgs& g, void* stream) const;
  // y[i * row_elements + j] = w[rows[i] * row_elements + j] for i < count, j < row_elements: the
  // decoded rows, bit for bit. `rows` (host memory, each checked < num_elements / row_elements)
  // travel in the launches' parameters, so the call needs no device buffer and may return before
  // the kernels ran.
  std::string Gather(const int64_t* rows, uint64_t count, uint64_t row_elements, float* y, void* stream) const;

  struct Impl;  // the codec's decoder and the device buffers (fused_cuda.cu)

 private:
  explicit DeviceWeight(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hyperonnx::cuda
