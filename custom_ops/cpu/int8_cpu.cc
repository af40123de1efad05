// int8 compute for DecodeMatMul / DecodeGemm: see int8_cpu.h for the design.
#include "int8_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "decode_weights_cpu.h"
#include "pair_tasks.h"

#ifdef HYPERONNX_AVX2
#include <immintrin.h>
#endif
#include "neon.h"
#if defined(HYPERONNX_NEON) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

namespace hyperonnx {
namespace {

constexpr size_t kTile = 16;      // output columns per panel tile: 16 int32 lanes (one AVX-512 register)
constexpr size_t kBlock = 32;     // reduction elements per activation scale
// Many rows: tiles per task (each decodes its own columns once per call), about 8 tasks a product
// so that threads share the work, 4 to 16 tiles.
constexpr size_t kTasks = 8, kMaxTaskTiles = 16;
// Few rows (W [K, N]): up to 8 tasks of whole blocks, partial outputs of at most 16 MB, panels of
// one block by up to 128 tiles (2048 columns, 64 KB).
constexpr size_t kFewRows = 8, kFewTasks = 8, kChunkTiles = 128;
constexpr size_t kFewAccumulatorBytes = 16 << 20;

// Blocks whose largest magnitude is below this count as zero: 127 / max must stay finite.
constexpr float kMinBlockMax = 7.52316385e-37f;  // 2^-120

size_t RoundUp(size_t x, size_t to) { return (x + to - 1) / to * to; }

// Block b of x[k] * s[k] (s null: x[k]), k < depth, quantised: q[k] in [-127, 127] (0 past
// depth), the block's scale d[b] = max |x * s| / 127 and the sum of its q (the VNNI loop's
// correction). A block holding Inf or NaN gets q = 0 and d = NaN (its outputs are NaN); one whose
// largest magnitude is below kMinBlockMax counts as zero (d = 0).
void QuantiseBlock(const float* x, const float* s, size_t depth, size_t b, int8_t* q, float* d, int32_t* sum) {
  const size_t k0 = b * kBlock, kn = std::min(kBlock, depth - k0);
  float v[kBlock];
  float max_abs = 0.0f;
  bool finite = true;
  for (size_t i = 0; i < kn; ++i) {
    v[i] = s != nullptr ? x[k0 + i] * s[k0 + i] : x[k0 + i];
    finite = finite && std::isfinite(v[i]);
    max_abs = std::max(max_abs, std::fabs(v[i]));
  }
  int8_t* qb = q + k0;
  std::fill(qb, qb + kBlock, int8_t{0});
  sum[b] = 0;
  d[b] = !finite ? std::nanf("") : max_abs < kMinBlockMax ? 0.0f : max_abs / 127.0f;
  if (!finite || max_abs < kMinBlockMax) return;
  const float inv = 127.0f / max_abs;
  int32_t total = 0;
  for (size_t i = 0; i < kn; ++i) {
    // |v * inv| <= 127 up to one rounding: nearest-even as cvtps2dq rounds
    const int32_t r = static_cast<int32_t>(std::nearbyint(v[i] * inv));
    qb[i] = static_cast<int8_t>(r);
    total += r;
  }
  sum[b] = total;
}

void QuantiseRowPortable(const float* x, const float* s, size_t depth, size_t blocks, int8_t* q, float* d,
                         int32_t* sum) {
  for (size_t b = 0; b < blocks; ++b) QuantiseBlock(x, s, depth, b, q, d, sum);
}

#ifdef HYPERONNX_AVX2
// QuantiseRowPortable's results with AVX2 for whole blocks (the same operations lane by lane; the
// maximum of |v| taken on the bit patterns, which order non-negative floats and put Inf and NaN
// above every finite value).
__attribute__((target("avx2"))) void QuantiseRowAvx2(const float* x, const float* s, size_t depth, size_t blocks,
                                                     int8_t* q, float* d, int32_t* sum) {
  const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // packs work within 128-bit halves
  for (size_t b = 0; b < blocks; ++b) {
    const size_t k0 = b * kBlock;
    if (k0 + kBlock > depth) {
      QuantiseBlock(x, s, depth, b, q, d, sum);
      continue;
    }
    __m256 v[4];
    __m256i top = _mm256_setzero_si256();
    for (size_t i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + k0 + 8 * i);
      if (s != nullptr) v[i] = _mm256_mul_ps(v[i], _mm256_loadu_ps(s + k0 + 8 * i));
      top = _mm256_max_epi32(top, _mm256_and_si256(_mm256_castps_si256(v[i]), magnitude));
    }
    __m128i t = _mm_max_epi32(_mm256_castsi256_si128(top), _mm256_extracti128_si256(top, 1));
    t = _mm_max_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    t = _mm_max_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    const uint32_t bits = static_cast<uint32_t>(_mm_cvtsi128_si32(t));
    const float max_abs = BitsFloat(bits);
    if (bits >= 0x7f800000u || max_abs < kMinBlockMax) {
      std::memset(q + k0, 0, kBlock);
      sum[b] = 0;
      d[b] = bits >= 0x7f800000u ? std::nanf("") : 0.0f;
      continue;
    }
    d[b] = max_abs / 127.0f;
    const __m256 inv = _mm256_set1_ps(127.0f / max_abs);
    __m256i r[4];
    for (size_t i = 0; i < 4; ++i) r[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k0), _mm256_permutevar8x32_epi32(bytes, order));
    const __m256i total = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    sum[b] = _mm_cvtsi128_si32(h);
  }
}
#endif

