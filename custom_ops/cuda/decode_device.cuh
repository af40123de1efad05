// Device code shared by the DecodeWeights kernels (decode_weights_cuda.cu) and the fused
// operators' kernels (fused_cuda.cu): the seed's bit stream, the exact divisions, each codec's
// decode step (one implementation, so both produce the same bits), and the device queries.
// Compiled only by nvcc, with the flags of custom_ops/cuda/CMakeLists.txt (no FMA contraction).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "hyperonnx/decode_weights_format.h"

namespace hyperonnx::cuda {

// Exact x / d for x < 2^24 and 1 <= d <= 2^21 (the 24-bit indices and the divisors n+1 and m).
// d = 2^s: x >> s. Otherwise, with s = floor(log2 d) and magic = ceil(2^(32+s) / d) < 2^32,
// q = umulhi(x, magic) >> s: the error x*e / (d*2^(32+s)), e = magic*d - 2^(32+s) < d < 2^(s+1),
// is below 2^(25+s) / (d*2^(32+s)) < 1/d, too small to cross the next integer.
struct FastDiv {
  uint32_t magic;  // 0 for a power of two
  uint32_t shift;
};

inline FastDiv MakeFastDiv(uint32_t d) {
  uint32_t s = 0;
  while ((uint64_t{2} << s) <= d) ++s;  // s = floor(log2 d)
  if ((d & (d - 1)) == 0) return FastDiv{0, s};
  const uint64_t magic = ((uint64_t{1} << (32 + s)) + d - 1) / d;
  return FastDiv{static_cast<uint32_t>(magic), s};
}

__device__ __forceinline__ uint32_t Divide(uint32_t x, FastDiv d) {
  return (d.magic ? __umulhi(x, d.magic) : x) >> d.shift;
}

template <typename T>
struct alignas(2 * sizeof(T)) Pair {
  T first, second;
};

// The packed bit stream of a seed (FORMAT.md §4), as every kernel reads it.
struct Stream {
  const uint8_t* seed;
  uint64_t seed_bytes;
  uint32_t bits;
  uint32_t mask;
  int aligned;  // the seed pointer is 4-byte aligned: whole-word loads
};

inline Stream MakeStream(const uint8_t* seed, uint64_t seed_bytes, uint32_t bits) {
  return Stream{seed, seed_bytes, bits, (uint32_t{1} << bits) - 1, (reinterpret_cast<uintptr_t>(seed) & 3) == 0};
}

// What the winding kernel needs, by value (kernel parameter space).
struct WindingArgs {
  Stream s;
  uint64_t whole_pairs;  // N / 2: pairs whose two values are both written
  uint64_t num_elements;
  uint32_t points;
  uint32_t m;
  uint32_t codebook_size;
  uint32_t entries;  // table entries: min(codebook_size, 2^bits)
  uint32_t rings;
  int64_t dtype;
  FastDiv by_points1;  // n + 1
  FastDiv by_m;
  float cx, cy, step, offset;
  float scales[kMaxRings + 1];
  uint32_t* flag;  // null: every index is in range by construction
};

// The winding kernel's arguments for a node validated by ValidateWinding (flag: see Launch).
inline WindingArgs MakeWindingArgs(const WindingParams& p, const uint8_t* seed, uint32_t* flag) {
  WindingArgs a;
  std::memset(&a, 0, sizeof a);
  a.s = MakeStream(seed, p.seed_bytes, p.bits);
  a.whole_pairs = p.num_elements / 2;
  a.num_elements = p.num_elements;
  a.points = p.points;
  a.m = p.m;
  a.codebook_size = p.codebook_size;
  a.entries = static_cast<uint32_t>(std::min<uint64_t>(p.codebook_size, uint64_t{1} << p.bits));
  a.rings = p.rings;
  a.dtype = p.dtype;
  a.by_points1 = MakeFastDiv(p.points + 1);
  a.by_m = MakeFastDiv(p.m);
  a.cx = p.center[0];
  a.cy = p.center[1];
  a.step = p.step;
  a.offset = p.offset;
  for (uint32_t k = 0; k <= p.rings; ++k) a.scales[k] = p.scales[k];
  a.flag = flag;
  return a;
}

// Index i of the bit stream (FORMAT.md §4). Whole aligned words when both lie inside the seed,
// else the byte-wise ReadIndex of the shared header, which stops at the seed's end. kStreaming:
// the words are read with the evict-first hint (a fused GEMV reads its seed once).
template <bool kStreaming = false>
__device__ __forceinline__ uint32_t LoadIndex(const Stream& s, uint64_t i) {
  const uint64_t bit = i * s.bits;
  const uint64_t word = bit >> 5;
  if (s.aligned && (word + 2) * 4 <= s.seed_bytes) {
    const uint32_t* words = reinterpret_cast<const uint32_t*>(s.seed) + word;
    const uint32_t lo = kStreaming ? __ldcs(words) : __ldg(words);
    const uint32_t hi = kStreaming ? __ldcs(words + 1) : __ldg(words + 1);
    return __funnelshift_r(lo, hi, static_cast<uint32_t>(bit) & 31u) & s.mask;
  }
  return ReadIndex(s.seed, s.seed_bytes, i, s.bits);
}

// FORMAT.md §3 for an index x < codebook_size. The integers equal DecodeIndex's: j < n <= M gives
// ux = j mod M = j, and (j*m) mod m^2 = m * (j mod m). The float operations are DecodeIndex's, in
// its order, each rounded on its own.
__device__ __forceinline__ void DecodePair(const WindingArgs& a, const float* scales, uint32_t x, float* first,
                                           float* second) {
  const uint32_t k = Divide(x, a.by_points1);
  const uint32_t j = x - k * (a.points + 1);
  const uint32_t uy = a.m * (j - Divide(j, a.by_m) * a.m);
  float qx = __fadd_rn(__fmul_rn(__uint2float_rn(j), a.step), a.offset);
  float qy = __fadd_rn(__fmul_rn(__uint2float_rn(uy), a.step), a.offset);
  if (j == a.points) {  // the centroid
    qx = 0.0f;
    qy = 0.0f;
  }
  const float s = scales[k];
  *first = __fadd_rn(a.cx, __fmul_rn(qx, s));
  *second = __fadd_rn(a.cy, __fmul_rn(qy, s));
}

// Exact x / d for x < 2^40 (pair indices) and 1 <= d <= 2^15 (pairs per scale group). d = 2^s:
// x >> s. Otherwise magic = ceil(2^64 / d) = (2^64 + e) / d with 0 < e < d, and umulhi(x, magic)
// = floor(x/d + x*e / (d*2^64)): x*e < 2^55 keeps the excess below 1/d.
struct FastDiv64 {
  uint64_t magic;  // 0 for a power of two
  uint32_t shift;
};

inline FastDiv64 MakeFastDiv64(uint32_t d) {
  if ((d & (d - 1)) == 0) {
    uint32_t s = 0;
    while ((uint32_t{1} << s) < d) ++s;
    return FastDiv64{0, s};
  }
  return FastDiv64{~uint64_t{0} / d + 1, 0};  // ceil(2^64 / d): d does not divide 2^64
}

__device__ __forceinline__ uint64_t Divide(uint64_t x, FastDiv64 d) {
  return d.magic ? __umul64hi(x, d.magic) : x >> d.shift;
}

// What the lattice kernel needs, by value.
struct LatticeArgs {
  Stream s;
  const uint16_t* scales;  // device, p.num_scales float16 bit patterns
  LatticeParams p;
  FastDiv64 by_group_pairs;  // G / 2: pair i takes scale i / (G/2) (G is even: no pair straddles)
  uint32_t* flag;
};

// The lattice kernel's arguments for a node validated by ValidateLattice (flag: see Launch).
inline LatticeArgs MakeLatticeArgs(const LatticeParams& p, const uint8_t* seed, const uint16_t* scales, uint32_t* flag) {
  LatticeArgs a;
  std::memset(&a, 0, sizeof a);
  a.s = MakeStream(seed, p.seed_bytes, p.bits);
  a.scales = scales;
  a.p = p;
  a.by_group_pairs = MakeFastDiv64(p.group / 2);
  a.flag = flag;
  return a;
}

inline std::string CudaError(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

struct DeviceLimits {
  int sms = 0;
  size_t table_limit = 0;  // dynamic shared memory a table may take (opt-in maximum)
};

inline cudaError_t QueryDevice(DeviceLimits* limits) {
  int device = 0;
  int shared_optin = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&limits->sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&shared_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  // Slack for the kernels' static shared memory and the runtime's own reservation.
  limits->table_limit = static_cast<size_t>(shared_optin) - 1024;
  return e;
}


// FORMAT.md §7.3: the two values of lattice step j < N in a group of scale `scale`, where
// coordinate(m) is v(m) (LatticeCoordinate, or a table of it: the same bits).
template <typename Coordinate>
__device__ __forceinline__ float2 LatticePair(const LatticeParams& p, uint32_t j, float scale,
                                              const Coordinate& coordinate) {
  return make_float2(__fmul_rn(coordinate(j), scale), __fmul_rn(coordinate(LatticeRow(p, j)), scale));
}

// FORMAT.md §9.3: S_q = float32(scales[q]) * U of a trellis group.
__device__ __forceinline__ float TrellisScale(const TrellisParams& p, uint16_t h) {
  return __fmul_rn(HalfToFloat(h), p.scale_unit);
}

}  // namespace hyperonnx::cuda
