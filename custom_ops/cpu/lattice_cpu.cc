// DecodeWeights, CPU decoder of the `lattice` codec (docs/FORMAT.md §7). Bit-identical to
// hyperonnx.codec.lattice.decode.
//
// A pair's two values are v(x) * S and v(y) * S, where (x, y) depends on its step j only and S on
// its group only. So a node keeps a table of the unscaled pair (v(j), v(row(j))) of every step,
// computed once with the §7.3 operations (LatticeCoordinate), and the hot loop is a bit-unpack,
// one table load, two float32 multiplications by the group's scale and the conversion to the
// output type. Steps >= N fail the run (rule 7) after the loop: the scalar loop clamps them into
// the table (a branch-free select); the vector loops (AVX2 + F16C chosen at run time on x86, NEON
// always on aarch64) read the table's zero entry N (a b-bit step is at most N = 2^b - 1), which
// measured 1.3x faster for float16 output.
#include "lattice_cpu.h"

#include "decode_weights_cpu.h"
#include "neon.h"
#include "pair_tasks.h"

#ifdef HYPERONNX_AVX2
#include <immintrin.h>
#endif

#include <algorithm>
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
  void* out;
};

// Pairs below this one read their step from one 4-byte window inside the seed.
template <int B>
uint64_t Windowed(const LatticeParams& p) {
  return p.seed_bytes >= 4 ? ((p.seed_bytes - 4) * 8) / B + 1 : 0;
}