using QuantiseFn = void (*)(const float*, const float*, size_t, size_t, int8_t*, float*, int32_t*);

QuantiseFn GetQuantise() {
#ifdef HYPERONNX_AVX2
  if (HasAvx2()) return &QuantiseRowAvx2;
#endif
  return &QuantiseRowPortable;
}

// The group scale of column class c in each row k (transB=0): S of element (k, c * class_width).
void ClassScales(const EncodedWeight& w, const Int8Plan& plan, size_t c, float* s) {
  const uint64_t group = w.int8().group, first = uint64_t{c} * plan.class_width;
  uint64_t q = first / group, r = first % group;  // the group and the offset in it, row by row
  const uint64_t step_q = plan.n / group, step_r = plan.n % group;
  for (size_t k = 0; k < plan.k; ++k) {
    s[k] = w.GroupScale(q);
    q += step_q;
    r += step_r;
    if (r >= group) {
      r -= group;
      ++q;
    }
  }
}

// dst[4i + j] = rows[j * stride + i] (i < kTile, j < 4): one quad of 4 weight rows as 16 lanes.
inline void Interleave4(const uint8_t* rows, size_t stride, uint8_t* dst) {
#ifdef __SSE2__
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows));
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + stride));
  const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + 2 * stride));
  const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + 3 * stride));
  const __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
  const __m128i ce_lo = _mm_unpacklo_epi8(c, e), ce_hi = _mm_unpackhi_epi8(c, e);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi16(ab_lo, ce_lo));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm_unpackhi_epi16(ab_lo, ce_lo));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 32), _mm_unpacklo_epi16(ab_hi, ce_hi));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 48), _mm_unpackhi_epi16(ab_hi, ce_hi));
#else
  for (size_t i = 0; i < kTile; ++i) {
    for (size_t j = 0; j < 4; ++j) dst[4 * i + j] = rows[j * stride + i];
  }
#endif
}

