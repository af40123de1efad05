// int8 compute for DecodeMatMul / DecodeGemm (accuracy_level 4, docs/FORMAT.md §8.2), CPU.
//
// The codecs' float16 group scales run along the row-major weight: for W [K, N] (MatMul, Gemm
// transB=0) groups lie along N, the output dimension, so the scale cannot leave an integer sum
// over k. It is folded into the activation instead: for the columns of one "class" (columns that
// share a group in every row), A'[m, k] = A[m, k] * S(k, class), quantised per block of kBlock
// consecutive k to int8 (one float scale a block; cost M * K * classes, a small share of the
// product). For W [N, K] (transB=1) groups lie along K: A is quantised as it is and each block's
// group scale multiplies that block's integer sum, per output column.
//
// Weights: the codec's int8 bytes (PairDecoder::DecodePairsInt8: a table lookup per code),
// decoded once per call into panels of kTile output columns, 4 consecutive k in each 32-bit lane
// (the vpdpbusd / maddubs operand layout), reused by every activation row. Products are summed
// exactly in int32 over a block, then converted: y += float(sum) * activation scale * weight unit
// (* the group scale, transB). AVX-512 VNNI, AVX2 (maddubs on the absolute activation and the
// sign-applied weight: no 16-bit saturation) and a portable loop compute the same integer sums;
// only the float accumulation may round differently (FMA). HYPERONNX_NO_AVX2 / HYPERONNX_NO_AVX512
// force the portable / AVX2 loops.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "codec_cpu.h"
#include "hyperonnx/ort_api.h"

namespace hyperonnx {

// How a weight is computed in int8 (Int8Plan), decided at kernel creation.
struct Int8Plan {
  bool trans = false;   // W [N, K] (Gemm transB=1), else W [K, N]
  size_t k = 0, n = 0;  // the product's reduction and output widths
  size_t class_width = 0;  // transB=0: output columns that share one group in every row
};

// The plan for `w` (PrepareInt8 done), or false when its groups do not line up with the kernel's
// tiles and blocks (transB=0: gcd(N, G) a multiple of kTile, or G a multiple of N; transB=1:
// gcd(K, G) a multiple of kBlock, or G a multiple of K): such a node computes in float32.
bool PlanInt8(const EncodedWeight& w, bool trans, Int8Plan* plan);

// The weight's int8 form made once, at kernel creation (packing on, the default): the codec's
// int8 bytes of every output column tile over the whole depth, in the operand order of the dot
// products (tile t at panel + t * kp * 16: quads of 4 consecutive k in each 32-bit lane, 16 lanes;
// the VNNI / maddubs / sdot layout), and for transB=1 each lane's group scale times the weight unit
// per block of 32 k. The same bytes PackColumns / PackRows decode from the seed on every call
// without it, so the integer sums are those of the unpacked path, bit for bit. About 1 byte a
// weight (+ 1/8 byte of lane scales, transB=1), beside the seed onnxruntime keeps.
struct Int8Packed {
  std::vector<uint8_t> panel;  // tiles * kp * 16 bytes, kp = K rounded up to 32 (128, i.e. 0, past the weight)
  std::vector<float> lane;     // transB=1: tiles * (kp / 32) * 16; else (kp / 32) * 16 copies of the unit
  std::vector<float> class_scales;  // transB=0: class c's group scale in row k at [c * K + k] (ClassScales)
  size_t bytes() const { return panel.size() + 4 * (lane.size() + class_scales.size()); }
};

// Builds `packed` for a weight PlanInt8 took.
void PackInt8(const EncodedWeight& w, const Int8Plan& plan, Int8Packed* packed);

// Y [rows, n] = A [rows, k] (row stride lda) times the weight, in int8 (overwrites Y), decoding
// from the seed on every call or (`packed` not null) reading the packed form. False: out of memory
// in a task.
bool GemmInt8(const Ort::KernelContext& context, const EncodedWeight& w, const Int8Plan& plan, const float* a,
              size_t lda, size_t rows, float* y, const Int8Packed* packed = nullptr);

}  // namespace hyperonnx
