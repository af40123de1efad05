// Float compute from codes packed at kernel creation: see packed_cpu.h.
#include "packed_cpu.h"

#include <algorithm>
#include <cstring>

#include "decode_weights_cpu.h"
#include "pair_tasks.h"

#ifdef HYPERONNX_AVX2
#include <immintrin.h>
#endif

namespace hyperonnx {
namespace {

constexpr size_t kFewRows = 8;  // up to this many rows: accumulators in registers, no panel
constexpr size_t kPanelDepth = 256;  // many rows: panel depth (256 x 64 floats, 64 KB)

// Where column c of a strip sits among its row's 64 codes: the decode's unpacks leave position
// 16L + 4q + r in lane 4L + r of register q, which must hold column 16q + 4L + r.
struct CodeOrder {
  uint8_t at[kCodeStrip];
};
constexpr CodeOrder MakeCodeOrder() {
  CodeOrder o{};
  for (size_t c = 0; c < kCodeStrip; ++c) {
    const size_t q = c / 16, lane = (c % 16) / 4, r = c % 4;
    o.at[c] = static_cast<uint8_t>(16 * lane + 4 * q + r);
  }
  return o;
}
constexpr CodeOrder kCodeOrder = MakeCodeOrder();

#ifdef HYPERONNX_AVX2
bool HasVbmiNow() {
  static const bool has = HasAvx512() && __builtin_cpu_supports("avx512vbmi") != 0 && __builtin_cpu_supports("fma") != 0;
  return has;
}

#define HYPERONNX_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,fma")))
// (GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined: GCC bug 105593.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

struct Tables {
  __m512i t[8];  // plane b: entries 0-63 in t[2b], 64-127 in t[2b + 1]
};

HYPERONNX_VBMI inline Tables LoadTables(const FloatPacked& p) {
  Tables tables;
  for (int i = 0; i < 8; ++i) tables.t[i] = _mm512_loadu_si512(p.planes + 64 * i);
  return tables;
}

// 64 codes -> 64 weights (+-T[k] * s) in column order, 16 per register.
HYPERONNX_VBMI inline void Decode64(const uint8_t* codes, const Tables& tb, __m512 s, __m512* w) {
  const __m512i idx = _mm512_loadu_si512(codes);
  const __m512i b0 = _mm512_permutex2var_epi8(tb.t[0], idx, tb.t[1]);  // index bits 0-6; bit 7, the sign, unused
  const __m512i b1 = _mm512_permutex2var_epi8(tb.t[2], idx, tb.t[3]);
  const __m512i b2 = _mm512_permutex2var_epi8(tb.t[4], idx, tb.t[5]);
  __m512i b3 = _mm512_permutex2var_epi8(tb.t[6], idx, tb.t[7]);
  b3 = _mm512_ternarylogic_epi32(b3, idx, _mm512_set1_epi8(static_cast<char>(0x80)), 0x78);  // b3 ^ (idx & 0x80)
  const __m512i lo01 = _mm512_unpacklo_epi8(b0, b1), hi01 = _mm512_unpackhi_epi8(b0, b1);
  const __m512i lo23 = _mm512_unpacklo_epi8(b2, b3), hi23 = _mm512_unpackhi_epi8(b2, b3);
  w[0] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(lo01, lo23)), s);
  w[1] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(lo01, lo23)), s);
  w[2] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(hi01, hi23)), s);
  w[3] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(hi01, hi23)), s);
}

// The scale group of strip s's row r, advanced row by row (G a multiple of 64).
struct GroupWalk {
  uint64_t q, r, step_q, step_r, group;
  GroupWalk(const FloatPacked& p, size_t strip, size_t row) : group(p.group) {
    const uint64_t e = uint64_t{row} * p.n + kCodeStrip * strip;
    q = e / group;
    r = e % group;
    step_q = p.n / group;
    step_r = p.n % group;
  }
  void Next() {
    q += step_q;
    r += step_r;
    if (r >= group) {
      r -= group;
      ++q;
    }
  }
};

