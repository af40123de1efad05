// FORMAT.md §4 bit unpacking with AVX2, shared by both codecs' vector loops: the 8 B-bit indices
// of a byte-aligned group (pairs [8g, 8g + 8) start at byte g * B) into the 8 32-bit lanes.
#pragma once

#include <cstdint>

#include "decode_weights_cpu.h"

#ifdef HYPERONNX_AVX2
#include <immintrin.h>

namespace hyperonnx {

// Where the 8 indices of a group sit: indices 0-3 are read from a 16-byte load at the group's
// start, 4-7 from one at byte 4B/8; the shuffle puts each index's 4-byte window in its 32-bit
// lane (within its 128-bit half), the shift aligns it.
struct Avx2Layout {
  int8_t shuffle[32];
  int32_t shift[8];
};

constexpr Avx2Layout MakeAvx2Layout(int b) {
  Avx2Layout layout{};
  for (int k = 0; k < 8; ++k) {
    const int bit = k * b;
    const int byte = bit / 8 - (k < 4 ? 0 : (4 * b) / 8);  // <= 12 for b <= 24: inside the load
    for (int t = 0; t < 4; ++t) layout.shuffle[4 * k + t] = static_cast<int8_t>(byte + t);
    layout.shift[k] = bit % 8;
  }
  return layout;
}

template <int B>
struct Unpack8Avx2 {
  static constexpr uint64_t kHigh = (4 * B) / 8;
  static constexpr uint64_t kReach = kHigh + 16;  // bytes read from the group's start: check the seed holds them
  static constexpr Avx2Layout kLayout = MakeAvx2Layout(B);
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

}  // namespace hyperonnx
#endif
