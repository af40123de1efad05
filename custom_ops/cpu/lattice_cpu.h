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
  bool PrepareInt8(Int8Info* info) override;
  void DecodePairsInt8(const uint8_t* seed, uint64_t begin, uint64_t end, uint8_t* out) const override;
  bool PrepareCodes(float* table, Int8Info* info) override;
  const LatticeParams* lattice() const override { return &params_; }
  void DecodeCodes(const uint8_t* seed, uint64_t begin, uint64_t end, uint8_t* out) const override;

 private:
  LatticeParams params_;
  // int8 compute: step j's two bytes at [2j, 2j + 1] for every b-bit j (128: zero past N - 1),
  // 2 bytes of padding (the AVX2 gather reads 4 bytes at 2j), then for b <= 8 the first and the
  // second bytes apart, 256 each (the AVX-512 VBMI loop's tables; 128 past 2^b).
  std::vector<uint8_t> int8_;
  // float compute from codes: step j's two code bytes, laid out as int8_ (the same loops read it)
  std::vector<uint8_t> codes_;
  // (v(j), v(row(j))) for every step j < N, float32: the unscaled pair of step j. Shared by the
  // nodes of the same trajectory (bits, generator, alpha, beta).
  std::shared_ptr<const std::vector<float>> table_;
};

}  // namespace hyperonnx
