// DecodeWeights, CPU decoder of the `lattice` codec (docs/FORMAT.md §7). Bit-identical to
// hyperonnx.codec.lattice.decode.
//
// A pair's two values are v(x) * S and v(y) * S, where (x, y) depends on its step j only and S on
// its group only. So a node keeps a table of the unscaled pair (v(j), v(row(j))) of every step,
// computed once with the §7.3 operations (LatticeCoordinate), and the hot loop is a bit-unpack,
// one table load, two float32 multiplications by the group's scale and the conversion to the
// output type. The AVX2 loop reads no table: it unpacks 8 steps at once and computes both
// coordinates with the same operations on 8 lanes (integer row, then phi), faster than 8
// dependent table loads (bench runtime: 4M float32 lattice 12.0 against 7.95 GB/s, one thread);
// float32 output takes 16 lanes where the CPU has AVX-512 (HYPERONNX_NO_AVX512=1: the AVX2 loop).
// On aarch64 a NEON loop always runs: the same unpack (Unpack8Neon), table loads, vector scaling
// and conversion (cpu/neon.h).
// Steps >= N fail the run (rule 7) after the loop: the scalar loop clamps them into the table (a
// branch-free select), the vector loop flags the one such b-bit step, N.
#include "lattice_cpu.h"

#include "decode_weights_cpu.h"
#include "neon.h"
#include "unpack_avx2.h"

#ifdef HYPERONNX_AVX2
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

