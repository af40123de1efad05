// DecodeWeights, CPU decoder of the `trellis` codec (docs/FORMAT.md §8), used by the CPU kernel.
#pragma once

#include <cstdint>

#include "hyperonnx/decode_weights_format.h"
#include "hyperonnx/ort_api.h"

namespace hyperonnx {

// THE trellis decode primitive: weights [begin, end) of a validated node (seed and scales of the
// checked lengths, scales finite) as float32 into out[0, end - begin). Any range; AVX2 when the
// CPU has it, else scalar, the same bits. Kernels that fuse decoding with another op call this.
void TrellisDecodeFloats(const TrellisParams& p, const uint8_t* seed, const uint16_t* scales, uint64_t begin,
                         uint64_t end, float* out);

class TrellisCpuDecoder {
 public:
  explicit TrellisCpuDecoder(const TrellisParams& params) : params_(params) {}
  const TrellisParams& params() const { return params_; }
  // Rule 6's values: the index of the first scale that is Inf or NaN, or num_groups.
  uint64_t FirstNonFiniteScale(const uint16_t* scales) const;
  // Writes the node's num_elements values (dtype) to `out`, on onnxruntime's thread pool.
  void Decode(const Ort::KernelContext& context, const uint8_t* seed, const uint16_t* scales, void* out) const;

 private:
  TrellisParams params_;
};

}  // namespace hyperonnx
