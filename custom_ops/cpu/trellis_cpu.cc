// DecodeWeights, CPU decoder of the `trellis` codec (docs/FORMAT.md §9). Bit-identical to
// hyperonnx.codec.trellis.decode.
//
// Weight t of group q is h(window) * S_q, the window being L bits of the group's circular stream
// from bit k*t. The AVX2 loop takes 8 weights at a time (t a multiple of 8, so the first window
// starts on a byte): one 16-byte load, a byte shuffle and variable shifts give the 8 windows, and
// h is computed in registers with the §9.3 operations (no table: nothing to keep in cache). Ranges
// that do not start or end on such a block, and CPUs without AVX2, use the scalar reference
// (TrellisWindow, TrellisValue).
#include "trellis_cpu.h"

#include "decode_weights_cpu.h"

#ifdef HYPERONNX_AVX2
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

namespace hyperonnx {
namespace {

// Weights [t0, t1) of group q (scale s) into out, one by one.
void DecodeScalar(const TrellisParams& p, const uint8_t* seed, uint64_t q, uint32_t t0, uint32_t t1, float s,
                  float* out) {
  for (uint32_t t = t0; t < t1; ++t) *out++ = TrellisValue(p, TrellisWindow(p, seed, q, t)) * s;
}

#ifdef HYPERONNX_AVX2
// Per k: the shuffle gathering the 4 bytes of each of 8 windows (window i starts at bit k*i of
// a 16-byte block) and the shift of each within its first byte.
struct Gather {
  alignas(32) uint8_t shuffle[32];
  alignas(32) int32_t shift[8];
};

constexpr Gather MakeGather(uint32_t k) {
  Gather g{};
  for (uint32_t i = 0; i < 8; ++i) {
    const uint32_t bit = k * i;
    for (uint32_t b = 0; b < 4; ++b) g.shuffle[4 * i + b] = static_cast<uint8_t>((bit >> 3) + b);  // < 16 for k <= 8
    g.shift[i] = static_cast<int32_t>(bit & 7);
  }
  return g;
}

// By k (plain data: vectors returned from an AVX2 function to a caller compiled without AVX
// change the ABI)
static_assert(kTrellisMaxBits == 8, "one Gather per k");
constexpr Gather kGathers[kTrellisMaxBits + 1] = {MakeGather(0), MakeGather(1), MakeGather(2), MakeGather(3),
                                                  MakeGather(4), MakeGather(5), MakeGather(6), MakeGather(7),
                                                  MakeGather(8)};

// h of 8 windows, FORMAT.md §9.3 lane by lane (the operations of TrellisValue, in its order).
__attribute__((target("avx2"))) inline __m256 Values8(const TrellisParams& p, __m256i w) {
  const __m256i mask = _mm256_set1_epi32(static_cast<int32_t>((uint32_t{1} << p.window) - 1u));
  const __m256i r = _mm256_and_si256(_mm256_mullo_epi32(w, _mm256_set1_epi32(static_cast<int32_t>(kTrellisMultiplier))), mask);
  const __m256i centred = _mm256_sub_epi32(_mm256_add_epi32(_mm256_slli_epi32(r, 1), _mm256_set1_epi32(1)),
                                           _mm256_set1_epi32(int32_t{1} << p.window));
  const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(centred), _mm256_set1_ps(p.unit_u));
  const __m256 t = _mm256_mul_ps(u, u);
  __m256 num = _mm256_mul_ps(t, _mm256_set1_ps(kTrellisB));
  num = _mm256_add_ps(num, _mm256_set1_ps(kTrellisA));
  num = _mm256_mul_ps(u, num);
  __m256 den = _mm256_mul_ps(t, _mm256_set1_ps(kTrellisD));
  den = _mm256_add_ps(den, _mm256_set1_ps(kTrellisC));
  den = _mm256_mul_ps(den, t);
  den = _mm256_sub_ps(_mm256_set1_ps(1.0f), den);
  return _mm256_div_ps(num, den);
}

// The 8 windows of a 16-byte block starting on weight t (a multiple of 8).
struct Windows {  // a Gather in registers, and the window mask
  __m256i shuffle, shift, mask;
};

__attribute__((target("avx2"))) inline Windows LoadWindows(const TrellisParams& p) {
  const Gather& g = kGathers[p.bits];
  return Windows{_mm256_load_si256(reinterpret_cast<const __m256i*>(g.shuffle)),
                 _mm256_load_si256(reinterpret_cast<const __m256i*>(g.shift)),
                 _mm256_set1_epi32(static_cast<int32_t>((uint32_t{1} << p.window) - 1u))};
}

__attribute__((target("avx2"))) inline __m256i Windows8(const Windows& w, __m128i block) {
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(block), w.shuffle);
  return _mm256_and_si256(_mm256_srlv_epi32(bytes, w.shift), w.mask);
}