// Pairs [i, stop) of one group (scale s); `bad` collects steps >= N.
template <int B, int64_t D>
inline void DecodePairs(const Job& job, uint64_t i, uint64_t stop, uint64_t windowed, float s, uint32_t* bad) {
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
    out[2 * i] = Output<D>::Convert(x);
    out[2 * i + 1] = Output<D>::Convert(y);
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
    DecodePairs<B, D>(job, i, stop, windowed, LatticeScale(p, job.scales[q]), &bad);
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

// DecodeRange with AVX2 and F16C, same contract: within a group, 8 pairs at a time are unpacked
// and looked up as in DecodePairs into 16 floats, then scaled, converted and stored as vectors.
// (Unpacking and looking up with gathers measured slower on AMD EPYC than these scalar loads.)
template <int B, int64_t D>
__attribute__((target("avx2,f16c"))) bool DecodeRangeAvx2(const Job& job, uint64_t begin, uint64_t end) {
  using T = typename Output<D>::T;
  constexpr uint32_t kMask = (uint32_t{1} << B) - 1;
  const LatticeParams& p = *job.params;
  const uint64_t pairs_per_group = p.group / 2;
  const uint64_t windowed = Windowed<B>(p);
  const float* table = job.table;
  T* out = static_cast<T*>(job.out);
  uint32_t bad = 0;
  uint64_t vector = 0;
  for (uint64_t i = begin; i < end;) {
    const uint64_t q = i / pairs_per_group;
    const uint64_t stop = std::min(end, (q + 1) * pairs_per_group);
    const float s = LatticeScale(p, job.scales[q]);
    const __m256 scale = _mm256_set1_ps(s);
    const uint64_t start = i;
    for (; i + 8 <= stop && i + 7 < windowed; i += 8) {
      long long pairs[8];  // (x, y) of each pair as one 64-bit word, assembled in registers
      for (int k = 0; k < 8; ++k) {
        const uint64_t bit = (i + k) * B;
        uint32_t window;
        std::memcpy(&window, job.seed + (bit >> 3), 4);
        const uint32_t j = (window >> (bit & 7)) & kMask;
        bad |= (j + 1) >> B;  // j == 2^B - 1 = N: the table's sentinel entry, rule 7
        std::memcpy(&pairs[k], table + 2 * j, 8);
      }
      const __m256 low = _mm256_castsi256_ps(_mm256_set_epi64x(pairs[3], pairs[2], pairs[1], pairs[0]));
      const __m256 high = _mm256_castsi256_ps(_mm256_set_epi64x(pairs[7], pairs[6], pairs[5], pairs[4]));
      Store16<D>(_mm256_mul_ps(low, scale), _mm256_mul_ps(high, scale), out + 2 * i);
    }
    vector += i - start;
    DecodePairs<B, D>(job, i, stop, windowed, s, &bad);
    i = stop;
  }
  CountVectorPairs(vector);
  return bad != 0;
}

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

// DecodeRange with NEON, the AVX2 loop's structure: within a group, 8 pairs at a time are
// unpacked and looked up as in DecodePairs into 16 floats, then scaled (vmulq_f32: one rounded
// float32 multiplication per lane, as the scalar loop), converted and stored as vectors.
template <int B, int64_t D>
bool DecodeRangeNeon(const Job& job, uint64_t begin, uint64_t end) {
  using T = typename Output<D>::T;
  constexpr uint32_t kMask = (uint32_t{1} << B) - 1;
  const LatticeParams& p = *job.params;
  const uint64_t pairs_per_group = p.group / 2;
  const uint64_t windowed = Windowed<B>(p);
  const float* table = job.table;
  T* out = static_cast<T*>(job.out);
  uint32_t bad = 0;
  uint64_t vector = 0;
  for (uint64_t i = begin; i < end;) {
    const uint64_t q = i / pairs_per_group;
    const uint64_t stop = std::min(end, (q + 1) * pairs_per_group);
    const float s = LatticeScale(p, job.scales[q]);
    const float32x4_t scale = vdupq_n_f32(s);
    const uint64_t start = i;
    for (; i + 8 <= stop && i + 7 < windowed; i += 8) {
      float values[16];
      for (int k = 0; k < 8; ++k) {
        const uint64_t bit = (i + k) * B;
        uint32_t window;
        std::memcpy(&window, job.seed + (bit >> 3), 4);
        const uint32_t j = (window >> (bit & 7)) & kMask;
        bad |= (j + 1) >> B;  // j == 2^B - 1 = N: the table's sentinel entry, rule 7
        std::memcpy(values + 2 * k, table + 2 * j, 8);
      }
      float32x4_t v[4];
      for (int n = 0; n < 4; ++n) v[n] = vmulq_f32(vld1q_f32(values + 4 * n), scale);
      Store16Neon<D>(v, out + 2 * i);
    }
    vector += i - start;
    DecodePairs<B, D>(job, i, stop, windowed, s, &bad);
    i = stop;
  }
  CountVectorPairs(vector);
  return bad != 0;
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

LatticeCpuDecoder::LatticeCpuDecoder(const LatticeParams& params) : params_(params), table_(SharedTable(params)) {}

uint64_t LatticeCpuDecoder::FirstNonFiniteScale(const uint16_t* scales) const {
  uint64_t q = 0;
  while (q < params_.num_scales && HalfIsFinite(scales[q])) ++q;
  return q;
}

bool LatticeCpuDecoder::Decode(const Ort::KernelContext& context, const uint8_t* seed, const uint16_t* scales,
                               void* out) const {
  const LatticeParams& p = params_;
  Job job;
  job.params = &p;
  job.seed = seed;
  job.scales = scales;
  job.table = table_->data();
  job.out = out;
  const RangeFn range = GetRange(p.dtype, p.bits);
  // the whole pairs; the last, half pair of an odd tensor below
  bool bad = RunPairTasks(context, p.num_elements / 2,
                          [&](uint64_t begin, uint64_t end) { return range(job, begin, end); });
  if (p.num_elements % 2) {  // the last pair: its second value is computed and dropped
    const uint64_t i = p.num_pairs - 1;
    uint32_t j = ReadIndex(seed, p.seed_bytes, i, p.bits);
    if (j >= p.points) {
      bad = true;
      j = 0;
    }
    const float x = job.table[2 * j] * LatticeScale(p, scales[(2 * i) / p.group]);
    if (p.dtype == kFloat32) {
      static_cast<uint32_t*>(out)[2 * i] = FloatBits(x);
    } else {
      static_cast<uint16_t*>(out)[2 * i] = p.dtype == kFloat16 ? FloatToHalf(x) : FloatToBFloat16(x);
    }
  }
  return !bad;
}

}  // namespace hyperonnx
