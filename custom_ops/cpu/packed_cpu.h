// Float compute from a layout packed once at kernel creation (fused_cpu.h, Packing::kPacked):
// DecodeMatMul / DecodeGemm (transB=0, W [K, N]) with accuracy_level 0.
//
// A weight whose codec writes every element as +-T[k] * S_q for a table T of at most 128 float32
// values (PairDecoder::PrepareCodes: lattice with steps of b <= 8 bits) is kept as one code byte a
// weight (k, | 0x80 when negated), in strips of 64 output columns, each row's 64 codes pre-arranged
// so that the AVX-512 VBMI decode needs no shuffle: vpermi2b looks up the four bytes of T[k] in
// tables held in 8 registers (128 entries each), vpternlogd applies the sign, four unpacks make
// 64 float32 lanes in column order, one multiplication by the group's scale S_q gives the
// reference decoder's bits (weight = float32(+-T[k]) * S_q, one rounding: FORMAT.md §7.3). About
// 18 instructions per 64 weights, no table in memory, no masked or partial loads.
// - few rows (<= 8): tasks own ranges of strips; each row pair's 4 x 16 accumulators stay in
//   registers over the whole depth (FMA straight from the decoded lanes, no buffer);
// - more rows: each task decodes its strip's 256 x 64 panel once per call (L2) and runs a 6 x 64
//   AVX-512 micro-kernel (24 accumulators) over every row.
// Taken where the CPU has AVX-512 VBMI and the weight's scale groups hold whole strips rows (G and
// N multiples of 64); other weights compute from the seed as before. Products and sums are float32
// with FMA: within FORMAT.md §8.2's float32 bound, as the seed path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "codec_cpu.h"
#include "hyperonnx/ort_api.h"

namespace hyperonnx {

constexpr size_t kCodeStrip = 64;  // output columns per strip of codes

// Lattice steps of 9-16 bits: one uint16 step j a pair (a byte a weight), strip s, row r at
// steps[(s * k + r) * 32 + i] (pair i: columns 64s + 2i, 2i + 1); both coordinates computed in
// registers with the §7.3 operations (the row of j, then phi of each: the AVX-512 decode loop's
// arithmetic, so the same bits), even and odd columns in separate accumulators, interleaved once
// per strip. About 60 instructions per 64 weights, against ~2x that plus a buffer from the seed.
struct FloatPacked {
  bool steps_form = false;         // steps (b > 8) rather than codes
  LatticeParams lattice{};         // steps_form: the node's parameters
  std::vector<uint16_t> steps;     // steps_form
  size_t k = 0, n = 0;             // W [k, n]
  uint64_t group = 0;              // scale group G (a multiple of 64)
  std::vector<uint8_t> codes;      // strip s, row r: codes[(s * k + r) * 64 + kCodeOrder[c]] = code of column 64s + c
  std::vector<float> scales;       // S_q, float32
  alignas(64) uint8_t planes[4 * PairDecoder::kCodeTable] = {};  // byte b of T[k] at planes[128 b + k]
  size_t bytes() const { return codes.size() + 2 * steps.size() + 4 * scales.size(); }
};

// The float packed form of W [k, n] (transB=0), or false when the weight, its codec or the CPU do
// not take it (then compute from the seed).
bool PackFloat(EncodedWeight& w, FloatPacked* packed);

// Y [rows, n] = A [rows, k] (row stride lda) times the weight, overwriting Y. False: out of memory
// in a task.
// The many-row micro-kernel (6 x 64, AVX-512) over a row-major kc x 64 panel: C[rows x 64] +=
// A[rows x kc] * panel, for the seed path too (fused_cpu.cc). HasPanel64: this CPU runs it.
bool HasPanel64();
void Panel64Gemm(const float* a, size_t lda, const float* panel, size_t kc, float* c, size_t ldc, size_t rows);

bool GemmFloatPacked(const Ort::KernelContext& context, const FloatPacked& packed, const float* a, size_t lda,
                     size_t rows, float* y);

}  // namespace hyperonnx