// The panel of weight rows [k0, k0 + depth) (depth a multiple of 4) and output columns
// [n0, n0 + nb) in `tiles` tiles (transB=0): tile t holds depth / 4 quads of 64 bytes (quad s:
// lane i = rows k0 + 4s .. k0 + 4s + 3 of column n0 + 16t + i; 128, i.e. 0, past the weight).
void PackColumns(const EncodedWeight& w, const Int8Plan& plan, size_t k0, size_t depth, size_t n0, size_t nb,
                 size_t tiles, uint8_t* panel) {
  const size_t width = tiles * kTile;
  std::vector<uint8_t> rows(4 * width, 128);
  for (size_t k = 0; k < depth; k += 4) {
    for (size_t j = 0; j < 4; ++j) {
      uint8_t* row = rows.data() + j * width;
      if (k0 + k + j < plan.k) {
        w.DecodeInt8(uint64_t{k0 + k + j} * plan.n + n0, nb, row);
      } else {
        std::fill(row, row + nb, uint8_t{128});
      }
    }
    for (size_t t = 0; t < tiles; ++t) Interleave4(rows.data() + t * kTile, width, panel + (t * depth + k) * kTile);
  }
}

// The panel of weight rows [n0, n0 + nb) (transB=1) over the whole depth, laid out as PackColumns'; lane scale (t, b, i)
// = the group scale of block b of row n0 + 16t + i times the weight unit (0 past the weight).
void PackRows(const EncodedWeight& w, const Int8Plan& plan, size_t n0, size_t nb, size_t tiles, size_t kp,
              uint8_t* panel, float* lane) {
  const size_t blocks = kp / kBlock;
  const uint64_t group = w.int8().group;
  std::vector<uint8_t> row(kp, 128);  // past K: 128
  for (size_t i = 0; i < tiles * kTile; ++i) {
    uint8_t* tile = panel + (i / kTile) * kp * kTile;
    float* scales = lane + (i / kTile) * blocks * kTile + i % kTile;
    if (i < nb) {
      const uint64_t first = uint64_t{n0 + i} * plan.k;
      w.DecodeInt8(first, plan.k, row.data());
      uint64_t q = first / group, r = first % group;
      for (size_t b = 0; b < blocks; ++b) {
        scales[b * kTile] = w.GroupScale(q) * w.int8().unit;
        for (r += kBlock; r >= group; r -= group) ++q;
      }
    } else {
      std::fill(row.begin(), row.end(), uint8_t{128});
      for (size_t b = 0; b < blocks; ++b) scales[b * kTile] = 0.0f;
    }
    for (size_t s = 0; s < kp / 4; ++s) std::memcpy(tile + s * 4 * kTile + (i % kTile) * 4, row.data() + 4 * s, 4);
  }
}

// Up to kRows quantised activation rows (QuantiseRow's q, d, sum of one class), row r at
// q + r * q_stride and d, sum + r * block_stride. The VNNI loop keeps all kRows rows' sums in
// registers, so each weight load serves kRows rows (many-row products: prompts, batches).
constexpr size_t kRows = 8;
struct ActivationRows {
  const int8_t* q;
  const float* d;
  const int32_t* sum;
  size_t q_stride, block_stride, count;
};

// One tile against each row r: y[r * kTile + i] = sum over blocks b of
// float(sum_{k in b} q[k] * (tile byte (k, i) - 128)) * d[b] * lane[b][i], i < kTile.
using TileFn = void (*)(const uint8_t* tile, const ActivationRows& rows, const float* lane, size_t blocks, float* y);

void TilePortable(const uint8_t* tile, const ActivationRows& rows, const float* lane, size_t blocks, float* y) {
  for (size_t r = 0; r < rows.count; ++r) {
    const int8_t* q = rows.q + r * rows.q_stride;
    const float* d = rows.d + r * rows.block_stride;
    float acc[kTile] = {};
    for (size_t b = 0; b < blocks; ++b) {
      int32_t s[kTile] = {};
      for (size_t k = b * kBlock; k < (b + 1) * kBlock; k += 4) {
        const uint8_t* quad = tile + k * kTile;
        for (size_t i = 0; i < kTile; ++i) {
          for (size_t j = 0; j < 4; ++j) s[i] += int32_t{q[k + j]} * (int32_t{quad[4 * i + j]} - 128);
        }
      }
      for (size_t i = 0; i < kTile; ++i) acc[i] += static_cast<float>(s[i]) * (d[b] * lane[b * kTile + i]);
    }
    std::memcpy(y + r * kTile, acc, sizeof acc);
  }
}

