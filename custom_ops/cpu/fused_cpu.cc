// Fused operators, CPU: see fused_cpu.h for the design, docs/FORMAT.md §8 for the contract.
#include "fused_cpu.h"

#include "pair_tasks.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <utility>

#ifdef HYPERONNX_AVX2
#include <immintrin.h>
#endif

namespace hyperonnx {

// ---------------------------------------------------------------------------------------------
// EncodedWeight: element ranges through the codec's whole-pair primitive.

EncodedWeight::EncodedWeight(std::unique_ptr<PairDecoder> decoder, std::vector<int64_t> shape, const uint8_t* seed,
                             const uint16_t* scales)
    : decoder_(std::move(decoder)), shape_(std::move(shape)), seed_(seed), scales_(scales) {}

void EncodedWeight::Decode(uint64_t first, uint64_t count, float* out) const {
  float pair[2];
  if (count == 0) return;
  if (first % 2) {  // starts on a pair's second value
    decoder_->DecodePairs(seed_, scales_, first / 2, first / 2 + 1, pair);
    *out++ = pair[1];
    ++first;
    --count;
  }
  const uint64_t whole = count / 2;
  if (whole) decoder_->DecodePairs(seed_, scales_, first / 2, first / 2 + whole, out);
  if (count % 2) {  // ends on a pair's first value (the tensor's last pair may be a half pair)
    decoder_->DecodePairs(seed_, scales_, first / 2 + whole, first / 2 + whole + 1, pair);
    out[2 * whole] = pair[0];
  }
}

bool EncodedWeight::PrepareInt8() { return decoder_->PrepareInt8(&int8_); }

void EncodedWeight::DecodeInt8(uint64_t first, uint64_t count, uint8_t* out) const {
  uint8_t pair[2];
  if (count == 0) return;
  if (first % 2) {  // as Decode: a pair's second value first, a pair's first value last
    decoder_->DecodePairsInt8(seed_, first / 2, first / 2 + 1, pair);
    *out++ = pair[1];
    ++first;
    --count;
  }
  const uint64_t whole = count / 2;
  if (whole) decoder_->DecodePairsInt8(seed_, first / 2, first / 2 + whole, out);
  if (count % 2) {
    decoder_->DecodePairsInt8(seed_, first / 2 + whole, first / 2 + whole + 1, pair);
    out[2 * whole] = pair[0];
  }
}

uint8_t Int8Byte(float v, float max_abs) {
  const double q = std::nearbyint(static_cast<double>(v) * 127.0 / static_cast<double>(max_abs));
  return static_cast<uint8_t>(128 + static_cast<int>(std::min(127.0, std::max(-127.0, q))));
}

namespace {

constexpr uint64_t kFewRows = 8;    // up to this many rows: decode inside the row loop, no panel
constexpr size_t kFewCols = 256;    // weight row segment decoded at a time, few rows (W not transposed)
constexpr size_t kFewTasks = 8;     // tasks (ranges of weight rows) of a few-row product, at most
constexpr size_t kFewMinRows = 32;  // weight rows per task, at least
constexpr size_t kFewAccumulatorBytes = 16 << 20;  // partial outputs of a few-row product, at most
constexpr size_t kFewUnroll = 4;    // weight rows decoded per pass over the outputs
constexpr size_t kDotChunk = 1024;  // weight row segment per dot product, few rows (W transposed)
constexpr size_t kTransRows = 32;   // weight rows (output columns) per task, few rows, transposed
constexpr size_t kKc = 256;         // panel depth, many rows
constexpr size_t kNb = 64;          // panel width (output columns per task), many rows
constexpr size_t kMr = 6;           // micro-kernel rows
constexpr size_t kNr = 16;          // micro-kernel columns (two AVX registers)
constexpr size_t kTileBytes = 256 << 10;  // Conv: an im2col tile's budget (L2)
constexpr size_t kConvTasks = 8;  // Conv: split output channels until a group has this many tasks

size_t RoundUp(size_t x, size_t to) { return (x + to - 1) / to * to; }

#ifdef HYPERONNX_AVX2
bool HasAvx2Fma() {
  static const bool has = HasAvx2() && __builtin_cpu_supports("fma") != 0;
  return has;
}
#endif

// ---------------------------------------------------------------------------------------------
// The three inner loops, portable and AVX2+FMA. Each computes the same sums; only the rounding
// of the float32 accumulation differs (FMA, lanes).

// y[0..n) += sum_{i<u} a[i] * b[i * n + j]
void AxpyRows(size_t u, const float* a, const float* b, size_t n, float* y) {
  for (size_t i = 0; i < u; ++i) {
    const float s = a[i];
    const float* row = b + i * n;
    for (size_t j = 0; j < n; ++j) y[j] += s * row[j];
  }
}

float Dot(const float* a, const float* b, size_t n) {
  float sum = 0.0f;
  for (size_t k = 0; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

// C[i][0..cols) += sum_k A[i][k] * B[k][0..cols), i < rows (<= kMr), cols <= kNr. B rows hold
// kNr readable floats (zero padded past cols).
void Micro(size_t rows, const float* a, size_t lda, const float* b, size_t ldb, size_t depth, float* c, size_t ldc,
           size_t cols) {
  float acc[kMr][kNr] = {};
  for (size_t k = 0; k < depth; ++k) {
    const float* bk = b + k * ldb;
    for (size_t i = 0; i < rows; ++i) {
      const float s = a[i * lda + k];
      for (size_t j = 0; j < kNr; ++j) acc[i][j] += s * bk[j];
    }
  }
  for (size_t i = 0; i < rows; ++i) {
    for (size_t j = 0; j < cols; ++j) c[i * ldc + j] += acc[i][j];
  }
}

#ifdef HYPERONNX_AVX2
__attribute__((target("avx2,fma"))) void AxpyRowsAvx2(size_t u, const float* a, const float* b, size_t n, float* y) {
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 acc = _mm256_loadu_ps(y + j);
    for (size_t i = 0; i < u; ++i) acc = _mm256_fmadd_ps(_mm256_set1_ps(a[i]), _mm256_loadu_ps(b + i * n + j), acc);
    _mm256_storeu_ps(y + j, acc);
  }
  for (; j < n; ++j) {
    float acc = y[j];
    for (size_t i = 0; i < u; ++i) acc = std::fma(a[i], b[i * n + j], acc);
    y[j] = acc;
  }
}

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t k = 0;
  for (; k + 16 <= n; k += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
  }
  for (; k + 8 <= n; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
  const __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  float sum = _mm_cvtss_f32(h);
  for (; k < n; ++k) sum = std::fma(a[k], b[k], sum);
  return sum;
}

// The accumulators live in named registers (an array indexed in the epilogue would be kept on
// the stack and stored every iteration).
__attribute__((target("avx2,fma"))) inline void AddRow(float* c, __m256 x0, __m256 x1, size_t cols) {
  if (cols == kNr) {
    _mm256_storeu_ps(c, _mm256_add_ps(_mm256_loadu_ps(c), x0));
    _mm256_storeu_ps(c + 8, _mm256_add_ps(_mm256_loadu_ps(c + 8), x1));
    return;
  }
  alignas(32) float tmp[kNr];
  _mm256_store_ps(tmp, x0);
  _mm256_store_ps(tmp + 8, x1);
  for (size_t j = 0; j < cols; ++j) c[j] += tmp[j];
}

template <size_t R>
__attribute__((target("avx2,fma"))) void MicroAvx2(const float* a, size_t lda, const float* b, size_t ldb, size_t depth,
                                                   float* c, size_t ldc, size_t cols) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (size_t k = 0; k < depth; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * ldb);
    const __m256 b1 = _mm256_loadu_ps(b + k * ldb + 8);
#define HYPERONNX_ROW(i)                                                  \
  if constexpr (R > i) {                                                  \
    const __m256 s = _mm256_broadcast_ss(a + i * lda + k);                \
    c##i##0 = _mm256_fmadd_ps(s, b0, c##i##0);                            \
    c##i##1 = _mm256_fmadd_ps(s, b1, c##i##1);                            \
  }
    HYPERONNX_ROW(0) HYPERONNX_ROW(1) HYPERONNX_ROW(2) HYPERONNX_ROW(3) HYPERONNX_ROW(4) HYPERONNX_ROW(5)
#undef HYPERONNX_ROW
  }
  AddRow(c, c00, c01, cols);
  if constexpr (R > 1) AddRow(c + ldc, c10, c11, cols);
  if constexpr (R > 2) AddRow(c + 2 * ldc, c20, c21, cols);
  if constexpr (R > 3) AddRow(c + 3 * ldc, c30, c31, cols);
  if constexpr (R > 4) AddRow(c + 4 * ldc, c40, c41, cols);
  if constexpr (R > 5) AddRow(c + 5 * ldc, c50, c51, cols);
}

using MicroFn = void (*)(const float*, size_t, const float*, size_t, size_t, float*, size_t, size_t);
constexpr MicroFn kMicroAvx2[kMr + 1] = {nullptr,         &MicroAvx2<1>, &MicroAvx2<2>, &MicroAvx2<3>,
                                         &MicroAvx2<4>,   &MicroAvx2<5>, &MicroAvx2<6>};
#endif

struct Loops {
  void (*axpy)(size_t, const float*, const float*, size_t, float*) = &AxpyRows;
  float (*dot)(const float*, const float*, size_t) = &Dot;
  bool avx2 = false;
  Loops() {
#ifdef HYPERONNX_AVX2
    if (HasAvx2Fma()) {
      axpy = &AxpyRowsAvx2;
      dot = &DotAvx2;
      avx2 = true;
    }
#endif
  }
  // C[rows x cols] += A[rows x depth] * B, B packed in strips of kNr columns: strip s holds
  // columns [s * kNr, s * kNr + kNr) as depth rows of kNr floats (zero past cols). Each strip
  // (L1-resident) is run against every row block in turn.
  void Gemm(const float* a, size_t lda, const float* strips, size_t depth, float* c, size_t ldc, size_t rows,
            size_t cols) const {
    for (size_t j = 0; j < cols; j += kNr) {
      const float* b = strips + (j / kNr) * depth * kNr;
      const size_t cc = std::min(kNr, cols - j);
      for (size_t r = 0; r < rows; r += kMr) {
        const size_t rr = std::min(kMr, rows - r);
#ifdef HYPERONNX_AVX2
        if (avx2) {
          kMicroAvx2[rr](a + r * lda, lda, b, kNr, depth, c + r * ldc + j, ldc, cc);
          continue;
        }
#endif
        Micro(rr, a + r * lda, lda, b, kNr, depth, c + r * ldc + j, ldc, cc);
      }
    }
  }
};

const Loops& GetLoops() {
  static const Loops loops;
  return loops;
}

// Y[r][n] = sum_k A[r][k] * W(k, n) for r < rows, n < N; W(k, n) = w[k * N + n], or w[n * K + k]
// when `trans`. Y (rows x N, contiguous) is overwritten. False: out of memory in a task.
bool GemmEncoded(const Ort::KernelContext& context, const EncodedWeight& w, bool trans, const float* a, size_t lda,
                 size_t rows, size_t depth, size_t n, float* y) {
  std::fill(y, y + rows * n, 0.0f);
  if (rows == 0 || n == 0 || depth == 0) return true;
  const Loops& loops = GetLoops();
  if (rows <= kFewRows && !trans) {
    // tasks own ranges of weight rows, so each reads its part of the seed front to back, and
    // accumulate into partial outputs summed at the end
    const size_t tasks = std::max<size_t>(1, std::min({kFewTasks, depth / kFewMinRows,
                                                        kFewAccumulatorBytes / (4 * rows * n)}));
    std::vector<float> partial((tasks - 1) * rows * n);
    const bool ok = ParallelTasks(context, tasks, uint64_t{rows} * depth * n, [&](size_t t) {
      const size_t k_begin = depth * t / tasks, k_end = depth * (t + 1) / tasks;
      float* acc = t == 0 ? y : partial.data() + (t - 1) * rows * n;
      std::fill(acc, acc + rows * n, 0.0f);
      std::vector<float> buf(kFewUnroll * std::min(kFewCols, n));
      for (size_t k0 = k_begin; k0 < k_end; k0 += kFewUnroll) {
        const size_t u = std::min(kFewUnroll, k_end - k0);
        for (size_t n0 = 0; n0 < n; n0 += kFewCols) {
          const size_t nb = std::min(kFewCols, n - n0);
          for (size_t i = 0; i < u; ++i) w.Decode((k0 + i) * n + n0, nb, buf.data() + i * nb);
          for (size_t r = 0; r < rows; ++r) loops.axpy(u, a + r * lda + k0, buf.data(), nb, acc + r * n + n0);
        }
      }
    });
    for (size_t t = 1; t < tasks; ++t) {
      const float* part = partial.data() + (t - 1) * rows * n;
      for (size_t e = 0; e < rows * n; ++e) y[e] += part[e];
    }
    return ok;
  }
  if (rows <= kFewRows) {  // trans: each output column is a dot product with one weight row
    const size_t tasks = (n + kTransRows - 1) / kTransRows;
    return ParallelTasks(context, tasks, uint64_t{rows} * depth * n, [&](size_t t) {
      const size_t n0 = t * kTransRows, nb = std::min(kTransRows, n - n0);
      std::vector<float> buf(std::min(kDotChunk, depth));
      for (size_t j = n0; j < n0 + nb; ++j) {
        for (size_t k0 = 0; k0 < depth; k0 += kDotChunk) {
          const size_t kc = std::min(kDotChunk, depth - k0);
          w.Decode(uint64_t{j} * depth + k0, kc, buf.data());
          for (size_t r = 0; r < rows; ++r) y[r * n + j] += loops.dot(a + r * lda + k0, buf.data(), kc);
        }
      }
    });
  }
  const size_t tasks = (n + kNb - 1) / kNb;
  const bool wide = HasPanel64();  // whole 64-column blocks: a row-major panel and the AVX-512 kernel
  static_assert(kNb == 64, "the 6 x 64 micro-kernel's width");
  return ParallelTasks(context, tasks, uint64_t{rows} * depth * n, [&](size_t t) {
    const size_t n0 = t * kNb, nb = std::min(kNb, n - n0), strips = (nb + kNr - 1) / kNr;
    if (wide && nb == kNb) {
      std::vector<float> panel(kKc * kNb), row(trans ? kKc : 0);
      for (size_t k0 = 0; k0 < depth; k0 += kKc) {
        const size_t kc = std::min(kKc, depth - k0);
        if (!trans) {
          for (size_t k = 0; k < kc; ++k) w.Decode(uint64_t{k0 + k} * n + n0, kNb, panel.data() + k * kNb);
        } else {
          for (size_t j = 0; j < kNb; ++j) {
            w.Decode(uint64_t{n0 + j} * depth + k0, kc, row.data());
            for (size_t k = 0; k < kc; ++k) panel[k * kNb + j] = row[k];
          }
        }
        Panel64Gemm(a + k0, lda, panel.data(), kc, y + n0, n, rows);
      }
      return;
    }
    std::vector<float> panel(strips * kKc * kNr, 0.0f);  // columns past nb stay 0
    std::vector<float> row(trans ? kKc : nb);
    for (size_t k0 = 0; k0 < depth; k0 += kKc) {
      const size_t kc = std::min(kKc, depth - k0);
      // strip s, row k at panel[(s * kc + k) * kNr]
      if (!trans) {
        for (size_t k = 0; k < kc; ++k) {
          w.Decode(uint64_t{k0 + k} * n + n0, nb, row.data());
          for (size_t s = 0; s < strips; ++s) {
            std::memcpy(&panel[(s * kc + k) * kNr], row.data() + s * kNr, 4 * std::min(kNr, nb - s * kNr));
          }
        }
      } else {
        for (size_t j = 0; j < nb; ++j) {
          w.Decode(uint64_t{n0 + j} * depth + k0, kc, row.data());
          float* column = &panel[(j / kNr) * kc * kNr + j % kNr];
          for (size_t k = 0; k < kc; ++k) column[k * kNr] = row[k];
        }
      }
      loops.Gemm(a + k0, lda, panel.data(), kc, y + n0, n, rows, nb);
    }
  });
}

// Depthwise convolution, one tap over one output row: dst[q] += s * src[q * stride + off] for q
// in [lo, hi). The stride-1 loop is contiguous, so the compiler vectorises it: with AVX2 where the
// CPU has it (target_clones picks at load time), SSE2 otherwise.
#ifdef HYPERONNX_AVX2
__attribute__((target_clones("avx2", "default")))
#endif
void AccumulateTap(float* dst, const float* src, float s, int64_t lo, int64_t hi, int64_t stride, int64_t off) {
  if (stride == 1) {
    for (int64_t q = lo; q < hi; ++q) dst[q] += s * src[q + off];
  } else {
    for (int64_t q = lo; q < hi; ++q) dst[q] += s * src[q * stride + off];
  }
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

uint64_t Product(const std::vector<int64_t>& shape, size_t from, size_t to) {
  uint64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= static_cast<uint64_t>(shape[i]);
  return p;
}

// A float32 activation input, or an error message.
std::string FloatInput(const Ort::ConstValue& value, const char* what, std::vector<int64_t>* shape) {
  if (!value) return std::string(what) + " is missing";
  const Ort::TensorTypeAndShapeInfo info = value.GetTensorTypeAndShapeInfo();
  if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return std::string(what) + " must be a float32 tensor";
  *shape = info.GetShape();
  return "";
}

}  // namespace

const char* OpName(FusedKind kind) {
  switch (kind) {
    case FusedKind::kMatMul: return "DecodeMatMul";
    case FusedKind::kGemm: return "DecodeGemm";
    case FusedKind::kGather: return "DecodeGather";
    case FusedKind::kConv: return "DecodeConv";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// One run's inputs against the weight (rule 9's run part), shared with the CUDA kernel.

std::string CheckMatMul(const Ort::KernelContext& context, const std::vector<int64_t>& w, GemmRun* run) {
  std::vector<int64_t> a_shape;
  const std::string error = FloatInput(context.GetInput(0), "input A", &a_shape);
  if (!error.empty()) return error;
  if (a_shape.empty() || a_shape.back() != w[0]) {
    return "input A " + ShapeText(a_shape) + " does not match the weight " + ShapeText(w) +
           " (A's last dimension must be K = " + std::to_string(w[0]) + ")";
  }
  run->y_shape.assign(a_shape.begin(), a_shape.end() - 1);  // A [..., M, K] -> [..., M, N]; A [K] -> [N]
  run->y_shape.push_back(w[1]);
  run->rows = Product(a_shape, 0, a_shape.size() - 1);
  run->depth = static_cast<uint64_t>(w[0]);
  run->cols = static_cast<uint64_t>(w[1]);
  run->a = context.GetInput(0).GetTensorData<float>();
  return "";
}

std::string CheckGemm(const Ort::KernelContext& context, const std::vector<int64_t>& w, const FusedAttributes& attrs,
                      GemmRun* run) {
  std::vector<int64_t> a_shape;
  std::string error = FloatInput(context.GetInput(0), "input A", &a_shape);
  if (!error.empty()) return error;
  const int64_t k = attrs.trans_b ? w[1] : w[0], n = attrs.trans_b ? w[0] : w[1];
  if (a_shape.size() != 2 || a_shape[1] != k) {
    return "input A " + ShapeText(a_shape) + " must be [M, " + std::to_string(k) + "] for the weight " + ShapeText(w) +
           (attrs.trans_b ? " (transB=1)" : "");
  }
  const int64_t m = a_shape[0];
  // C: unidirectionally broadcastable to [M, N]
  Ort::ConstValue c = context.GetInputCount() > 3 ? context.GetInput(3) : Ort::ConstValue{nullptr};
  run->c = nullptr;
  if (c) {
    std::vector<int64_t> c_shape;
    error = FloatInput(c, "input C", &c_shape);
    if (!error.empty()) return error;
    run->c_cols = c_shape.empty() ? 1 : c_shape.back();
    run->c_rows = c_shape.size() == 2 ? c_shape[0] : 1;
    if (c_shape.size() > 2 || (run->c_cols != 1 && run->c_cols != n) || (run->c_rows != 1 && run->c_rows != m)) {
      return "input C " + ShapeText(c_shape) + " does not broadcast to [" + std::to_string(m) + ", " +
             std::to_string(n) + "]";
    }
    run->c = c.GetTensorData<float>();
  }
  run->y_shape = {m, n};
  run->rows = static_cast<uint64_t>(m);
  run->depth = static_cast<uint64_t>(k);
  run->cols = static_cast<uint64_t>(n);
  run->a = context.GetInput(0).GetTensorData<float>();
  return "";
}

std::string CheckGather(const Ort::KernelContext& context, const std::vector<int64_t>& w, GatherRun* run) {
  Ort::ConstValue ids = context.GetInput(0);
  if (!ids) return "input indices is missing";
  const Ort::TensorTypeAndShapeInfo info = ids.GetTensorTypeAndShapeInfo();
  const ONNXTensorElementDataType type = info.GetElementType();
  if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 && type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32) {
    return "input indices must be an int32 or int64 tensor";
  }
  run->y_shape = info.GetShape();
  const uint64_t count = Product(run->y_shape, 0, run->y_shape.size());
  const int64_t rows = w[0];
  run->row_elements = Product(w, 1, w.size());
  // every index checked before anything is written
  run->rows.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    int64_t x = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 ? ids.GetTensorData<int64_t>()[i]
                                                            : int64_t{ids.GetTensorData<int32_t>()[i]};
    if (x < -rows || x >= rows) {
      return "indices[" + std::to_string(i) + "] = " + std::to_string(x) + " is outside [" + std::to_string(-rows) +
             ", " + std::to_string(rows - 1) + "]";
    }
    run->rows[i] = x < 0 ? x + rows : x;
  }
  run->y_shape.insert(run->y_shape.end(), w.begin() + 1, w.end());
  return "";
}

// ---------------------------------------------------------------------------------------------
// The kernels.

FusedCpuKernel::FusedCpuKernel(FusedKind kind, std::string name, FusedAttributes attrs,
                               std::unique_ptr<EncodedWeight> weight, bool int8, Int8Plan plan,
                               std::unique_ptr<Int8Packed> packed, std::unique_ptr<FloatPacked> float_packed)
    : kind_(kind), name_(std::move(name)), attrs_(std::move(attrs)), weight_(std::move(weight)), int8_(int8),
      int8_plan_(plan), packed_(std::move(packed)), float_packed_(std::move(float_packed)) {
  CountPackedBytes(static_cast<int64_t>(PackedBytes()));
}

FusedCpuKernel::~FusedCpuKernel() { CountPackedBytes(-static_cast<int64_t>(PackedBytes())); }

size_t FusedCpuKernel::PackedBytes() const {
  return (packed_ ? packed_->bytes() : 0) + (float_packed_ ? float_packed_->bytes() : 0);
}

namespace {
std::atomic<int64_t> packed_bytes{0};
}  // namespace

void CountPackedBytes(int64_t delta) { packed_bytes.fetch_add(delta); }

bool ParsePacking(const std::string& text, Packing* packing) {
  if (text.empty() || text == "auto" || text == "packed") {
    *packing = Packing::kPacked;
    return true;
  }
  if (text == "none") {
    *packing = Packing::kNone;
    return true;
  }
  return false;
}

// Bytes of packed weights the live fused kernels hold (tests, `bench runtime`).
extern "C" HYPERONNX_EXPORT int64_t HyperonnxPackedBytes() { return packed_bytes.load(); }

OrtStatusPtr FusedCpuKernel::Fail(const std::string& message) const { return FailNode(OpName(kind_), name_, message); }

OrtStatusPtr FusedCpuKernel::ComputeV2(OrtKernelContext* raw_context) {
  try {
    Ort::KernelContext context(raw_context);
    switch (kind_) {
      case FusedKind::kMatMul: return MatMul(context);
      case FusedKind::kGemm: return Gemm(context);
      case FusedKind::kGather: return Gather(context);
      case FusedKind::kConv: return Conv(context);
    }
    return Fail("unknown operator");
  } catch (const std::bad_alloc&) {
    return Fail("out of memory");
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
  }
}

OrtStatusPtr FusedCpuKernel::MatMul(Ort::KernelContext& context) {
  GemmRun run;
  const std::string error = CheckMatMul(context, weight_->shape(), &run);
  if (!error.empty()) return Fail(error);
  Ort::UnownedValue y = context.GetOutput(0, run.y_shape.data(), run.y_shape.size());
  float* out = y.GetTensorMutableData<float>();
  if (!(int8_ ? GemmInt8(context, *weight_, int8_plan_, run.a, run.depth, run.rows, out, packed_.get())
        : float_packed_ ? GemmFloatPacked(context, *float_packed_, run.a, run.depth, run.rows, out)
                        : GemmEncoded(context, *weight_, false, run.a, run.depth, run.rows, run.depth, run.cols, out))) {
    return Fail("out of memory");
  }
  return nullptr;
}

OrtStatusPtr FusedCpuKernel::Gemm(Ort::KernelContext& context) {
  GemmRun run;
  const std::string error = CheckGemm(context, weight_->shape(), attrs_, &run);
  if (!error.empty()) return Fail(error);
  Ort::UnownedValue y_value = context.GetOutput(0, run.y_shape.data(), run.y_shape.size());
  float* y = y_value.GetTensorMutableData<float>();
  if (!(int8_ ? GemmInt8(context, *weight_, int8_plan_, run.a, run.depth, run.rows, y, packed_.get())
        : float_packed_ ? GemmFloatPacked(context, *float_packed_, run.a, run.depth, run.rows, y)
              : GemmEncoded(context, *weight_, attrs_.trans_b != 0, run.a, run.depth, run.rows, run.depth, run.cols,
                            y))) {
    return Fail("out of memory");
  }
  const float* cd = run.c;
  const uint64_t m = run.rows, n = run.cols;
  if (attrs_.alpha != 1.0f || (cd != nullptr && attrs_.beta != 0.0f)) {
    for (uint64_t i = 0; i < m; ++i) {
      for (uint64_t j = 0; j < n; ++j) {
        float v = attrs_.alpha * y[i * n + j];
        if (cd != nullptr && attrs_.beta != 0.0f) {
          v += attrs_.beta * cd[(run.c_rows == 1 ? 0 : i) * run.c_cols + (run.c_cols == 1 ? 0 : j)];
        }
        y[i * n + j] = v;
      }
    }
  }
  return nullptr;
}

OrtStatusPtr FusedCpuKernel::Gather(Ort::KernelContext& context) {
  GatherRun run;
  const std::string error = CheckGather(context, weight_->shape(), &run);
  if (!error.empty()) return Fail(error);
  Ort::UnownedValue y_value = context.GetOutput(0, run.y_shape.data(), run.y_shape.size());
  float* y = y_value.GetTensorMutableData<float>();
  const uint64_t count = run.rows.size(), row = run.row_elements;
  constexpr uint64_t kRowsPerTask = 16;
  const size_t tasks = static_cast<size_t>((count + kRowsPerTask - 1) / kRowsPerTask);
  if (!ParallelTasks(context, tasks, count * row, [&](size_t t) {
        for (uint64_t i = t * kRowsPerTask; i < std::min(count, (t + 1) * kRowsPerTask); ++i) {
          weight_->Decode(static_cast<uint64_t>(run.rows[i]) * row, row, y + i * row);
        }
      })) {
    return Fail("out of memory");
  }
  return nullptr;
}

OrtStatusPtr FusedCpuKernel::Conv(Ort::KernelContext& context) {
  std::vector<int64_t> x_shape;
  std::string error = FloatInput(context.GetInput(0), "input X", &x_shape);
  if (!error.empty()) return Fail(error);
  const std::vector<int64_t>& w = weight_->shape();  // [M, C/group, kH, kW]
  const int64_t group = attrs_.group;
  if (x_shape.size() != 4 || x_shape[1] != w[1] * group) {
    return Fail("input X " + ShapeText(x_shape) + " must be [N, " + std::to_string(w[1] * group) + ", H, W] for the weight " +
                ShapeText(w) + " and group=" + std::to_string(group));
  }
  const int64_t batch = x_shape[0], height = x_shape[2], width = x_shape[3], channels = w[0];
  const int64_t kh = w[2], kw = w[3];
  const int64_t sh = attrs_.strides[0], sw = attrs_.strides[1], dh = attrs_.dilations[0], dw = attrs_.dilations[1];
  int64_t pt = attrs_.pads[0], pl = attrs_.pads[1], pb = attrs_.pads[2], pr = attrs_.pads[3];
  const int64_t ekh = (kh - 1) * dh + 1, ekw = (kw - 1) * dw + 1;  // the dilated kernel
  if (attrs_.auto_pad == "VALID") {
    pt = pl = pb = pr = 0;
  } else if (attrs_.auto_pad == "SAME_UPPER" || attrs_.auto_pad == "SAME_LOWER") {
    const int64_t oh = (height + sh - 1) / sh, ow = (width + sw - 1) / sw;
    const int64_t th = std::max<int64_t>(0, (oh - 1) * sh + ekh - height), tw = std::max<int64_t>(0, (ow - 1) * sw + ekw - width);
    const bool upper = attrs_.auto_pad == "SAME_UPPER";
    pt = upper ? th / 2 : th - th / 2;
    pb = th - pt;
    pl = upper ? tw / 2 : tw - tw / 2;
    pr = tw - pl;
  }
  if (height + pt + pb < ekh || width + pl + pr < ekw) {
    return Fail("input X " + ShapeText(x_shape) + " with its padding is smaller than the kernel");
  }
  const int64_t oh = (height + pt + pb - ekh) / sh + 1, ow = (width + pl + pr - ekw) / sw + 1;
  Ort::ConstValue bias_value = context.GetInputCount() > 3 ? context.GetInput(3) : Ort::ConstValue{nullptr};
  const float* bias = nullptr;
  if (bias_value) {
    std::vector<int64_t> b_shape;
    error = FloatInput(bias_value, "input B", &b_shape);
    if (!error.empty()) return Fail(error);
    if (b_shape.size() != 1 || b_shape[0] != channels) return Fail("input B " + ShapeText(b_shape) + " must be [" + std::to_string(channels) + "]");
    bias = bias_value.GetTensorData<float>();
  }
  const int64_t y_shape[4] = {batch, channels, oh, ow};
  Ort::UnownedValue y_value = context.GetOutput(0, y_shape, 4);
  float* y = y_value.GetTensorMutableData<float>();
  const float* x = context.GetInput(0).GetTensorData<float>();
  const size_t cg = static_cast<size_t>(w[1]), mg = static_cast<size_t>(channels / group);
  const size_t depth = cg * kh * kw, positions = static_cast<size_t>(oh * ow), plane = static_cast<size_t>(height * width);
  std::fill(y, y + batch * channels * positions, 0.0f);
  const Loops& loops = GetLoops();
  bool ok = true;
  if (cg == 1) {  // depthwise-like: one input channel per group; direct loop per output channel
    const size_t tasks = static_cast<size_t>(batch * channels);
    ok = ParallelTasks(context, tasks, uint64_t(batch * channels) * positions * depth, [&](size_t t) {
      const size_t n = t / channels, m = t % channels, c = m / mg;
      std::vector<float> taps(depth);
      weight_->Decode(uint64_t{m} * depth, depth, taps.data());
      const float* in = x + (n * w[1] * group + c) * plane;  // the group's one input channel
      float* out = y + t * positions;
      for (int64_t i = 0; i < kh; ++i) {
        for (int64_t j = 0; j < kw; ++j) {
          const float s = taps[i * kw + j];
          // output columns whose input column ow * sw - pl + j * dw lies inside [0, width)
          const int64_t off = j * dw - pl;
          const int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
          const int64_t hi = std::min(ow, width - off > 0 ? (width - off + sw - 1) / sw : 0);
          for (int64_t r = 0; r < oh; ++r) {
            const int64_t ih = r * sh - pt + i * dh;
            if (ih < 0 || ih >= height) continue;
            const float* src = in + ih * width;
            float* dst = out + r * ow;
            AccumulateTap(dst, src, s, lo, hi, sw, off);
          }
        }
      }
    });
  } else {
    // im2col tiles of `tile` output positions (a multiple of kNr, zero padded), kTileBytes each
    const bool pointwise = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && pb == 0 && pr == 0;
    // strips of wide positions: 64 for the AVX-512 6 x 64 micro-kernel, else kNr (Loops::Gemm)
    const size_t wide = HasPanel64() ? kNb : kNr;
    const size_t tile = std::max(wide, std::min(RoundUp(positions, wide), kTileBytes / (4 * depth) / wide * wide));
    const size_t tiles = (positions + tile - 1) / tile;
    // few tiles (small feature maps): output channels are split too, so every thread has work
    // (each block of channels packs its own copy of the tile)
    const size_t blocks = std::max<size_t>(1, std::min((kConvTasks + tiles - 1) / tiles, mg / (8 * kMr)));
    const size_t block_rows = RoundUp((mg + blocks - 1) / blocks, kMr);
    std::vector<float> wg(mg * depth);  // one group's weights at a time: one layer's block, transient
    for (int64_t g = 0; g < group && ok; ++g) {
      weight_->Decode(uint64_t(g) * mg * depth, mg * depth, wg.data());
      for (int64_t n = 0; n < batch && ok; ++n) {
        const float* in = x + (n * w[1] * group + g * cg) * plane;
        float* out = y + (n * channels + g * mg) * positions;
        ok = ParallelTasks(context, tiles * blocks, uint64_t{mg} * positions * depth, [&](size_t task) {
          const size_t t = task / blocks, m0 = (task % blocks) * block_rows;
          if (m0 >= mg) return;
          const size_t p0 = t * tile, pc = std::min(tile, positions - p0);
          // im2col in strips of `wide` positions: position p, row k at col[((p / wide) * depth + k) * wide + p % wide]
          std::vector<float> col(depth * tile, 0.0f);
          if (pointwise) {  // 1x1, stride 1, no padding: the input rows as they are
            for (size_t k = 0; k < depth; ++k) {
              for (size_t p = 0; p < pc; p += wide) {
                std::memcpy(&col[((p / wide) * depth + k) * wide], in + k * plane + p0 + p, 4 * std::min(wide, pc - p));
              }
            }
          } else {
            std::vector<int64_t> top(pc), left(pc);  // each position's input corner
            for (size_t p = 0; p < pc; ++p) {
              top[p] = static_cast<int64_t>((p0 + p) / ow) * sh - pt;
              left[p] = static_cast<int64_t>((p0 + p) % ow) * sw - pl;
            }
            for (size_t k = 0; k < depth; ++k) {
              const int64_t c = k / (kh * kw), i = (k / kw) % kh, j = k % kw;
              for (size_t p = 0; p < pc; ++p) {
                const int64_t ih = top[p] + i * dh, iw = left[p] + j * dw;
                col[((p / wide) * depth + k) * wide + p % wide] =
                    (ih >= 0 && ih < height && iw >= 0 && iw < width) ? in[c * plane + ih * width + iw] : 0.0f;
              }
            }
          }
          const size_t rows = std::min(block_rows, mg - m0);
          if (wide == kNr) {
            loops.Gemm(wg.data() + m0 * depth, depth, col.data(), depth, out + m0 * positions + p0, positions, rows, pc);
            return;
          }
          std::vector<float> part;  // a last strip narrower than 64: its products, then the columns it has
          for (size_t p = 0; p < pc; p += wide) {
            const size_t cols = std::min(wide, pc - p);
            const float* strip = col.data() + (p / wide) * depth * wide;
            float* to = out + m0 * positions + p0 + p;
            if (cols == wide) {
              Panel64Gemm(wg.data() + m0 * depth, depth, strip, depth, to, positions, rows);
              continue;
            }
            part.assign(rows * wide, 0.0f);
            Panel64Gemm(wg.data() + m0 * depth, depth, strip, depth, part.data(), wide, rows);
            for (size_t r = 0; r < rows; ++r) {
              for (size_t j = 0; j < cols; ++j) to[r * positions + j] += part[r * wide + j];
            }
          }
        });
      }
    }
  }
  if (!ok) return Fail("out of memory");
  if (bias != nullptr) {
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t m = 0; m < channels; ++m) {
        float* out = y + (n * channels + m) * positions;
        for (size_t p = 0; p < positions; ++p) out[p] += bias[m];
      }
    }
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Kernel creation: attributes, the constant seed, validation.

namespace {

template <typename T>
T AttributeOr(const Ort::ConstKernelInfo& info, const char* name, T fallback) {
  try {
    return info.GetAttribute<T>(name);
  } catch (const std::exception&) {
    return fallback;
  }
}

// An absent list takes `fallback`; a present but empty one is returned as it is, so the size
// checks refuse it (onnxruntime's own Conv refuses an empty dilations / strides / pads too).
std::vector<int64_t> IntsOr(const Ort::ConstKernelInfo& info, const char* name, std::vector<int64_t> fallback) {
  try {
    return info.GetAttributes<int64_t>(name);
  } catch (const std::exception&) {
    return fallback;
  }
}

// accuracy_level (MatMul, Gemm): absent or 0 (float32), or 4 (int8 compute).
std::string ReadAccuracyLevel(const Ort::ConstKernelInfo& info, FusedAttributes* a) {
  a->accuracy_level = AttributeOr<int64_t>(info, "accuracy_level", 0);
  if (a->accuracy_level != 0 && a->accuracy_level != 4) {
    return "accuracy_level " + std::to_string(a->accuracy_level) + " is not supported: 0 (float32) or 4 (int8 compute)";
  }
  return "";
}

// The operator's own attributes and the weight's rank: "" or the message.
std::string ReadFused(FusedKind kind, const Ort::ConstKernelInfo& info, const std::vector<int64_t>& shape,
                      FusedAttributes* a) {
  const std::string rank = std::to_string(shape.size());
  switch (kind) {
    case FusedKind::kMatMul:
      if (shape.size() != 2) return "the weight must be a matrix [K, N] (rank " + rank + ")";
      return ReadAccuracyLevel(info, a);
    case FusedKind::kGemm:
      if (shape.size() != 2) return "the weight must be a matrix (rank " + rank + ")";
      if (std::string error = ReadAccuracyLevel(info, a); !error.empty()) return error;
      a->trans_b = AttributeOr<int64_t>(info, "op_transB", 0);
      a->alpha = AttributeOr<float>(info, "op_alpha", 1.0f);
      a->beta = AttributeOr<float>(info, "op_beta", 1.0f);
      if (AttributeOr<int64_t>(info, "op_transA", 0) != 0) return "op_transA must be 0";
      if (a->trans_b != 0 && a->trans_b != 1) return "op_transB must be 0 or 1";
      return "";
    case FusedKind::kGather:
      if (shape.empty()) return "the weight must have rank >= 1";
      if (AttributeOr<int64_t>(info, "op_axis", 0) != 0) return "op_axis must be 0";
      return "";
    case FusedKind::kConv: {
      if (shape.size() != 4) return "the weight must be [M, C/group, kH, kW] (2-D convolution; rank " + rank + ")";
      a->auto_pad = AttributeOr<std::string>(info, "op_auto_pad", "NOTSET");
      a->group = AttributeOr<int64_t>(info, "op_group", 1);
      a->dilations = IntsOr(info, "op_dilations", {1, 1});
      a->strides = IntsOr(info, "op_strides", {1, 1});
      a->pads = IntsOr(info, "op_pads", {0, 0, 0, 0});
      a->kernel_shape = IntsOr(info, "op_kernel_shape", {shape[2], shape[3]});
      if (a->auto_pad != "NOTSET" && a->auto_pad != "VALID" && a->auto_pad != "SAME_UPPER" && a->auto_pad != "SAME_LOWER") {
        return "op_auto_pad '" + Printable(a->auto_pad) + "' is unknown";
      }
      if (a->group < 1 || shape[0] % a->group != 0) return "op_group must be >= 1 and divide M = " + std::to_string(shape[0]);
      if (a->dilations.size() != 2 || a->strides.size() != 2 || a->pads.size() != 4) {
        return "op_dilations and op_strides need 2 values, op_pads 4 (2-D convolution)";
      }
      for (int64_t v : a->dilations) if (v < 1 || v > (int64_t{1} << 20)) return "op_dilations must be in [1, 2^20]";
      for (int64_t v : a->strides) if (v < 1 || v > (int64_t{1} << 20)) return "op_strides must be in [1, 2^20]";
      for (int64_t v : a->pads) if (v < 0 || v > (int64_t{1} << 20)) return "op_pads must be in [0, 2^20]";
      if (a->kernel_shape != std::vector<int64_t>{shape[2], shape[3]}) return "op_kernel_shape does not match the weight";
      if (shape[1] < 1 || shape[2] < 1 || shape[3] < 1) return "the weight has an empty kernel";
      return "";
    }
  }
  return "unknown operator";
}

}  // namespace

const char* FusedCpuOp::GetName() const { return OpName(kind_); }

ONNXTensorElementDataType FusedCpuOp::GetInputType(size_t i) const {
  if (i == 1) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  if (i == 2) return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  if (i == 0 && kind_ == FusedKind::kGather) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // int32 / int64
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

std::string ScanSeed(const PairDecoder& decoder, const NodeParams& node, const uint8_t* seed, const uint16_t* scales) {
  const uint64_t pairs = (decoder.num_elements() + 1) / 2;
  constexpr uint64_t kChunk = 1 << 14;
  std::vector<float> scratch(2 * std::min(pairs, kChunk));
  for (uint64_t p = 0; p < pairs; p += kChunk) {
    if (decoder.DecodePairs(seed, scales, p, std::min(pairs, p + kChunk), scratch.data())) return IndexRuleError(node);
  }
  return "";
}

std::string ReadFusedNode(FusedKind kind, const Ort::ConstKernelInfo& info, FusedNode* out) {
  out->name = info.GetNodeName();
  NodeParams& node = out->node;
  std::string error = ReadNode(info, &node, /*count_inputs=*/false);
  if (!error.empty()) return error;
  const int64_t dtype = node.lattice ? node.lattice_params.dtype : node.trellis ? node.trellis_params.dtype : node.winding.dtype;
  if (dtype != kFloat32) return "rule 9: a fused operator's weight must be float32 (dtype 1)";
  error = ReadFused(kind, info, node.shape, &out->attrs);
  if (!error.empty()) return "rule 9: " + error;
  // the seed (and scales) must be constant initializers: read once here, never per run
  const size_t inputs = info.GetInputCount();
  int constant = 0;
  Ort::ConstValue seed = info.GetTensorConstantInput(1, &constant);
  if (!constant) return "rule 9: the seed must be a constant initializer";
  Ort::ConstValue scales{nullptr};
  if (inputs > 2 && !info.GetInputName(2).empty()) {
    scales = info.GetTensorConstantInput(2, &constant);
    if (!constant) return "rule 9: the scales must be a constant initializer";
  }
  error = ValidateInputs(node, seed, scales);
  if (!error.empty()) return error;
  out->seed = seed.GetTensorData<uint8_t>();
  out->scales = scales ? static_cast<const uint16_t*>(scales.GetTensorRawData()) : nullptr;
  out->decoder = MakePairDecoder(node);
  // rules 5 / 7 once, over the whole seed: a run never meets a bad index
  return ScanSeed(*out->decoder, node, out->seed, out->scales);
}

OrtStatusPtr FusedCpuOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* raw_info, void** kernel) const {
  return CreateFusedKernel(api, kind_, raw_info, kernel, [&](FusedNode node) {
    auto weight = std::make_unique<EncodedWeight>(std::move(node.decoder), node.node.shape, node.seed, node.scales);
    Int8Plan plan;
    const bool int8 = node.attrs.accuracy_level == 4 && weight->PrepareInt8() &&
                      PlanInt8(*weight, node.attrs.trans_b != 0, &plan);
    std::unique_ptr<Int8Packed> packed;
    std::unique_ptr<FloatPacked> float_packed;
    if (int8 && packing_ == Packing::kPacked) {  // the int8 form once, here: no decode per call
      packed = std::make_unique<Int8Packed>();
      PackInt8(*weight, plan, packed.get());
    } else if (!int8 && packing_ == Packing::kPacked &&
               (kind_ == FusedKind::kMatMul || (kind_ == FusedKind::kGemm && node.attrs.trans_b == 0))) {
      float_packed = std::make_unique<FloatPacked>();  // codes, where the codec and the CPU take them
      if (!PackFloat(*weight, float_packed.get())) float_packed.reset();
    }
    return new FusedCpuKernel(kind_, node.name, std::move(node.attrs), std::move(weight), int8, plan,
                              std::move(packed), std::move(float_packed));
  });
}

}  // namespace hyperonnx