// Lattice steps (b > 8): the §7.3 arithmetic on 16 lanes, as lattice_cpu.cc's AVX-512 loop.
struct StepConstants {
  __m512i n, n_minus_1, g, c;
  __m512 r, alpha, beta;
  int bits;
};

HYPERONNX_VBMI inline StepConstants LoadSteps(const LatticeParams& p) {
  return StepConstants{_mm512_set1_epi32(static_cast<int>(p.points)), _mm512_set1_epi32(static_cast<int>(p.points - 1)),
                       _mm512_set1_epi32(static_cast<int>(p.generator)), _mm512_set1_epi32(static_cast<int>(p.offset)),
                       _mm512_set1_ps(p.r), _mm512_set1_ps(p.alpha), _mm512_set1_ps(p.beta), static_cast<int>(p.bits)};
}

HYPERONNX_VBMI inline __m512 Phi(__m512i m, const StepConstants& k) {
  const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_slli_epi32(m, 1), k.n_minus_1)), k.r);
  __m512 t = _mm512_mul_ps(u, u);
  t = _mm512_mul_ps(t, k.beta);
  t = _mm512_add_ps(t, k.alpha);
  return _mm512_mul_ps(u, t);
}

// 16 steps -> the unscaled x (even columns) and y (odd columns) of their pairs.
HYPERONNX_VBMI inline void Pairs16(__m512i x, const StepConstants& k, __m512* vx, __m512* vy) {
  const __m512i bits = _mm512_set1_epi64(k.bits);
  const __m512i t = _mm512_add_epi32(_mm512_mullo_epi32(x, k.g), k.c);  // LatticeRow, folded twice
  __m512i y = _mm512_add_epi32(_mm512_and_si512(t, k.n), _mm512_srl_epi32(t, _mm512_castsi512_si128(bits)));
  y = _mm512_add_epi32(_mm512_and_si512(y, k.n), _mm512_srl_epi32(y, _mm512_castsi512_si128(bits)));
  y = _mm512_maskz_mov_epi32(_mm512_cmpneq_epi32_mask(y, k.n), y);
  *vx = Phi(x, k);
  *vy = Phi(y, k);
}

// 32 steps of one strip row -> its 64 weights: w[0] / w[1] the even / odd columns of pairs 0-15,
// w[2] / w[3] of pairs 16-31.
HYPERONNX_VBMI inline void DecodeSteps64(const uint16_t* steps, const StepConstants& k, __m512 s, __m512* w) {
  const __m512i j = _mm512_loadu_si512(steps);
  Pairs16(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(j)), k, &w[0], &w[1]);
  Pairs16(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(j, 1)), k, &w[2], &w[3]);
  for (int i = 0; i < 4; ++i) w[i] = _mm512_mul_ps(w[i], s);
}

// Even / odd column registers (16 pairs) back into column order at out[0 .. 32).
HYPERONNX_VBMI inline void StoreInterleaved(__m512 even, __m512 odd, float* out) {
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  _mm512_storeu_ps(out, _mm512_permutex2var_ps(even, first, odd));
  _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(even, second, odd));
}

template <int R>
HYPERONNX_VBMI void StripRowsSteps(const FloatPacked& p, size_t strip, const float* a, size_t lda, float* y) {
  const StepConstants kc = LoadSteps(p.lattice);
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  const uint16_t* steps = p.steps.data() + strip * p.k * (kCodeStrip / 2);
  GroupWalk g(p, strip, 0);
  for (size_t k = 0; k < p.k; ++k, steps += kCodeStrip / 2, g.Next()) {
    __m512 w[4];
    DecodeSteps64(steps, kc, _mm512_set1_ps(p.scales[g.q]), w);
    const __m512 a0 = _mm512_set1_ps(a[k]);
    c00 = _mm512_fmadd_ps(a0, w[0], c00);
    c01 = _mm512_fmadd_ps(a0, w[1], c01);
    c02 = _mm512_fmadd_ps(a0, w[2], c02);
    c03 = _mm512_fmadd_ps(a0, w[3], c03);
    if constexpr (R > 1) {
      const __m512 a1 = _mm512_set1_ps(a[lda + k]);
      c10 = _mm512_fmadd_ps(a1, w[0], c10);
      c11 = _mm512_fmadd_ps(a1, w[1], c11);
      c12 = _mm512_fmadd_ps(a1, w[2], c12);
      c13 = _mm512_fmadd_ps(a1, w[3], c13);
    }
  }
  float* out = y + kCodeStrip * strip;
  StoreInterleaved(c00, c01, out);
  StoreInterleaved(c02, c03, out + 32);
  if constexpr (R > 1) {
    StoreInterleaved(c10, c11, out + p.n);
    StoreInterleaved(c12, c13, out + p.n + 32);
  }
}