#ifdef HYPERONNX_AVX2
// maddubs multiplies unsigned by signed bytes into saturating 16-bit pair sums: |q| times the
// weight carrying q's sign stays below 2 * 127 * 127, so nothing saturates.
__attribute__((target("avx2,fma"))) void TileAvx2(const uint8_t* tile, const ActivationRows& rows, const float* lane,
                                                  size_t blocks, float* y) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  for (size_t r = 0; r < rows.count; ++r) {
    const int8_t* q = rows.q + r * rows.q_stride;
    const float* d = rows.d + r * rows.block_stride;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (size_t b = 0; b < blocks; ++b) {
      __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
      for (size_t k = b * kBlock; k < (b + 1) * kBlock; k += 4) {
        int32_t x4;
        std::memcpy(&x4, q + k, 4);
        const __m256i x = _mm256_set1_epi32(x4), ax = _mm256_sign_epi8(x, x);
        const __m256i w0 = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + k * kTile)), flip);
        const __m256i w1 =
            _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + k * kTile + 32)), flip);
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w0, x)), ones));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w1, x)), ones));
      }
      const __m256 db = _mm256_set1_ps(d[b]);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(db, _mm256_loadu_ps(lane + b * kTile)), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(db, _mm256_loadu_ps(lane + b * kTile + 8)), acc1);
    }
    _mm256_storeu_ps(y + r * kTile, acc0);
    _mm256_storeu_ps(y + r * kTile + 8, acc1);
  }
}

