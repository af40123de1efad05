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
//
// int8 compute (DecodeMatMul / DecodeGemm with accuracy_level 4, FORMAT.md §8.2, int8_cpu.h) has
// a second primitive, `DecodePairsInt8`: the codec's unscaled values (lattice: the pair table
// v(j); trellis: h(window)) rounded once per node to int8 with one factor, so decoding is an index
// unpack and a byte-table lookup; the group scales are applied by the int8 kernel.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hyperonnx/decode_weights_format.h"

namespace hyperonnx {

// What the int8 kernel needs besides the bytes: unscaled value = unit * q, weight = that * S_q,
// S_q = float32(scales[q]) * scale_unit for the group q = element / group.
struct Int8Info {
  float unit = 0.0f;  // max |v| / 127
  uint32_t group = 0;
  float scale_unit = 0.0f;
};

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
  // Builds the int8 table (once, at kernel creation) and returns true with `info` filled, or
  // false when the codec has no int8 form (winding: no group scales).
  virtual bool PrepareInt8(Int8Info*) { return false; }
  // After PrepareInt8: pairs [begin, end) as bytes q + 128 (Int8Byte), pair i at
  // out[2 * (i - begin)]; the seed was validated whole (no bad index).
  virtual void DecodePairsInt8(const uint8_t*, uint64_t, uint64_t, uint8_t*) const {}
  // float compute from a packed form (fused_cpu.h, Packing::kPacked): a codec whose weights are,
  // element by element, +-T[k] * S_q for a table T of at most kCodeTable float32 values (the
  // unscaled values, odd about their centre) fills `table` (T[k]; 0 past its size) and returns
  // true with info's group and scale_unit (S_q = float32(scales[q]) * scale_unit); DecodeCodes then writes each element of pairs [begin, end) as its code byte k, | 0x80
  // when negated, pair i at out[2 * (i - begin)]: weight = float32(+-T[k]) * S_q, the reference
  // decoder's bits (lattice, b <= 8: T[k] = v(c + k), c = (N - 1) / 2, and v(c - k) = -v(c + k),
  // checked value by value). The seed was validated whole.
  static constexpr size_t kCodeTable = 128;
  // The lattice codec's parameters (float compute from its steps, packed_cpu.h), else null.
  virtual const LatticeParams* lattice() const { return nullptr; }
  virtual bool PrepareCodes(float* /*table*/, Int8Info* /*info*/) { return false; }
  virtual void DecodeCodes(const uint8_t*, uint64_t, uint64_t, uint8_t*) const {}
};

// The int8 byte of an unscaled value v, shared by the codecs: 128 + q, q = v * 127 / max |v|
// rounded to nearest-even, in [-127, 127]. A codec whose max |v| is below kInt8MinMax (attributes
// far from any encoder's) has no int8 form: 127 / max |v| could overflow.
constexpr float kInt8MinMax = 7.88860905e-31f;  // 2^-100
uint8_t Int8Byte(float v, float max_abs);

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
  // int8 compute: PrepareInt8 once (false: no int8 form), then elements as DecodePairsInt8's bytes.
  bool PrepareInt8();
  const Int8Info& int8() const { return int8_; }
  // float compute from codes (PairDecoder::PrepareCodes / DecodeCodes), whole pairs only
  bool PrepareCodes(float* table, Int8Info* info) { return decoder_->PrepareCodes(table, info); }
  void DecodeCodes(uint64_t begin_pair, uint64_t end_pair, uint8_t* out) const {
    decoder_->DecodeCodes(seed_, begin_pair, end_pair, out);
  }
  const uint16_t* scales() const { return scales_; }
  const uint8_t* seed() const { return seed_; }
  const LatticeParams* lattice() const { return decoder_->lattice(); }
  void DecodeInt8(uint64_t first, uint64_t count, uint8_t* out) const;
  // S_q of group q (int8 compute; the codec has scales)
  float GroupScale(uint64_t q) const { return HalfToFloat(scales_[q]) * int8_.scale_unit; }

 private:
  std::unique_ptr<PairDecoder> decoder_;
  std::vector<int64_t> shape_;
  const uint8_t* seed_;     // onnxruntime's constant initializer: it outlives the kernel
  const uint16_t* scales_;  // idem (lattice), or nullptr
  Int8Info int8_;
};

}  // namespace hyperonnx