HYPERONNX_VBMI void DecodePanelSteps(const FloatPacked& p, size_t strip, size_t k0, size_t kc, float* panel) {
  const StepConstants consts = LoadSteps(p.lattice);
  const uint16_t* steps = p.steps.data() + (strip * p.k + k0) * (kCodeStrip / 2);
  GroupWalk g(p, strip, k0);
  for (size_t k = 0; k < kc; ++k, steps += kCodeStrip / 2, g.Next()) {
    __m512 w[4];
    DecodeSteps64(steps, consts, _mm512_set1_ps(p.scales[g.q]), w);
    StoreInterleaved(w[0], w[1], panel + k * kCodeStrip);
    StoreInterleaved(w[2], w[3], panel + k * kCodeStrip + 32);
  }
}

// Y[i][64s .. 64s + 64) = sum_k A[i][k] * W(k, .) for the R rows from a (R <= 2: 8 accumulators).
template <int R>
HYPERONNX_VBMI void StripRows(const FloatPacked& p, const Tables& tb, size_t strip, const float* a, size_t lda,
                              float* y) {
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
  const uint8_t* codes = p.codes.data() + strip * p.k * kCodeStrip;
  GroupWalk g(p, strip, 0);
  for (size_t k = 0; k < p.k; ++k, codes += kCodeStrip, g.Next()) {
    __m512 w[4];
    Decode64(codes, tb, _mm512_set1_ps(p.scales[g.q]), w);
    const __m512 a0 = _mm512_set1_ps(a[k]);
    c00 = _mm512_fmadd_ps(a0, w[0], c00);
    c01 = _mm512_fmadd_ps(a0, w[1], c01);
    c02 = _mm512_fmadd_ps(a0, w[2], c02);
    c03 = _mm512_fmadd_ps(a0, w[3], c03);
    if constexpr (R > 1) {
      const __m512 a1 = _mm512_set1_ps(a[lda + k]);
      c10 = _mm512_fmadd_ps(a1, w[0], c10);
      c11 = _mm512_fmadd_ps(a1, w[1], c11);
      c12 = _mm512_fmadd_ps(a1, w[2], c12);
      c13 = _mm512_fmadd_ps(a1, w[3], c13);
    }
  }
  float* out = y + kCodeStrip * strip;
  _mm512_storeu_ps(out, c00);
  _mm512_storeu_ps(out + 16, c01);
  _mm512_storeu_ps(out + 32, c02);
  _mm512_storeu_ps(out + 48, c03);
  if constexpr (R > 1) {
    out += p.n;
    _mm512_storeu_ps(out, c10);
    _mm512_storeu_ps(out + 16, c11);
    _mm512_storeu_ps(out + 32, c12);
    _mm512_storeu_ps(out + 48, c13);
  }
}

// Rows [k0, k0 + kc) of strip s decoded into a row-major panel: row k at panel[64 k].
HYPERONNX_VBMI void DecodePanel(const FloatPacked& p, const Tables& tb, size_t strip, size_t k0, size_t kc,
                                float* panel) {
  const uint8_t* codes = p.codes.data() + (strip * p.k + k0) * kCodeStrip;
  GroupWalk g(p, strip, k0);
  for (size_t k = 0; k < kc; ++k, codes += kCodeStrip, g.Next()) {
    __m512 w[4];
    Decode64(codes, tb, _mm512_set1_ps(p.scales[g.q]), w);
    for (size_t i = 0; i < 4; ++i) _mm512_storeu_ps(panel + k * kCodeStrip + 16 * i, w[i]);
  }
}