// A group's last 16 bytes followed by its first 16: where blocks that wrap read (below).
inline void GroupTail(const uint8_t* g, uint32_t gb, uint8_t* tail) {
  if (gb >= 16) {
    std::memcpy(tail, g + gb - 16, 16);
    std::memcpy(tail + 16, g, 16);
  } else {
    for (uint32_t i = 0; i < 32; ++i) tail[i] = g[(gb * 16 + i - 16) % gb];  // gb * 16 >= 16: never negative
  }
}

// Weights [t0, t1) of group q, as DecodeScalar, in blocks of 8 from the first multiple of 8 on.
// A block at byte o of the group reads the 16 bytes from o: from the seed while they lie inside
// the group, else from `tail`, the group's last 16 bytes followed by its first 16 (the circular
// stream, so wrapping windows need nothing else; any group size, every read inside the seed).
__attribute__((target("avx2,f16c"))) void DecodeAvx2(const TrellisParams& p, const uint8_t* seed, uint64_t q,
                                                     uint32_t t0, uint32_t t1, float s, float* out) {
  const uint8_t* g = seed + q * p.group_bytes;
  const uint32_t gb = p.group_bytes;
  alignas(16) uint8_t tail[32];
  GroupTail(g, gb, tail);
  uint32_t t = t0;
  const uint32_t head = std::min<uint32_t>(t1, (t0 + 7) & ~7u);
  DecodeScalar(p, seed, q, t, head, s, out);
  out += head - t;
  t = head;
  const __m256 scale = _mm256_set1_ps(s);
  const Windows windows = LoadWindows(p);
  for (; t + 8 <= t1; t += 8, out += 8) {
    const uint32_t o = p.bits * t >> 3;  // t is a multiple of 8: the block starts on a byte
    __m128i block;
    std::memcpy(&block, o + 16 <= gb ? g + o : tail + (o + 16 - gb), 16);
    _mm256_storeu_ps(out, _mm256_mul_ps(Values8(p, Windows8(windows, block)), scale));
  }
  DecodeScalar(p, seed, q, t, t1, s, out);
}

// int8 compute: weights [t0, t1) of group q as the bytes of their windows in `table`, the blocks
// of 8 as DecodeAvx2's with a gather from the table in place of h.
__attribute__((target("avx2"))) void Int8Avx2(const TrellisParams& p, const uint8_t* seed, const uint8_t* table,
                                              uint64_t q, uint32_t t0, uint32_t t1, uint8_t* out) {
  const uint8_t* g = seed + q * p.group_bytes;
  const uint32_t gb = p.group_bytes;
  alignas(16) uint8_t tail[32];
  GroupTail(g, gb, tail);
  uint32_t t = t0;
  const uint32_t head = std::min<uint32_t>(t1, (t0 + 7) & ~7u);
  for (; t < head; ++t) *out++ = table[TrellisWindow(p, seed, q, t)];
  const Windows windows = LoadWindows(p);
  // byte 0 of each 32-bit lane, packed into the low 4 bytes of each 128-bit half
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  for (; t + 8 <= t1; t += 8, out += 8) {
    const uint32_t o = p.bits * t >> 3;
    __m128i block;
    std::memcpy(&block, o + 16 <= gb ? g + o : tail + (o + 16 - gb), 16);
    const __m256i v = _mm256_shuffle_epi8(
        _mm256_i32gather_epi32(reinterpret_cast<const int*>(table), Windows8(windows, block), 1), pick);
    const uint64_t packed = static_cast<uint32_t>(_mm256_extract_epi32(v, 0)) |
                            uint64_t{static_cast<uint32_t>(_mm256_extract_epi32(v, 4))} << 32;
    std::memcpy(out, &packed, 8);
  }
  for (; t < t1; ++t) *out++ = table[TrellisWindow(p, seed, q, t)];
}

// float32 -> float16 (FORMAT.md §3; vcvtps2ph rounds to nearest even, keeps subnormals,
// overflows to Inf, as FloatToHalf does).
__attribute__((target("avx2,f16c"))) void ToHalfF16c(const float* in, uint64_t n, uint16_t* out) {
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) out[i] = FloatToHalf(in[i]);
}