namespace hyperonnx {
namespace {

// The output type's bits and the §3 conversion of a float32 value to it.
template <int64_t D>
struct Output;
template <>
struct Output<kFloat32> {
  using T = uint32_t;
  static T Convert(float f) { return FloatBits(f); }
};
template <>
struct Output<kFloat16> {
  using T = uint16_t;
  static T Convert(float f) { return FloatToHalf(f); }
};
template <>
struct Output<kBFloat16> {
  using T = uint16_t;
  static T Convert(float f) { return FloatToBFloat16(f); }
};

// What one run decodes; read by every task.
struct Job {
  const LatticeParams* params;
  const uint8_t* seed;
  const uint16_t* scales;
  const float* table;
  void* out;      // pair `base` lands at out[2 * 0]
  uint64_t base;  // the first pair of this call
};

// Pairs below this one read their step from one 4-byte window inside the seed.
template <int B>
uint64_t Windowed(const LatticeParams& p) {
  return p.seed_bytes >= 4 ? ((p.seed_bytes - 4) * 8) / B + 1 : 0;
}

// Pairs [i, stop) of one group (scale s); `bad` collects steps >= N.
template <int B, int64_t D>
inline void DecodeGroupPairs(const Job& job, uint64_t i, uint64_t stop, uint64_t windowed, float s, uint32_t* bad) {
  using T = typename Output<D>::T;
  constexpr uint32_t kMask = (uint32_t{1} << B) - 1;
  const LatticeParams& p = *job.params;
  T* out = static_cast<T*>(job.out);
  for (; i < stop; ++i) {
    uint32_t j;
    if (i < windowed) {
      uint32_t window;
      std::memcpy(&window, job.seed + ((i * B) >> 3), 4);  // little-endian hosts only (checked in CMake)
      j = (window >> ((i * B) & 7)) & kMask;
    } else {
      j = ReadIndex(job.seed, p.seed_bytes, i, B);
    }
    const uint32_t ok = j < p.points;
    *bad |= ok ^ 1u;
    j = ok ? j : 0;
    const float x = job.table[2 * j] * s;
    const float y = job.table[2 * j + 1] * s;
    out[2 * (i - job.base)] = Output<D>::Convert(x);
    out[2 * (i - job.base) + 1] = Output<D>::Convert(y);
  }
}

// Pairs [begin, end), group by group. Returns true when a step was >= N.
template <int B, int64_t D>
bool DecodeRange(const Job& job, uint64_t begin, uint64_t end) {
  const LatticeParams& p = *job.params;
  const uint64_t pairs_per_group = p.group / 2;  // G is even: a pair never straddles two groups
  const uint64_t windowed = Windowed<B>(p);
  uint32_t bad = 0;
  for (uint64_t i = begin; i < end;) {
    const uint64_t q = i / pairs_per_group;
    const uint64_t stop = std::min(end, (q + 1) * pairs_per_group);
    DecodeGroupPairs<B, D>(job, i, stop, windowed, LatticeScale(p, job.scales[q]), &bad);
    i = stop;
  }
  return bad != 0;
}

#ifdef HYPERONNX_AVX2
// 16 float32 values (8 pairs, in order) in the output type, stored at `out`.
template <int64_t D>
__attribute__((target("avx2,f16c"))) inline void Store16(__m256 low, __m256 high, void* out);

template <>
__attribute__((target("avx2,f16c"))) inline void Store16<kFloat32>(__m256 low, __m256 high, void* out) {
  _mm256_storeu_ps(static_cast<float*>(out), low);
  _mm256_storeu_ps(static_cast<float*>(out) + 8, high);
}

template <>
__attribute__((target("avx2,f16c"))) inline void Store16<kFloat16>(__m256 low, __m256 high, void* out) {
  // vcvtps2ph rounds to nearest even, keeps subnormals, overflows to Inf, quiets NaN: FloatToHalf.
  _mm_storeu_si128(static_cast<__m128i*>(out), _mm256_cvtps_ph(low, _MM_FROUND_TO_NEAREST_INT));
  _mm_storeu_si128(static_cast<__m128i*>(out) + 1, _mm256_cvtps_ph(high, _MM_FROUND_TO_NEAREST_INT));
}

// FloatToBFloat16 on 8 lanes: the upper halves of the rounded bits (NaN: quieted, not rounded).
__attribute__((target("avx2,f16c"))) inline __m256i BFloat16Lanes(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

template <>
__attribute__((target("avx2,f16c"))) inline void Store16<kBFloat16>(__m256 low, __m256 high, void* out) {
  // packus works within 128-bit halves: reorder the quadwords afterwards (all lanes are < 2^16)
  const __m256i packed = _mm256_packus_epi32(BFloat16Lanes(low), BFloat16Lanes(high));
  _mm256_storeu_si256(static_cast<__m256i*>(out), _mm256_permute4x64_epi64(packed, 0xd8));
}

// FORMAT.md §7.3 on 8 lanes: v(m) = phi(u(m)), operation by operation as LatticeCoordinate
// (separate multiplications and additions: the same bits).
__attribute__((target("avx2,f16c"))) inline __m256 Phi8(__m256i m, __m256i n_minus_1, __m256 r, __m256 alpha,
                                                      __m256 beta) {
  const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_slli_epi32(m, 1), n_minus_1)), r);
  __m256 t = _mm256_mul_ps(u, u);
  t = _mm256_mul_ps(t, beta);
  t = _mm256_add_ps(t, alpha);
  return _mm256_mul_ps(u, t);
}