// C[i][0..64) += sum_k A[i][k] * panel[k][0..64) for R <= 6 rows: 6 x 4 accumulators in
// registers, each panel row loaded once for the R rows.
template <int R>
__attribute__((target("avx512f,fma"))) void MicroRows(const float* a, size_t lda, const float* panel, size_t kc, float* c, size_t ldc) {
  __m512 acc[R][4];
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  for (size_t k = 0; k < kc; ++k) {
    const float* b = panel + k * kCodeStrip;
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32),
                 b3 = _mm512_loadu_ps(b + 48);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m512 s = _mm512_set1_ps(a[i * lda + k]);
      acc[i][0] = _mm512_fmadd_ps(s, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(s, b1, acc[i][1]);
      acc[i][2] = _mm512_fmadd_ps(s, b2, acc[i][2]);
      acc[i][3] = _mm512_fmadd_ps(s, b3, acc[i][3]);
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < 4; ++j) {
      float* to = c + i * ldc + 16 * j;
      _mm512_storeu_ps(to, _mm512_add_ps(_mm512_loadu_ps(to), acc[i][j]));
    }
  }
}

using MicroFn = void (*)(const float*, size_t, const float*, size_t, float*, size_t);
constexpr size_t kMicroRows = 6;
constexpr MicroFn kMicro[kMicroRows + 1] = {nullptr, &MicroRows<1>, &MicroRows<2>, &MicroRows<3>,
                                            &MicroRows<4>, &MicroRows<5>, &MicroRows<6>};

