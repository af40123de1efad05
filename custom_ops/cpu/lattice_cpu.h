// DecodeWeights, CPU decoder of the `lattice` codec (docs/FORMAT.md §7), used by the CPU kernel.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "hyperonnx/decode_weights_format.h"
#include "hyperonnx/ort_api.h"

namespace hyperonnx {

class LatticeCpuDecoder {
 public:
  explicit LatticeCpuDecoder(const LatticeParams& params);
  const LatticeParams& params() const { return params_; }
  // Rule 6's values: the index of the first scale that is Inf or NaN, or num_scales.
  uint64_t FirstNonFiniteScale(const uint16_t* scales) const;
  // Writes the node's num_elements values (dtype) to `out`; the seed and scales are validated
  // (rules 4 and 6). Returns false when a step is >= N (rule 7: the output is then not valid).
  bool Decode(const Ort::KernelContext& context, const uint8_t* seed, const uint16_t* scales, void* out) const;

 private:
  LatticeParams params_;
  // (v(j), v(row(j))) for every step j < N, float32: the unscaled pair of step j. Shared by the
  // nodes of the same trajectory (bits, generator, alpha, beta).
  std::shared_ptr<const std::vector<float>> table_;
};

}  // namespace hyperonnx
