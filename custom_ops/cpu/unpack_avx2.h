// FORMAT.md §4 bit unpacking with vectors, shared by both codecs' vector loops: the 8 B-bit
// indices of a byte-aligned group (pairs [8g, 8g + 8) start at byte g * B) into 8 32-bit lanes,
// with AVX2 on x86 (one 256-bit register) and NEON on aarch64 (two 128-bit registers), both from
// the same group layout.
#pragma once

#include <cstdint>

#include "decode_weights_cpu.h"
#include "neon.h"

#ifdef HYPERONNX_AVX2
#include <immintrin.h>
#endif

namespace hyperonnx {

#if defined(HYPERONNX_AVX2) || defined(HYPERONNX_NEON)
// Where the 8 indices of a group sit: indices 0-3 are read from a 16-byte load at the group's
// start, 4-7 from one at byte 4B/8; the shuffle puts each index's 4-byte window in its 32-bit
// lane (within its 128-bit half), the shift aligns it.
struct GroupLayout {
  int8_t shuffle[32];
  int32_t shift[8];
};

constexpr GroupLayout MakeGroupLayout(int b) {
  GroupLayout layout{};
  for (int k = 0; k < 8; ++k) {
    const int bit = k * b;
    const int byte = bit / 8 - (k < 4 ? 0 : (4 * b) / 8);  // <= 12 for b <= 24: inside the load
    for (int t = 0; t < 4; ++t) layout.shuffle[4 * k + t] = static_cast<int8_t>(byte + t);
    layout.shift[k] = bit % 8;
  }
  return layout;
}
#endif

#ifdef HYPERONNX_AVX2
template <int B>
struct Unpack8Avx2 {
  static constexpr uint64_t kHigh = (4 * B) / 8;
  static constexpr uint64_t kReach = kHigh + 16;  // bytes read from the group's start: check the seed holds them
  static constexpr GroupLayout kLayout = MakeGroupLayout(B);
  __m256i shuffle, shift, mask;
  __attribute__((target("avx2"))) Unpack8Avx2()
      : shuffle(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLayout.shuffle))),
        shift(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLayout.shift))),
        mask(_mm256_set1_epi32(static_cast<int>((uint32_t{1} << B) - 1))) {}
  __attribute__((target("avx2"))) __m256i operator()(const uint8_t* group) const {
    const __m256i bytes = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(group + kHigh)), 1);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(bytes, shuffle), shift), mask);
  }
};
#endif

#ifdef HYPERONNX_NEON
// The same unpack with NEON: each half of a group is a table shuffle (vqtbl1q_u8) of a 16-byte
// load and a per-lane right shift (vshlq_u32 by minus the shift). Indices 0-3 in `low`, 4-7 in `high`.
template <int B>
struct Unpack8Neon {
  static constexpr uint64_t kHigh = (4 * B) / 8;
  static constexpr uint64_t kReach = kHigh + 16;  // bytes read from the group's start: check the seed holds them
  static constexpr GroupLayout kLayout = MakeGroupLayout(B);
  uint8x16_t shuffle_low, shuffle_high;
  int32x4_t shift_low, shift_high;
  uint32x4_t mask;
  Unpack8Neon()
      : shuffle_low(vreinterpretq_u8_s8(vld1q_s8(kLayout.shuffle))),
        shuffle_high(vreinterpretq_u8_s8(vld1q_s8(kLayout.shuffle + 16))),
        shift_low(vnegq_s32(vld1q_s32(kLayout.shift))),
        shift_high(vnegq_s32(vld1q_s32(kLayout.shift + 4))),
        mask(vdupq_n_u32((uint32_t{1} << B) - 1)) {}
  void operator()(const uint8_t* group, uint32x4_t* low, uint32x4_t* high) const {
    *low = vandq_u32(vshlq_u32(vreinterpretq_u32_u8(vqtbl1q_u8(vld1q_u8(group), shuffle_low)), shift_low), mask);
    *high = vandq_u32(
        vshlq_u32(vreinterpretq_u32_u8(vqtbl1q_u8(vld1q_u8(group + kHigh), shuffle_high)), shift_high), mask);
  }
};
#endif

}  // namespace hyperonnx