// DecodeRange with AVX2 and F16C, same contract: within a group, 8 pairs at a time are unpacked
// (Unpack8Avx2), their rows computed as LatticeRow does, both coordinates computed arithmetically
// (Phi8: no table read), scaled, interleaved, converted and stored as vectors. Pairs before a
// multiple of 8, at the seed's end and at a group's end go through DecodeGroupPairs.
template <int B, int64_t D>
__attribute__((target("avx2,f16c"))) bool DecodeRangeAvx2(const Job& job, uint64_t begin, uint64_t end) {
  using T = typename Output<D>::T;
  const LatticeParams& p = *job.params;
  const uint64_t pairs_per_group = p.group / 2;
  const uint64_t windowed = Windowed<B>(p);
  const Unpack8Avx2<B> unpack;
  const __m256i n = _mm256_set1_epi32(static_cast<int>(p.points)), n_minus_1 = _mm256_set1_epi32(static_cast<int>(p.points - 1));
  const __m256i g = _mm256_set1_epi32(static_cast<int>(p.generator)), c = _mm256_set1_epi32(static_cast<int>(p.offset));
  const __m256 r = _mm256_set1_ps(p.r), alpha = _mm256_set1_ps(p.alpha), beta = _mm256_set1_ps(p.beta);
  T* out = static_cast<T*>(job.out);
  uint32_t bad = 0;
  __m256i bad_lanes = _mm256_setzero_si256();
  uint64_t vector = 0;
  for (uint64_t i = begin; i < end;) {
    const uint64_t q = i / pairs_per_group;
    const uint64_t stop = std::min(end, (q + 1) * pairs_per_group);
    const float s = LatticeScale(p, job.scales[q]);
    const __m256 scale = _mm256_set1_ps(s);
    const uint64_t head = std::min(stop, (i + 7) / 8 * 8);
    DecodeGroupPairs<B, D>(job, i, head, windowed, s, &bad);
    for (i = head; i + 8 <= stop && (i / 8) * B + Unpack8Avx2<B>::kReach <= p.seed_bytes; i += 8, vector += 8) {
      const __m256i x = unpack(job.seed + (i / 8) * B);
      bad_lanes = _mm256_or_si256(bad_lanes, _mm256_cmpeq_epi32(x, n));  // j = 2^B - 1 = N: rule 7
      // LatticeRow: j * g + c < 2^32, folded twice (2^B = 1 mod N), N itself is 0
      const __m256i t = _mm256_add_epi32(_mm256_mullo_epi32(x, g), c);
      __m256i y = _mm256_add_epi32(_mm256_and_si256(t, n), _mm256_srli_epi32(t, B));
      y = _mm256_add_epi32(_mm256_and_si256(y, n), _mm256_srli_epi32(y, B));
      y = _mm256_andnot_si256(_mm256_cmpeq_epi32(y, n), y);
      const __m256 vx = _mm256_mul_ps(Phi8(x, n_minus_1, r, alpha, beta), scale);
      const __m256 vy = _mm256_mul_ps(Phi8(y, n_minus_1, r, alpha, beta), scale);
      const __m256 lo = _mm256_unpacklo_ps(vx, vy), hi = _mm256_unpackhi_ps(vx, vy);  // pairs 0,1,4,5 / 2,3,6,7
      Store16<D>(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31), out + 2 * (i - job.base));
    }
    DecodeGroupPairs<B, D>(job, i, stop, windowed, s, &bad);
    i = stop;
  }
  CountVectorPairs(vector);
  return bad != 0 || !_mm256_testz_si256(bad_lanes, bad_lanes);
}

// DecodeRangeAvx2 for float32 output on 16 lanes (AVX-512): the same operations, half the
// instructions (a 4096 x 4096 DecodeMatMul step, one thread: 7.0 against 8.4 ms of CPU time); two
// unpacked groups of 8 steps make the 16 lanes. (GCC 12's AVX-512 headers trip
// -Wmaybe-uninitialized on their own _mm512_undefined: GCC bug 105593.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,f16c"))) inline __m512 Phi16(
    __m512i m, __m512i n_minus_1, __m512 r, __m512 alpha, __m512 beta) {
  const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_slli_epi32(m, 1), n_minus_1)), r);
  __m512 t = _mm512_mul_ps(u, u);
  t = _mm512_mul_ps(t, beta);
  t = _mm512_add_ps(t, alpha);
  return _mm512_mul_ps(u, t);
}

