// DecodeWeights, CPU: the NEON pieces of the aarch64 decode loops. aarch64 always has NEON (and
// its float16 conversion), so there is no run-time check: on aarch64 the vector loops always run.
#pragma once

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define HYPERONNX_NEON 1
#include <arm_neon.h>

#include <cstdint>

namespace hyperonnx {

// FloatToHalf on 4 lanes. FCVTN rounds as FPCR says: to nearest even, subnormals kept (Linux
// starts processes with FPCR 0: no flush to zero, IEEE half format), overflow to Inf, NaN quieted
// with its payload's top bits: the software conversion's bits (tests/test_arm64.py checks it).
inline uint16x4_t HalfLanes(float32x4_t v) { return vreinterpret_u16_f16(vcvt_f16_f32(v)); }

// FloatToBFloat16 on 4 lanes: the upper halves of the rounded bits (NaN: quieted, not rounded).
inline uint16x4_t BFloat16Lanes(float32x4_t v) {
  const uint32x4_t u = vreinterpretq_u32_f32(v);
  const uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
  const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), odd), 16);
  const uint32x4_t quiet = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
  const uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));
  return vmovn_u32(vbslq_u32(nan, quiet, rounded));
}

}  // namespace hyperonnx

#endif