// (GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined: GCC bug 105593.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// vpdpbusd multiplies the unsigned weight bytes (q_w + 128) by the signed activations: the sum is
// then high by 128 * sum(q), subtracted per block. R rows share each weight load.
template <size_t R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void TileVnniRows(const uint8_t* tile,
                                                                                  const ActivationRows& rows,
                                                                                  const float* lane, size_t blocks,
                                                                                  float* y) {
  __m512 acc[R];
  for (size_t r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (size_t b = 0; b < blocks; ++b) {
    __m512i s[R];
    for (size_t r = 0; r < R; ++r) s[r] = _mm512_setzero_si512();
    for (size_t k = b * kBlock; k < (b + 1) * kBlock; k += 4) {
      const __m512i w = _mm512_loadu_si512(tile + k * kTile);
      for (size_t r = 0; r < R; ++r) {
        int32_t x4;
        std::memcpy(&x4, rows.q + r * rows.q_stride + k, 4);
        s[r] = _mm512_dpbusd_epi32(s[r], w, _mm512_set1_epi32(x4));
      }
    }
    const __m512 lb = _mm512_loadu_ps(lane + b * kTile);
    for (size_t r = 0; r < R; ++r) {
      const size_t at = r * rows.block_stride + b;
      const __m512i exact = _mm512_sub_epi32(s[r], _mm512_set1_epi32(128 * rows.sum[at]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(_mm512_set1_ps(rows.d[at]), lb), acc[r]);
    }
  }
  for (size_t r = 0; r < R; ++r) _mm512_storeu_ps(y + r * kTile, acc[r]);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

void TileVnni(const uint8_t* tile, const ActivationRows& rows, const float* lane, size_t blocks, float* y) {
  static constexpr TileFn kByRows[kRows] = {&TileVnniRows<1>, &TileVnniRows<2>, &TileVnniRows<3>, &TileVnniRows<4>,
                                            &TileVnniRows<5>, &TileVnniRows<6>, &TileVnniRows<7>, &TileVnniRows<8>};
  kByRows[rows.count - 1](tile, rows, lane, blocks, y);
}
#endif

#if defined(HYPERONNX_NEON) && defined(__linux__)
// The tile with NEON sdot (Armv8.2 dot product): the weight byte q + 128 flipped to the signed q,
// 4 products of one 32-bit lane summed exactly per instruction: TilePortable's integer sums; the
// float steps as TilePortable's (multiply, multiply, add: no FMA), so the output is its bits.
__attribute__((target("arch=armv8.2-a+dotprod"))) void TileSdot(const uint8_t* tile, const ActivationRows& rows, const float* lane,
                                                 size_t blocks, float* y) {
  const uint8x16_t flip = vdupq_n_u8(0x80);
  for (size_t r = 0; r < rows.count; ++r) {
    const int8_t* q = rows.q + r * rows.q_stride;
    const float* d = rows.d + r * rows.block_stride;
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (size_t b = 0; b < blocks; ++b) {
      int32x4_t s[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
      for (size_t k = b * kBlock; k < (b + 1) * kBlock; k += 4) {
        int32_t x4;
        std::memcpy(&x4, q + k, 4);
        const int8x16_t x = vreinterpretq_s8_s32(vdupq_n_s32(x4));
        const uint8_t* quad = tile + k * kTile;
        for (int i = 0; i < 4; ++i) {
          const int8x16_t wq = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(quad + 16 * i), flip));
          s[i] = vdotq_s32(s[i], wq, x);
        }
      }
      const float32x4_t db = vdupq_n_f32(d[b]);
      for (int i = 0; i < 4; ++i) {
        const float32x4_t scale = vmulq_f32(db, vld1q_f32(lane + b * kTile + 4 * i));
        acc[i] = vaddq_f32(acc[i], vmulq_f32(vcvtq_f32_s32(s[i]), scale));
      }
    }
    for (int i = 0; i < 4; ++i) vst1q_f32(y + r * kTile + 4 * i, acc[i]);
  }
}

bool HasDotProd() {
  const char* off = std::getenv("HYPERONNX_NO_DOTPROD");
  if (off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0) return false;
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
}
#endif

std::atomic<bool> force_portable{false};  // HyperonnxForcePortableInt8 (tests)

TileFn GetTile() {
  static const TileFn tile = [] {
#if defined(HYPERONNX_NEON) && defined(__linux__)
    if (HasDotProd()) return &TileSdot;
#endif
#ifdef HYPERONNX_AVX2
    if (HasAvx512() && __builtin_cpu_supports("avx512vnni")) return &TileVnni;
    if (HasAvx2() && __builtin_cpu_supports("fma")) return &TileAvx2;
#endif
    return &TilePortable;
  }();
  return force_portable.load(std::memory_order_relaxed) ? &TilePortable : tile;
}

const char* TileName(TileFn tile) {
#if defined(HYPERONNX_NEON) && defined(__linux__)
  if (tile == &TileSdot) return "sdot";
#endif
#ifdef HYPERONNX_AVX2
  if (tile == &TileVnni) return "vnni";
  if (tile == &TileAvx2) return "avx2";
#endif
  return "portable";
}

}  // namespace

// The int8 dot-product loop this CPU runs (tests): "vnni", "avx2", "sdot" or "portable".
extern "C" HYPERONNX_EXPORT const char* HyperonnxInt8Loop() { return TileName(GetTile()); }
// Tests: nonzero makes the int8 products run the portable loop from the next call on, 0 the CPU's
// best again (in process: a child process cannot run under qemu-user).
extern "C" HYPERONNX_EXPORT void HyperonnxForcePortableInt8(int on) { force_portable.store(on != 0); }

bool PlanInt8(const EncodedWeight& w, bool trans, Int8Plan* plan) {
  const uint64_t group = w.int8().group;
  const std::vector<int64_t>& shape = w.shape();
  if (group == 0 || shape.size() != 2 || shape[0] == 0 || shape[1] == 0) return false;
  plan->trans = trans;
  plan->k = static_cast<size_t>(trans ? shape[1] : shape[0]);
  plan->n = static_cast<size_t>(trans ? shape[0] : shape[1]);
  if (trans) return group % plan->k == 0 || std::gcd<uint64_t>(plan->k, group) % kBlock == 0;
  if (group % plan->n == 0) {  // whole rows in one group: one class
    plan->class_width = plan->n;
    return true;
  }
  plan->class_width = static_cast<size_t>(std::gcd<uint64_t>(plan->n, group));  // group borders fall on its multiples
  return plan->class_width % kTile == 0;
}

bool GemmInt8(const Ort::KernelContext& context, const EncodedWeight& w, const Int8Plan& plan, const float* a,
              size_t lda, size_t rows, float* y, const Int8Packed* packed) {
  const size_t depth = plan.k, n = plan.n, kp = RoundUp(depth, kBlock), blocks = kp / kBlock;
  const size_t classes = plan.trans ? 1 : (n + plan.class_width - 1) / plan.class_width;
  if (rows == 0) return true;
  // activations, quantised once per call for every class
  std::vector<int8_t> q(rows * classes * kp);
  std::vector<float> d(rows * classes * blocks);
  std::vector<int32_t> sum(rows * classes * blocks);
  const QuantiseFn quantise = GetQuantise();
  bool ok = ParallelTasks(context, classes, uint64_t{rows} * depth * classes, [&](size_t c) {
    std::vector<float> own;  // the class's scales: packed at creation, else computed here
    const float* s = nullptr;
    if (!plan.trans && packed != nullptr) {
      s = packed->class_scales.data() + c * depth;
    } else if (!plan.trans) {
      own.resize(depth);
      ClassScales(w, plan, c, own.data());
      s = own.data();
    }
    for (size_t m = 0; m < rows; ++m) {
      const size_t at = m * classes + c;
      quantise(a + m * lda, s, depth, blocks, q.data() + at * kp,
                  d.data() + at * blocks, sum.data() + at * blocks);
    }
  });
  if (!ok) return false;
  const TileFn tile_fn = GetTile();
  // The tiles of a panel (tiles [0, tt) of the columns from n0, blocks [b0, b0 + nblocks); tile t's
  // bytes at panel + t * panel_stride, its lane scales at lane + t * lane_stride) against every
  // activation row, written to out [rows, n] (added to it with `add`).
  auto run_tiles = [&](const uint8_t* panel, size_t panel_stride, const float* lane, size_t lane_stride, size_t tt,
                       size_t n0, size_t b0, size_t nblocks, float* out, bool add) {
    float result[kRows * kTile];
    for (size_t m = 0; m < rows; m += kRows) {
      for (size_t t = 0; t < tt; ++t) {
        const size_t column = n0 + t * kTile, cols = std::min(kTile, n - column);
        const size_t at = m * classes + (plan.trans ? 0 : column / plan.class_width);
        const ActivationRows block_rows{q.data() + at * kp + b0 * kBlock, d.data() + at * blocks + b0,
                                        sum.data() + at * blocks + b0, classes * kp, classes * blocks,
                                        std::min(kRows, rows - m)};
        tile_fn(panel + t * panel_stride, block_rows, lane + t * lane_stride, nblocks, result);
        for (size_t r = 0; r < block_rows.count; ++r) {
          float* to = out + (m + r) * n + column;
          const float* from = result + r * kTile;
          if (add) {
            for (size_t i = 0; i < cols; ++i) to[i] += from[i];
          } else {
            std::memcpy(to, from, 4 * cols);
          }
        }
      }
    }
  };
  const size_t tiles = (n + kTile - 1) / kTile;
  const size_t task_tiles = std::min(kMaxTaskTiles, std::max<size_t>(4, tiles / kTasks));
  if (packed != nullptr) {
    // the packed form: tasks own ranges of output columns, each reading its tiles' bytes front to
    // back once (no decode, no partial outputs), any number of rows
    const size_t tasks = (tiles + task_tiles - 1) / task_tiles;
    const size_t lane_stride = plan.trans ? blocks * kTile : 0;
    return ParallelTasks(context, tasks, uint64_t{rows} * depth * n, [&](size_t task) {
      const size_t t0 = task * task_tiles, tt = std::min(task_tiles, tiles - t0);
      run_tiles(packed->panel.data() + t0 * kp * kTile, kp * kTile, packed->lane.data() + t0 * lane_stride,
                lane_stride, tt, t0 * kTile, 0, blocks, y, false);
    });
  }
  if (!plan.trans && rows <= kFewRows) {
    // few rows (decode-bound): tasks own ranges of blocks, so each reads its weight rows front to
    // back in the seed, a block of kBlock rows at a time over chunks of columns, into partial
    // outputs summed at the end
    const size_t tasks = std::max<size_t>(1, std::min({kFewTasks, blocks, kFewAccumulatorBytes / (4 * rows * n)}));
    std::vector<float> partial((tasks - 1) * rows * n);
    ok = ParallelTasks(context, tasks, uint64_t{rows} * depth * n, [&](size_t task) {
      float* out = task == 0 ? y : partial.data() + (task - 1) * rows * n;
      std::fill(out, out + rows * n, 0.0f);
      const size_t chunk = std::min(tiles, kChunkTiles);
      std::vector<uint8_t> panel(chunk * kBlock * kTile);
      const std::vector<float> lane(chunk * kTile, w.int8().unit);
      for (size_t b = blocks * task / tasks; b < blocks * (task + 1) / tasks; ++b) {
        for (size_t t0 = 0; t0 < tiles; t0 += chunk) {
          const size_t tt = std::min(chunk, tiles - t0), n0 = t0 * kTile;
          PackColumns(w, plan, b * kBlock, kBlock, n0, std::min(tt * kTile, n - n0), tt, panel.data());
          run_tiles(panel.data(), kBlock * kTile, lane.data(), kTile, tt, n0, b, 1, out, true);
        }
      }
    });
    for (size_t t = 1; t < tasks; ++t) {
      const float* part = partial.data() + (t - 1) * rows * n;
      for (size_t e = 0; e < rows * n; ++e) y[e] += part[e];
    }
    return ok;
  }
  // more rows, or transB=1 (whose weight rows are the output columns, each read front to back):
  // tasks own ranges of output columns, their panel decoded once per call over the whole depth
  const size_t tasks = (tiles + task_tiles - 1) / task_tiles;
  return ParallelTasks(context, tasks, uint64_t{rows} * depth * n, [&](size_t task) {
    const size_t t0 = task * task_tiles, tt = std::min(task_tiles, tiles - t0);
    const size_t n0 = t0 * kTile, nb = std::min(tt * kTile, n - n0);
    std::vector<uint8_t> panel(tt * kp * kTile);
    std::vector<float> lane(tt * blocks * kTile, w.int8().unit);
    if (plan.trans) {
      PackRows(w, plan, n0, nb, tt, kp, panel.data(), lane.data());
    } else {
      PackColumns(w, plan, 0, kp, n0, nb, tt, panel.data());
    }
    run_tiles(panel.data(), kp * kTile, lane.data(), blocks * kTile, tt, n0, 0, blocks, y, false);
  });
}

void PackInt8(const EncodedWeight& w, const Int8Plan& plan, Int8Packed* packed) {
  const size_t kp = RoundUp(plan.k, kBlock), blocks = kp / kBlock, tiles = (plan.n + kTile - 1) / kTile;
  packed->panel.assign(tiles * kp * kTile, 128);
  if (plan.trans) {
    packed->lane.assign(tiles * blocks * kTile, 0.0f);
    PackRows(w, plan, 0, plan.n, tiles, kp, packed->panel.data(), packed->lane.data());
    return;
  }
  packed->lane.assign(blocks * kTile, w.int8().unit);
  const size_t classes = (plan.n + plan.class_width - 1) / plan.class_width;
  packed->class_scales.resize(classes * plan.k);
  for (size_t c = 0; c < classes; ++c) ClassScales(w, plan, c, packed->class_scales.data() + c * plan.k);
  // in slices of kMaxTaskTiles tiles: PackColumns' row buffer stays small for wide weights
  for (size_t t0 = 0; t0 < tiles; t0 += kMaxTaskTiles) {
    const size_t tt = std::min(kMaxTaskTiles, tiles - t0), n0 = t0 * kTile;
    PackColumns(w, plan, 0, kp, n0, std::min(tt * kTile, plan.n - n0), tt, packed->panel.data() + t0 * kp * kTile);
  }
}

}  // namespace hyperonnx