template <int B>
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,f16c"))) bool DecodeRangeAvx512(const Job& job,
                                                                                            uint64_t begin,
                                                                                            uint64_t end) {
  const LatticeParams& p = *job.params;
  const uint64_t pairs_per_group = p.group / 2;
  const uint64_t windowed = Windowed<B>(p);
  const Unpack8Avx2<B> unpack;
  const __m512i n = _mm512_set1_epi32(static_cast<int>(p.points)), n_minus_1 = _mm512_set1_epi32(static_cast<int>(p.points - 1));
  const __m512i g = _mm512_set1_epi32(static_cast<int>(p.generator)), c = _mm512_set1_epi32(static_cast<int>(p.offset));
  const __m512 r = _mm512_set1_ps(p.r), alpha = _mm512_set1_ps(p.alpha), beta = _mm512_set1_ps(p.beta);
  // (x, y) of pairs 0-7, then of 8-15, from the lanes of vx (0-15) and vy (16-31)
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  float* out = static_cast<float*>(job.out);
  uint32_t bad = 0;
  __mmask16 bad_lanes = 0;
  uint64_t vector = 0;
  for (uint64_t i = begin; i < end;) {
    const uint64_t q = i / pairs_per_group;
    const uint64_t stop = std::min(end, (q + 1) * pairs_per_group);
    const float s = LatticeScale(p, job.scales[q]);
    const __m512 scale = _mm512_set1_ps(s);
    const uint64_t head = std::min(stop, (i + 7) / 8 * 8);
    DecodeGroupPairs<B, kFloat32>(job, i, head, windowed, s, &bad);
    for (i = head; i + 16 <= stop && (i / 8 + 1) * B + Unpack8Avx2<B>::kReach <= p.seed_bytes; i += 16, vector += 16) {
      const uint8_t* group = job.seed + (i / 8) * B;
      const __m512i x = _mm512_inserti64x4(_mm512_castsi256_si512(unpack(group)), unpack(group + B), 1);
      bad_lanes |= _mm512_cmpeq_epi32_mask(x, n);  // j = 2^B - 1 = N: rule 7
      const __m512i t = _mm512_add_epi32(_mm512_mullo_epi32(x, g), c);  // LatticeRow, as Rows in DecodeRangeAvx2
      __m512i y = _mm512_add_epi32(_mm512_and_si512(t, n), _mm512_srli_epi32(t, B));
      y = _mm512_add_epi32(_mm512_and_si512(y, n), _mm512_srli_epi32(y, B));
      y = _mm512_maskz_mov_epi32(_mm512_cmpneq_epi32_mask(y, n), y);
      const __m512 vx = _mm512_mul_ps(Phi16(x, n_minus_1, r, alpha, beta), scale);
      const __m512 vy = _mm512_mul_ps(Phi16(y, n_minus_1, r, alpha, beta), scale);
      _mm512_storeu_ps(out + 2 * (i - job.base), _mm512_permutex2var_ps(vx, first, vy));
      _mm512_storeu_ps(out + 2 * (i - job.base) + 16, _mm512_permutex2var_ps(vx, second, vy));
    }
    DecodeGroupPairs<B, kFloat32>(job, i, stop, windowed, s, &bad);
    i = stop;
  }
  CountVectorPairs(vector);
  return bad != 0 || bad_lanes != 0;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

bool HasAvx2F16c() {
  static const bool has = HasAvx2() && __builtin_cpu_supports("f16c") != 0;
  return has;
}
#endif

#ifdef HYPERONNX_NEON
// 16 float32 values (8 pairs, in order) in the output type, stored at `out`.
template <int64_t D>
inline void Store16Neon(const float32x4_t (&v)[4], void* out);

template <>
inline void Store16Neon<kFloat32>(const float32x4_t (&v)[4], void* out) {
  for (int n = 0; n < 4; ++n) vst1q_f32(static_cast<float*>(out) + 4 * n, v[n]);
}

template <>
inline void Store16Neon<kFloat16>(const float32x4_t (&v)[4], void* out) {
  vst1q_u16(static_cast<uint16_t*>(out), vcombine_u16(HalfLanes(v[0]), HalfLanes(v[1])));
  vst1q_u16(static_cast<uint16_t*>(out) + 8, vcombine_u16(HalfLanes(v[2]), HalfLanes(v[3])));
}

template <>
inline void Store16Neon<kBFloat16>(const float32x4_t (&v)[4], void* out) {
  vst1q_u16(static_cast<uint16_t*>(out), vcombine_u16(BFloat16Lanes(v[0]), BFloat16Lanes(v[1])));
  vst1q_u16(static_cast<uint16_t*>(out) + 8, vcombine_u16(BFloat16Lanes(v[2]), BFloat16Lanes(v[3])));
}

// DecodeRange with NEON, DecodeRangeAvx2's structure: within a group, 8 steps at a time are
// unpacked (Unpack8Neon), their unscaled pairs loaded from the table (a b-bit step is at most N,
// the table's zero entry, which flags rule 7), scaled (vmulq_f32: one rounded float32
// multiplication per lane, as the scalar loop), converted and stored as vectors. Pairs before a
// multiple of 8, at the seed's end and at a group's end go through DecodeGroupPairs.
template <int B, int64_t D>
bool DecodeRangeNeon(const Job& job, uint64_t begin, uint64_t end) {
  using T = typename Output<D>::T;
  const LatticeParams& p = *job.params;
  const uint64_t pairs_per_group = p.group / 2;
  const uint64_t windowed = Windowed<B>(p);
  const Unpack8Neon<B> unpack;
  const uint32x4_t n = vdupq_n_u32(p.points);
  const float* table = job.table;
  T* out = static_cast<T*>(job.out);
  uint32_t bad = 0;
  uint32x4_t bad_lanes = vdupq_n_u32(0);
  uint64_t vector = 0;
  for (uint64_t i = begin; i < end;) {
    const uint64_t q = i / pairs_per_group;
    const uint64_t stop = std::min(end, (q + 1) * pairs_per_group);
    const float s = LatticeScale(p, job.scales[q]);
    const float32x4_t scale = vdupq_n_f32(s);
    const uint64_t head = std::min(stop, (i + 7) / 8 * 8);
    DecodeGroupPairs<B, D>(job, i, head, windowed, s, &bad);
    for (i = head; i + 8 <= stop && (i / 8) * B + Unpack8Neon<B>::kReach <= p.seed_bytes; i += 8, vector += 8) {
      uint32x4_t low, high;
      unpack(job.seed + (i / 8) * B, &low, &high);
      bad_lanes = vorrq_u32(bad_lanes, vorrq_u32(vceqq_u32(low, n), vceqq_u32(high, n)));  // j = N: rule 7
      uint32_t j[8];
      vst1q_u32(j, low);
      vst1q_u32(j + 4, high);
      float values[16];
      for (int k = 0; k < 8; ++k) std::memcpy(values + 2 * k, table + 2 * j[k], 8);
      float32x4_t v[4];
      for (int m = 0; m < 4; ++m) v[m] = vmulq_f32(vld1q_f32(values + 4 * m), scale);
      Store16Neon<D>(v, out + 2 * (i - job.base));
    }
    DecodeGroupPairs<B, D>(job, i, stop, windowed, s, &bad);
    i = stop;
  }
  CountVectorPairs(vector);
  return bad != 0 || vmaxvq_u32(bad_lanes) != 0;
}
#endif

using RangeFn = bool (*)(const Job&, uint64_t, uint64_t);

template <int64_t D, int... Bs>
RangeFn SelectRange(uint32_t bits, std::integer_sequence<int, Bs...>) {
#ifdef HYPERONNX_NEON
  static const RangeFn kByBits[] = {&DecodeRangeNeon<Bs + 1, D>...};  // always, on aarch64
#else
  static const RangeFn kByBits[] = {&DecodeRange<Bs + 1, D>...};
#endif
#ifdef HYPERONNX_AVX2
  static const RangeFn kAvx512ByBits[] = {&DecodeRangeAvx512<Bs + 1>...};
  if (D == kFloat32 && HasAvx512()) return kAvx512ByBits[bits - 1];
  static const RangeFn kAvx2ByBits[] = {&DecodeRangeAvx2<Bs + 1, D>...};
  if (HasAvx2F16c()) return kAvx2ByBits[bits - 1];
#endif
  return kByBits[bits - 1];  // bits is 2..16, validated
}

RangeFn GetRange(int64_t dtype, uint32_t bits) {
  using Widths = std::make_integer_sequence<int, kLatticeMaxBits>;
  if (dtype == kFloat32) return SelectRange<kFloat32>(bits, Widths{});
  if (dtype == kFloat16) return SelectRange<kFloat16>(bits, Widths{});
  return SelectRange<kBFloat16>(bits, Widths{});
}

// int8 compute (codec_cpu.h: DecodePairsInt8): pairs [begin, end) as the two bytes of their step
// in `table`, one by one.
template <int B>
void Int8Pairs(const LatticeParams& p, const uint8_t* seed, const uint8_t* table, uint64_t begin, uint64_t end,
               uint8_t* out) {
  constexpr uint32_t kMask = (uint32_t{1} << B) - 1;
  const uint64_t windowed = Windowed<B>(p);
  for (uint64_t i = begin; i < end; ++i) {
    uint32_t j;
    if (i < windowed) {
      uint32_t window;
      std::memcpy(&window, seed + ((i * B) >> 3), 4);
      j = (window >> ((i * B) & 7)) & kMask;
    } else {
      j = ReadIndex(seed, p.seed_bytes, i, B);
    }
    std::memcpy(out + 2 * (i - begin), table + 2 * j, 2);
  }
}

#ifdef HYPERONNX_AVX2
// Int8Pairs with AVX2: 8 steps unpacked at a time (Unpack8Avx2) and their byte pairs gathered
// from the table in one instruction; the ends as Int8Pairs.
template <int B>
__attribute__((target("avx2"))) void Int8PairsAvx2(const LatticeParams& p, const uint8_t* seed, const uint8_t* table,
                                                   uint64_t begin, uint64_t end, uint8_t* out) {
  const Unpack8Avx2<B> unpack;
  // the first 2 bytes of each 32-bit lane, packed into the low 8 bytes of each 128-bit half
  const __m256i pick = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
                                        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
  const uint64_t head = std::min(end, (begin + 7) / 8 * 8);
  Int8Pairs<B>(p, seed, table, begin, head, out);
  uint64_t i = head;
  for (; i + 8 <= end && (i / 8) * B + Unpack8Avx2<B>::kReach <= p.seed_bytes; i += 8) {
    const __m256i j = unpack(seed + (i / 8) * B);
    const __m256i v = _mm256_shuffle_epi8(_mm256_i32gather_epi32(reinterpret_cast<const int*>(table), j, 2), pick);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * (i - begin)),
                     _mm256_castsi256_si128(_mm256_permute4x64_epi64(v, 0x08)));
  }
  Int8Pairs<B>(p, seed, table, i, end, out + 2 * (i - begin));
}
#endif

