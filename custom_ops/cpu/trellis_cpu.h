// DecodeWeights, CPU decoder of the `trellis` codec (docs/FORMAT.md §9), used by the CPU kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "codec_cpu.h"
#include "hyperonnx/decode_weights_format.h"

namespace hyperonnx {

// The trellis decoding itself: weights [begin, end) of a validated node (seed and scales of the
// checked lengths; end <= num_groups * G, the last group's padding included) as float32 into
// out[0, end - begin). Any range; AVX2 when the CPU has it, else scalar, the same bits.
void TrellisDecodeFloats(const TrellisParams& p, const uint8_t* seed, const uint16_t* scales, uint64_t begin,
                         uint64_t end, float* out);

// The trellis codec's decode primitive (codec_cpu.h): TrellisDecodeFloats, converted to the
// output dtype. Every window is valid: DecodePairs never reports an index rule.
class TrellisCpuDecoder final : public PairDecoder {
 public:
  explicit TrellisCpuDecoder(const TrellisParams& params) : params_(params) {}
  const TrellisParams& params() const { return params_; }
  bool DecodePairs(const uint8_t* seed, const uint16_t* scales, uint64_t begin, uint64_t end,
                   void* out) const override;
  uint64_t num_elements() const override { return params_.num_elements; }
  int64_t dtype() const override { return params_.dtype; }
  bool PrepareInt8(Int8Info* info) override;
  void DecodePairsInt8(const uint8_t* seed, uint64_t begin, uint64_t end, uint8_t* out) const override;

 private:
  TrellisParams params_;
  // int8 compute: the byte of h(s) for every window s < 2^L, and 3 bytes of padding (the AVX2
  // gather reads 4 bytes at s)
  std::vector<uint8_t> int8_;
};

}  // namespace hyperonnx
