// DecodeWeights, CPU decoder of the `lattice` codec (docs/FORMAT.md §7), used by the CPU kernel.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "codec_cpu.h"
#include "hyperonnx/decode_weights_format.h"

namespace hyperonnx {

// The lattice codec's decode primitive (codec_cpu.h).
class LatticeCpuDecoder final : public PairDecoder {
 public:
  explicit LatticeCpuDecoder(const LatticeParams& params);
  const LatticeParams& params() const { return params_; }
  // A step >= N (rule 7) returns true.
  bool DecodePairs(const uint8_t* seed, const uint16_t* scales, uint64_t begin, uint64_t end,
                   void* out) const override;
  uint64_t num_elements() const override { return params_.num_elements; }
  int64_t dtype() const override { return params_.dtype; }

 private:
  LatticeParams params_;
  // (v(j), v(row(j))) for every step j < N, float32: the unscaled pair of step j. Shared by the
  // nodes of the same trajectory (bits, generator, alpha, beta).
  std::shared_ptr<const std::vector<float>> table_;
};

}  // namespace hyperonnx