using Int8Fn = void (*)(const LatticeParams&, const uint8_t*, const uint8_t*, uint64_t, uint64_t, uint8_t*);

#ifdef HYPERONNX_AVX2  // x86 only: AVX-512 VBMI (aarch64 builds have no such loop)
// The VBMI unpack of 64 b-bit steps (b <= 8): 64-bit lane g takes bytes [gb, gb + 8) of the 8b
// bytes; byte t of a lane is then its bits [tb, tb + 8) (vpmultishiftqb).
struct ByteSpread {
  uint8_t spread[64];
  uint8_t shift[64];
};

constexpr ByteSpread MakeByteSpread(int b) {
  ByteSpread layout{};
  for (int g = 0; g < 8; ++g) {
    for (int t = 0; t < 8; ++t) {
      layout.spread[8 * g + t] = static_cast<uint8_t>(g * b + t);  // < 64
      layout.shift[8 * g + t] = static_cast<uint8_t>(t * b);
    }
  }
  return layout;
}

// (GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined: GCC bug 105593.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// Int8PairsAvx2 for b <= 8 with AVX-512 VBMI, 64 steps at a time: unpacked to bytes (each
// step's b * 8 bits spread to one 64-bit lane, then vpmultishiftqb), both coordinates' bytes
// looked up in tables held in registers (vpermi2b: 128 entries; b = 8: two, chosen by the top
// bit), interleaved into pairs. Other steps go through Int8PairsAvx2.
template <int B>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx2"))) void Int8PairsVbmi(
    const LatticeParams& p, const uint8_t* seed, const uint8_t* table, uint64_t begin, uint64_t end, uint8_t* out) {
  static_assert(B <= 8, "byte-sized steps");
  const uint8_t* split = table + 2 * (size_t{1} << B) + 2;
  __m512i tx[4], ty[4];  // entries 0-63, 64-127, 128-191, 192-255
  for (int t = 0; t < 4; ++t) {
    tx[t] = _mm512_loadu_si512(split + 64 * t);
    ty[t] = _mm512_loadu_si512(split + 256 + 64 * t);
  }
  static constexpr ByteSpread kSpread = MakeByteSpread(B);
  const __m512i spread_v = _mm512_loadu_si512(kSpread.spread), shifts_v = _mm512_loadu_si512(kSpread.shift);
  const __m512i mask = _mm512_set1_epi8(static_cast<char>((1u << B) - 1));
  const __m512i first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  const uint64_t head = std::min(end, (begin + 7) / 8 * 8);
  if (head > begin) Int8Pairs<B>(p, seed, table, begin, head, out);
  uint64_t i = head;
  for (; i + 64 <= end; i += 64) {
    // the 64 steps' 8B bytes: inside the seed (masked load: nothing past them is read)
    const __m512i bytes = _mm512_maskz_loadu_epi8(B == 8 ? ~__mmask64{0} : (__mmask64{1} << (8 * B)) - 1,
                                                  seed + (i / 8) * B);
    const __m512i j = B == 8 ? bytes
                             : _mm512_and_si512(_mm512_multishift_epi64_epi8(shifts_v, _mm512_permutexvar_epi8(spread_v, bytes)),
                                                mask);
    __m512i x = _mm512_permutex2var_epi8(tx[0], j, tx[1]);
    __m512i y = _mm512_permutex2var_epi8(ty[0], j, ty[1]);
    if (B == 8) {
      const __mmask64 high = _mm512_movepi8_mask(j);
      x = _mm512_mask_blend_epi8(high, x, _mm512_permutex2var_epi8(tx[2], j, tx[3]));
      y = _mm512_mask_blend_epi8(high, y, _mm512_permutex2var_epi8(ty[2], j, ty[3]));
    }
    const __m512i lo = _mm512_unpacklo_epi8(x, y), hi = _mm512_unpackhi_epi8(x, y);  // pairs 0-7 / 8-15 of each 16
    _mm512_storeu_si512(out + 2 * (i - begin), _mm512_permutex2var_epi64(lo, first, hi));
    _mm512_storeu_si512(out + 2 * (i - begin) + 64, _mm512_permutex2var_epi64(lo, second, hi));
  }
  if (i < end) Int8PairsAvx2<B>(p, seed, table, i, end, out + 2 * (i - begin));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

bool HasVbmi() {
  static const bool has = HasAvx512() && __builtin_cpu_supports("avx512vbmi") != 0;
  return has;
}

// The VBMI loop for b <= 8, the AVX2 one above.
template <int B>
constexpr Int8Fn kVbmiOrAvx2 = B <= 8 ? &Int8PairsVbmi<B <= 8 ? B : 8> : &Int8PairsAvx2<B>;
#endif  // HYPERONNX_AVX2

template <int... Bs>
Int8Fn SelectInt8(uint32_t bits, std::integer_sequence<int, Bs...>) {
#ifdef HYPERONNX_AVX2
  static const Int8Fn kVbmiByBits[] = {kVbmiOrAvx2<Bs + 1>...};
  if (HasVbmi()) return kVbmiByBits[bits - 1];
  static const Int8Fn kAvx2ByBits[] = {&Int8PairsAvx2<Bs + 1>...};
  if (HasAvx2()) return kAvx2ByBits[bits - 1];
#endif
  static const Int8Fn kByBits[] = {&Int8Pairs<Bs + 1>...};
  return kByBits[bits - 1];
}

// Tables by trajectory, kept while a node uses them.
std::shared_ptr<const std::vector<float>> SharedTable(const LatticeParams& p) {
  using Key = std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>;
  static std::mutex mutex;
  static auto* tables = new std::map<Key, std::weak_ptr<const std::vector<float>>>;  // never destroyed
  const Key key{p.bits, p.generator, FloatBits(p.alpha), FloatBits(p.beta)};
  std::lock_guard<std::mutex> lock(mutex);
  if (auto table = (*tables)[key].lock()) return table;
  // one zero entry past the last step: a b-bit index is at most N, so no clamping in the loop
  auto table = std::make_shared<std::vector<float>>(2 * (size_t{p.points} + 1));
  for (uint32_t j = 0; j < p.points; ++j) {
    (*table)[2 * j] = LatticeCoordinate(p, j);
    (*table)[2 * j + 1] = LatticeCoordinate(p, LatticeRow(p, j));
  }
  for (auto it = tables->begin(); it != tables->end();) it = it->second.expired() ? tables->erase(it) : std::next(it);
  (*tables)[key] = table;
  return table;
}

}  // namespace