void MicroAll(const float* a, size_t lda, const float* panel, size_t kc, float* c, size_t ldc, size_t rows) {
  for (size_t r = 0; r < rows; r += kMicroRows) {
    const size_t rr = std::min(kMicroRows, rows - r);
    kMicro[rr](a + r * lda, lda, panel, kc, c + r * ldc, ldc);
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef HYPERONNX_VBMI
#endif  // HYPERONNX_AVX2

}  // namespace

bool HasPanel64() {
#ifdef HYPERONNX_AVX2
  static const bool has = HasAvx512() && __builtin_cpu_supports("fma") != 0;
  return has;
#else
  return false;
#endif
}

void Panel64Gemm(const float* a, size_t lda, const float* panel, size_t kc, float* c, size_t ldc, size_t rows) {
#ifdef HYPERONNX_AVX2
  MicroAll(a, lda, panel, kc, c, ldc, rows);
#else
  (void)a, (void)lda, (void)panel, (void)kc, (void)c, (void)ldc, (void)rows;
#endif
}

bool PackFloat(EncodedWeight& w, FloatPacked* p) {
#ifdef HYPERONNX_AVX2
  if (!HasVbmiNow()) return false;
  const std::vector<int64_t>& shape = w.shape();
  if (shape.size() != 2 || shape[0] < 1 || shape[1] < 1 || w.scales() == nullptr) return false;
  float table[PairDecoder::kCodeTable];
  Int8Info info;
  const size_t k = static_cast<size_t>(shape[0]), n = static_cast<size_t>(shape[1]);
  const LatticeParams* lattice = w.lattice();
  if (!w.PrepareCodes(table, &info)) {
    // lattice steps of 9-16 bits: a uint16 step a pair, the coordinates computed at run time
    if (lattice == nullptr || lattice->bits <= 8 || lattice->group % kCodeStrip != 0 || n % kCodeStrip != 0) {
      return false;
    }
    p->steps_form = true;
    p->lattice = *lattice;
    p->k = k;
    p->n = n;
    p->group = lattice->group;
    const uint64_t groups = (uint64_t{k} * n + p->group - 1) / p->group;
    p->scales.resize(groups);
    for (uint64_t q = 0; q < groups; ++q) p->scales[q] = LatticeScale(*lattice, w.scales()[q]);
    p->steps.resize(k * n / 2);
    const size_t strips = n / kCodeStrip;
    for (size_t r = 0; r < k; ++r) {
      for (size_t s = 0; s < strips; ++s) {
        uint16_t* to = p->steps.data() + (s * k + r) * (kCodeStrip / 2);
        const uint64_t first = (uint64_t{r} * n + s * kCodeStrip) / 2;  // n even
        for (size_t i = 0; i < kCodeStrip / 2; ++i) {
          to[i] = static_cast<uint16_t>(ReadIndex(w.seed(), lattice->seed_bytes, first + i, lattice->bits));
        }
      }
    }
    return true;
  }
  if (info.group == 0 || info.group % kCodeStrip != 0 || n % kCodeStrip != 0) return false;
  p->k = k;
  p->n = n;
  p->group = info.group;
  for (size_t e = 0; e < PairDecoder::kCodeTable; ++e) {
    const uint32_t bits = FloatBits(table[e]);
    for (size_t b = 0; b < 4; ++b) p->planes[PairDecoder::kCodeTable * b + e] = static_cast<uint8_t>(bits >> (8 * b));
  }
  const uint64_t groups = (uint64_t{k} * n + info.group - 1) / info.group;
  p->scales.resize(groups);
  for (uint64_t q = 0; q < groups; ++q) p->scales[q] = HalfToFloat(w.scales()[q]) * info.scale_unit;
  p->codes.resize(k * n);
  std::vector<uint8_t> row(n);
  const size_t strips = n / kCodeStrip;
  for (size_t r = 0; r < k; ++r) {
    w.DecodeCodes(uint64_t{r} * n / 2, (uint64_t{r} * n + n) / 2, row.data());  // n even: whole pairs
    for (size_t s = 0; s < strips; ++s) {
      uint8_t* to = p->codes.data() + (s * k + r) * kCodeStrip;
      for (size_t c = 0; c < kCodeStrip; ++c) to[kCodeOrder.at[c]] = row[s * kCodeStrip + c];
    }
  }
  return true;
#else
  (void)w;
  (void)p;
  return false;
#endif
}

bool GemmFloatPacked(const Ort::KernelContext& context, const FloatPacked& p, const float* a, size_t lda, size_t rows,
                     float* y) {
#ifdef HYPERONNX_AVX2
  const size_t strips = p.n / kCodeStrip;
  if (rows == 0) return true;
  if (rows <= kFewRows) {
    return ParallelTasks(context, strips, uint64_t{rows} * p.k * p.n, [&](size_t s) {
      if (p.steps_form) {
        size_t r = 0;
        for (; r + 2 <= rows; r += 2) StripRowsSteps<2>(p, s, a + r * lda, lda, y + r * p.n);
        if (r < rows) StripRowsSteps<1>(p, s, a + r * lda, lda, y + r * p.n);
        return;
      }
      const Tables tb = LoadTables(p);
      size_t r = 0;
      for (; r + 2 <= rows; r += 2) StripRows<2>(p, tb, s, a + r * lda, lda, y + r * p.n);
      if (r < rows) StripRows<1>(p, tb, s, a + r * lda, lda, y + r * p.n);
    });
  }
  std::fill(y, y + rows * p.n, 0.0f);
  return ParallelTasks(context, strips, uint64_t{rows} * p.k * p.n, [&](size_t s) {
    const Tables tb = LoadTables(p);
    std::vector<float> panel(kPanelDepth * kCodeStrip);
    for (size_t k0 = 0; k0 < p.k; k0 += kPanelDepth) {
      const size_t kc = std::min(kPanelDepth, p.k - k0);
      if (p.steps_form) {
        DecodePanelSteps(p, s, k0, kc, panel.data());
      } else {
        DecodePanel(p, tb, s, k0, kc, panel.data());
      }
      MicroAll(a + k0, lda, panel.data(), kc, y + s * kCodeStrip, p.n, rows);
    }
  });
#else
  (void)context, (void)p, (void)a, (void)lda, (void)rows, (void)y;
  return false;
#endif
}

}  // namespace hyperonnx
