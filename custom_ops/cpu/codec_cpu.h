// The CPU seam between codecs and kernels: one decode primitive per codec.
//
// Every CPU kernel decodes through `PairDecoder::DecodePairs`: DecodeWeights writes whole tensors
// with it (in the output dtype), the fused operators (fused_cpu.cc: DecodeMatMul, DecodeGemm,
// DecodeGather, DecodeConv) decode row segments and K x N panels of float32 weights into
// cache-resident buffers with it, and `EncodedWeight::Decode` (below) turns any element range into
// whole-pair calls. Nothing else in the kernels knows how a codec lays out its seed.
//
// Adding a codec (e.g. a trellis): implement PairDecoder for it (a class next to lattice_cpu.h,
// bit-identical to the Python reference decoder, validating nothing itself: its parameters were
// validated by the format header), construct it in MakePairDecoder (decode_weights_cpu.cc), and
// add its FORMAT.md rules to ValidateInputs there. The fused kernels then run it unchanged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hyperonnx/decode_weights_format.h"

namespace hyperonnx {

class PairDecoder {
 public:
  virtual ~PairDecoder() = default;
  // Pairs [begin, end) of the seed (pair i = elements 2i, 2i+1) in the node's output dtype
  // (float32: 2 floats a pair; float16 / bfloat16: 2 uint16) written to `out` from its start:
  // pair i lands at out[2 * (i - begin)], bit-identical to the reference decoder. The seed (and
  // scales) were validated (rules 4, 6); `end` <= num_elements / 2 + (num_elements odd: the last,
  // half pair is whole in the seed). Reads only inside the seed. Returns true when an index lies
  // outside the codebook (rules 5, 7): the output of those pairs is then a table entry, not valid.
  virtual bool DecodePairs(const uint8_t* seed, const uint16_t* scales, uint64_t begin, uint64_t end,
                           void* out) const = 0;
  virtual uint64_t num_elements() const = 0;
  virtual int64_t dtype() const = 0;
};

// A weight kept encoded in memory (the constant seed and scales of a fused node, validated whole
// when the kernel was created, so decoding it never fails), decoded on demand to float32.
class EncodedWeight {
 public:
  EncodedWeight(std::unique_ptr<PairDecoder> decoder, std::vector<int64_t> shape, const uint8_t* seed,
                const uint16_t* scales);
  const std::vector<int64_t>& shape() const { return shape_; }
  uint64_t num_elements() const { return decoder_->num_elements(); }
  // Elements [first, first + count) of the row-major weight as float32 into out[0 .. count):
  // exactly DecodeWeights' float32 output. Requires first + count <= num_elements().
  void Decode(uint64_t first, uint64_t count, float* out) const;

 private:
  std::unique_ptr<PairDecoder> decoder_;
  std::vector<int64_t> shape_;
  const uint8_t* seed_;     // onnxruntime's constant initializer: it outlives the kernel
  const uint16_t* scales_;  // idem (lattice), or nullptr
};

}  // namespace hyperonnx