LatticeCpuDecoder::LatticeCpuDecoder(const LatticeParams& params)
    : params_(params), table_(SharedTable(params)) {}

bool LatticeCpuDecoder::DecodePairs(const uint8_t* seed, const uint16_t* scales, uint64_t begin, uint64_t end,
                                    void* out) const {
  if (begin >= end) return false;
  Job job;
  job.params = &params_;
  job.seed = seed;
  job.scales = scales;
  job.table = table_->data();
  job.out = out;
  job.base = begin;
  return GetRange(params_.dtype, params_.bits)(job, begin, end);
}

bool LatticeCpuDecoder::PrepareInt8(Int8Info* info) {
  const std::vector<float>& table = *table_;
  float max_abs = 0.0f;
  for (uint32_t e = 0; e < 2 * params_.points; ++e) max_abs = std::max(max_abs, std::fabs(table[e]));
  if (!(max_abs >= kInt8MinMax)) return false;  // values this small: float32 compute
  const size_t steps = size_t{1} << params_.bits;
  int8_.assign(2 * steps + 2 + (params_.bits <= 8 ? 512 : 0), 128);
  for (uint32_t e = 0; e < 2 * params_.points; ++e) int8_[e] = Int8Byte(table[e], max_abs);
  if (params_.bits <= 8) {
    for (uint32_t j = 0; j < params_.points; ++j) {
      int8_[2 * steps + 2 + j] = int8_[2 * j];
      int8_[2 * steps + 2 + 256 + j] = int8_[2 * j + 1];
    }
  }
  info->unit = max_abs / 127.0f;
  info->group = params_.group;
  info->scale_unit = params_.scale_unit;
  return true;
}