bool HasAvx2Now() {
  static const bool has = HasAvx2() && __builtin_cpu_supports("f16c") != 0;
  return has;
}

#endif

}  // namespace

void TrellisDecodeFloats(const TrellisParams& p, const uint8_t* seed, const uint16_t* scales, uint64_t begin,
                         uint64_t end, float* out) {
  for (uint64_t e = begin; e < end;) {
    const uint64_t q = e / p.group;
    const uint32_t t0 = static_cast<uint32_t>(e - q * p.group);
    const uint32_t t1 = static_cast<uint32_t>(std::min<uint64_t>(end - q * p.group, p.group));
    const float s = HalfToFloat(scales[q]) * p.scale_unit;  // FORMAT.md §9.3: S_q
#ifdef HYPERONNX_AVX2
    if (HasAvx2Now()) {
      DecodeAvx2(p, seed, q, t0, t1, s, out);
    } else {
      DecodeScalar(p, seed, q, t0, t1, s, out);
    }
#else
    DecodeScalar(p, seed, q, t0, t1, s, out);
#endif
    out += t1 - t0;
    e += t1 - t0;
  }
}

bool TrellisCpuDecoder::DecodePairs(const uint8_t* seed, const uint16_t* scales, uint64_t begin, uint64_t end,
                                    void* out) const {
  const TrellisParams& p = params_;
  const uint64_t first = 2 * begin;  // a half last pair's second weight is group padding: in the seed
  const uint64_t last = 2 * end;
  if (p.dtype == kFloat32) {
    TrellisDecodeFloats(p, seed, scales, first, last, static_cast<float*>(out));
    return false;
  }
  // float16 / bfloat16: float32 blocks, converted (FORMAT.md §3)
  constexpr uint64_t kBlock = 1024;
  float buffer[kBlock];
  uint16_t* half = static_cast<uint16_t*>(out);
  for (uint64_t e = first; e < last; e += kBlock) {
    const uint64_t n = std::min(kBlock, last - e);
    uint16_t* to = half + (e - first);
    TrellisDecodeFloats(p, seed, scales, e, e + n, buffer);
    if (p.dtype == kFloat16) {
#ifdef HYPERONNX_AVX2
      if (HasAvx2Now()) {
        ToHalfF16c(buffer, n, to);
        continue;
      }
#endif
      for (uint64_t i = 0; i < n; ++i) to[i] = FloatToHalf(buffer[i]);
    } else {
      for (uint64_t i = 0; i < n; ++i) to[i] = FloatToBFloat16(buffer[i]);
    }
  }
  return false;
}


bool TrellisCpuDecoder::PrepareInt8(Int8Info* info) {
  const uint32_t states = uint32_t{1} << params_.window;
  std::vector<float> h(states);
  float max_abs = 0.0f;
  for (uint32_t w = 0; w < states; ++w) {
    h[w] = TrellisValue(params_, w);
    max_abs = std::max(max_abs, std::fabs(h[w]));
  }
  if (!(max_abs >= kInt8MinMax)) return false;  // values this small: float32 compute
  int8_.assign(size_t{states} + 3, 128);
  for (uint32_t w = 0; w < states; ++w) int8_[w] = Int8Byte(h[w], max_abs);
  info->unit = max_abs / 127.0f;
  info->group = params_.group;
  info->scale_unit = params_.scale_unit;
  return true;
}

void TrellisCpuDecoder::DecodePairsInt8(const uint8_t* seed, uint64_t begin, uint64_t end, uint8_t* out) const {
  const TrellisParams& p = params_;
  for (uint64_t e = 2 * begin; e < 2 * end;) {  // as DecodePairs: a half last pair's second weight is in the seed
    const uint64_t q = e / p.group;
    const uint32_t t0 = static_cast<uint32_t>(e - q * p.group);
    const uint32_t t1 = static_cast<uint32_t>(std::min<uint64_t>(2 * end - q * p.group, p.group));
#ifdef HYPERONNX_AVX2
    if (HasAvx2Now()) {
      Int8Avx2(p, seed, int8_.data(), q, t0, t1, out);
      out += t1 - t0;
      e += t1 - t0;
      continue;
    }
#endif
    for (uint32_t t = t0; t < t1; ++t) *out++ = int8_[TrellisWindow(p, seed, q, t)];
    e += t1 - t0;
  }
}

}  // namespace hyperonnx