bool LatticeCpuDecoder::PrepareCodes(float* table, Int8Info* info) {
  if (params_.bits > 8) return false;  // centre c + k up to 2^15: no small table
  const uint32_t n = params_.points, c = (n - 1) / 2;  // N = 2^b - 1 is odd
  if (c + 1 > kCodeTable) return false;
  std::fill(table, table + kCodeTable, 0.0f);
  for (uint32_t k = 0; k <= c; ++k) table[k] = LatticeCoordinate(params_, c + k);
  // each coordinate m's code, its value checked bit for bit: v(m) = +-T[|m - c|]
  std::vector<uint8_t> code(n);
  for (uint32_t m = 0; m < n; ++m) {
    const uint32_t k = m >= c ? m - c : c - m;
    const float v = m >= c ? table[k] : -table[k];
    if (FloatBits(v) != FloatBits(LatticeCoordinate(params_, m))) return false;
    code[m] = static_cast<uint8_t>(k | (m >= c ? 0u : 0x80u));
  }
  const size_t steps = size_t{1} << params_.bits;
  codes_.assign(2 * steps + 2 + 512, 0);  // past N: code 0 (never read: the seed was validated)
  for (uint32_t j = 0; j < n; ++j) {
    codes_[2 * j] = code[j];
    codes_[2 * j + 1] = code[LatticeRow(params_, j)];
    codes_[2 * steps + 2 + j] = codes_[2 * j];
    codes_[2 * steps + 2 + 256 + j] = codes_[2 * j + 1];
  }
  info->group = params_.group;
  info->scale_unit = params_.scale_unit;
  return true;
}

void LatticeCpuDecoder::DecodeCodes(const uint8_t* seed, uint64_t begin, uint64_t end, uint8_t* out) const {
  if (begin >= end || codes_.empty()) return;
  SelectInt8(params_.bits, std::make_integer_sequence<int, kLatticeMaxBits>{})(params_, seed, codes_.data(), begin, end, out);
}

void LatticeCpuDecoder::DecodePairsInt8(const uint8_t* seed, uint64_t begin, uint64_t end, uint8_t* out) const {
  if (begin >= end) return;
  SelectInt8(params_.bits, std::make_integer_sequence<int, kLatticeMaxBits>{})(params_, seed, int8_.data(), begin, end, out);
}

}  // namespace hyperonnx
