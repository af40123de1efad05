// Fused operators, CUDA kernels: see fused_cuda.h for the design, docs/FORMAT.md §8 for the
// contract. Every global load and store below is guarded by the tensor's bounds: a weight chunk
// is decoded whole only when its 8 elements lie in one row of the weight and inside it, else
// element by element with each index checked; activation, C and output accesses check their row
// and column.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <utility>

#include "decode_device.cuh"
#include "fused_cuda.h"

namespace hyperonnx::cuda {
namespace {

constexpr int kThreads = 256;            // every fused kernel's block
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 8;                // consecutive weights a thread decodes at once
constexpr uint32_t kMaxRows = 8;         // activation rows of the GEMV kernels
constexpr uint32_t kTableFloats = 8192;  // largest per-tensor table staged in shared memory (32 KB)
constexpr int kGemvColumns = 32 * kChunk;  // columns of a GEMV block (one warp's width)
constexpr int kTileN = 64, kTileK = 16;    // GEMM tile: 64 output columns, K steps of 16
constexpr int kGatherBatch = 256;          // Gather rows per launch (kernel parameters)

// ----------------------------------------------------------------------------------------------
// Decoders: float32 weight values, element e of the row-major weight. Element(e) for any
// e < num_elements; Chunk(e0) for elements e0 .. e0 + 7 when e0 % 8 == 0 and e0 + 8 <=
// num_elements. `table` is the block's shared-memory table of table_floats values, filled by
// Stage (lattice, trellis: a copy of `global_table`; 0 values: none, the arithmetic runs per
// value).

// Winding (FORMAT.md §3): DecodePair over the ring scales (the table).
struct WindingDecoder {
  WindingArgs a;  // flag unused: rule 5 held for every index when the weight was created
  uint32_t table_floats;  // rings + 1

  __device__ void Stage(float* table) const {
    for (uint32_t k = threadIdx.x; k < table_floats; k += blockDim.x) table[k] = a.scales[k];
  }
  __device__ float2 PairAt(const float* table, uint64_t i) const {
    uint32_t x = LoadIndex<true>(a.s, i);
    x = x < a.codebook_size ? x : 0u;  // checked at creation; keeps the decode in its codebook regardless
    float2 v;
    DecodePair(a, table, x, &v.x, &v.y);
    return v;
  }
  __device__ float Element(const float* table, uint64_t e) const {
    const float2 v = PairAt(table, e >> 1);
    return (e & 1) ? v.y : v.x;
  }
  __device__ void Chunk(const float* table, uint64_t e0, float* v) const {
#pragma unroll
    for (int p = 0; p < kChunk / 2; ++p) {
      const float2 w = PairAt(table, (e0 >> 1) + p);
      v[2 * p] = w.x;
      v[2 * p + 1] = w.y;
    }
  }
};

// Lattice (FORMAT.md §7.3): LatticePair with v(m) from the table or LatticeCoordinate.
struct LatticeDecoder {
  LatticeArgs a;  // flag unused: rules 6-7 held when the weight was created
  const float* global_table;  // v(m) for m < N, or nullptr
  uint32_t table_floats;      // N or 0

  __device__ void Stage(float* table) const {
    for (uint32_t m = threadIdx.x; m < table_floats; m += blockDim.x) table[m] = global_table[m];
  }
  __device__ float Scale(uint64_t pair) const {
    return LatticeScale(a.p, __ldg(a.scales + Divide(pair, a.by_group_pairs)));
  }
  __device__ float2 PairAt(const float* table, uint64_t i, float scale) const {
    uint32_t j = LoadIndex<true>(a.s, i);
    j = j < a.p.points ? j : 0u;  // checked at creation (rule 7); keeps a table read in bounds regardless
    if (table_floats != 0) return LatticePair(a.p, j, scale, [&](uint32_t m) { return table[m]; });
    return LatticePair(a.p, j, scale, [&](uint32_t m) { return LatticeCoordinate(a.p, m); });
  }
  __device__ float Element(const float* table, uint64_t e) const {
    const float2 v = PairAt(table, e >> 1, Scale(e >> 1));
    return (e & 1) ? v.y : v.x;
  }
  __device__ void Chunk(const float* table, uint64_t e0, float* v) const {
    const uint64_t i0 = e0 >> 1;
    const uint64_t q0 = Divide(i0, a.by_group_pairs);
    const bool one_group = q0 == Divide(i0 + kChunk / 2 - 1, a.by_group_pairs);  // groups of >= 8 weights
    const float s0 = LatticeScale(a.p, __ldg(a.scales + q0));
#pragma unroll
    for (int p = 0; p < kChunk / 2; ++p) {
      const float2 w = PairAt(table, i0 + p, one_group ? s0 : Scale(i0 + p));
      v[2 * p] = w.x;
      v[2 * p + 1] = w.y;
    }
  }
};

// Trellis (FORMAT.md §9.3): h of each weight's window, times its group's scale. A chunk starts on
// a multiple of 8 and G is one, so it lies in one group, its stream starting on a byte: 12 bytes
// of the circular stream hold its 8 windows (7k + L <= 72 bits).
struct TrellisDecoder {
  TrellisParams p;
  const uint8_t* seed;
  const uint16_t* scales;
  FastDiv64 by_group;  // G: exact for e < 2^40 and G <= 2^16 (e * (magic * G - 2^64) < 2^56 < 2^64)
  const float* global_table;  // h(s) for s < 2^L, or nullptr
  uint32_t table_floats;      // 2^L or 0

  __device__ void Stage(float* table) const {
    for (uint32_t s = threadIdx.x; s < table_floats; s += blockDim.x) table[s] = global_table[s];
  }
  __device__ float Value(const float* table, uint32_t window) const {
    return table_floats != 0 ? table[window] : TrellisValue(p, window);
  }
  __device__ float Element(const float* table, uint64_t e) const {
    const uint64_t q = Divide(e, by_group);
    const uint32_t t = static_cast<uint32_t>(e - q * p.group);
    return __fmul_rn(Value(table, TrellisWindow(p, seed, q, t)), TrellisScale(p, __ldg(scales + q)));
  }
  __device__ void Chunk(const float* table, uint64_t e0, float* v) const {
    const uint64_t q = Divide(e0, by_group);
    const uint32_t t0 = static_cast<uint32_t>(e0 - q * p.group);
    const uint8_t* g = seed + q * p.group_bytes;
    uint32_t byte = t0 / 8 * p.bits;  // = t0 * k / 8 < group_bytes
    uint32_t w0 = 0, w1 = 0, w2 = 0;
#pragma unroll
    for (int b = 0; b < 12; ++b) {  // as TrellisWindow: the stream wraps at the group's end
      const uint32_t x = uint32_t{__ldcs(g + byte)} << (8 * (b & 3));
      if (b < 4) w0 |= x; else if (b < 8) w1 |= x; else w2 |= x;
      byte = byte + 1 == p.group_bytes ? 0 : byte + 1;
    }
    const float scale = TrellisScale(p, __ldg(scales + q));
    const uint32_t mask = (uint32_t{1} << p.window) - 1u;
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      const uint32_t bit = j * p.bits;  // <= 56: bits [bit, bit + L) lie in w0..w2
      const uint32_t window = (bit < 32 ? __funnelshift_r(w0, w1, bit) : __funnelshift_r(w1, w2, bit - 32)) & mask;
      v[j] = __fmul_rn(Value(table, window), scale);
    }
  }
};

// ----------------------------------------------------------------------------------------------
// Kernels

struct Epilogue {
  float alpha;
  float beta;
  const float* c;  // nullptr: no C term (absent, or beta = 0: skipped as the CPU kernel does)
  int64_t c_rows, c_cols;
  bool active;  // alpha != 1 or a C term
};

// Gemm's alpha * acc + beta * C[m, n], as the CPU kernel computes it.
__device__ __forceinline__ float Finish(const Epilogue& e, float acc, uint64_t m, uint64_t n) {
  if (!e.active) return acc;
  float v = __fmul_rn(e.alpha, acc);
  if (e.c != nullptr) {
    const uint64_t at = (e.c_rows == 1 ? 0 : m) * static_cast<uint64_t>(e.c_cols) + (e.c_cols == 1 ? 0 : n);
    v = __fadd_rn(v, __fmul_rn(e.beta, __ldg(e.c + at)));
  }
  return v;
}

struct Problem {
  const float* a;
  float* y;
  uint64_t rows, depth, cols;
  bool aligned;  // the weight's stored rows are a multiple of 8 long: chunks never straddle a row
  Epilogue epilogue;
};

// The 8 weights (row, col0 .. col0 + 7) of a weight stored [rows x length]: a chunk when they
// are whole in the row, else one by one; those past the row's end (or a row past the last) are 0.
template <typename D>
__device__ __forceinline__ void LoadRun(const D& d, const float* table, bool aligned, uint64_t row, uint64_t rows,
                                        uint64_t col0, uint64_t length, float* v) {
  if (row < rows && aligned && col0 + kChunk <= length) {
    d.Chunk(table, row * length + col0, v);
    return;
  }
#pragma unroll
  for (int j = 0; j < kChunk; ++j) {
    v[j] = (row < rows && col0 + j < length) ? d.Element(table, row * length + col0 + j) : 0.0f;
  }
}

// M <= 8, W [K, N]. Block (x, y): columns [256x, 256x + 256), weight rows [y * slice, +slice).
// Lane l owns columns 8l .. 8l + 7 of the block; warp w takes rows w, w + 8, ... of the slice.
// Y must hold zeros (or earlier slices' sums): the block adds into it.
template <typename D>
__global__ void __launch_bounds__(kThreads) GemvKernel(D d, Problem g, uint64_t slice) {
  extern __shared__ float table[];
  __shared__ float sums[kWarps][kGemvColumns];
  d.Stage(table);
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint64_t col0 = uint64_t{blockIdx.x} * kGemvColumns + lane * kChunk;
  const uint64_t k_begin = uint64_t{blockIdx.y} * slice;
  const uint64_t k_end = g.depth - k_begin < slice ? g.depth : k_begin + slice;
  float acc[kMaxRows][kChunk];
#pragma unroll
  for (uint32_t m = 0; m < kMaxRows; ++m) {
#pragma unroll
    for (int j = 0; j < kChunk; ++j) acc[m][j] = 0.0f;
  }
  if (col0 < g.cols) {
    for (uint64_t k = k_begin + warp; k < k_end; k += kWarps) {
      float v[kChunk];
      LoadRun(d, table, g.aligned, k, g.depth, col0, g.cols, v);
#pragma unroll
      for (uint32_t m = 0; m < kMaxRows; ++m) {
        if (m < g.rows) {
          const float x = __ldg(g.a + m * g.depth + k);
#pragma unroll
          for (int j = 0; j < kChunk; ++j) acc[m][j] = __fmaf_rn(x, v[j], acc[m][j]);
        }
      }
    }
  }
  // the 8 warps' sums per column, then one atomicAdd per column and row
#pragma unroll
  for (uint32_t m = 0; m < kMaxRows; ++m) {
    if (m < g.rows) {
#pragma unroll
      for (int j = 0; j < kChunk; ++j) sums[warp][lane * kChunk + j] = acc[m][j];
      __syncthreads();
      const uint64_t n = uint64_t{blockIdx.x} * kGemvColumns + threadIdx.x;  // kThreads == kGemvColumns
      float total = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total = __fadd_rn(total, sums[w][threadIdx.x]);
      if (n < g.cols) atomicAdd(g.y + m * g.cols + n, total);
      __syncthreads();
    }
  }
}
static_assert(kThreads == kGemvColumns, "GemvKernel sums one column per thread");

// Y = Finish(Y): Gemm's alpha and C after GemvKernel's sums.
__global__ void __launch_bounds__(kThreads) EpilogueKernel(Problem g) {
  const uint64_t total = g.rows * g.cols;
  for (uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < total; i += uint64_t{gridDim.x} * blockDim.x) {
    g.y[i] = Finish(g.epilogue, g.y[i], i / g.cols, i % g.cols);
  }
}

// M <= 8, W stored [N, K]: warp w of block b takes output columns n = 8b + w, + 8 * gridDim.x,
// ...; lane l the weights 8l .. 8l + 7, + 256, ... of stored row n.
template <typename D>
__global__ void __launch_bounds__(kThreads) GemvTransKernel(D d, Problem g) {
  extern __shared__ float table[];
  d.Stage(table);
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (uint64_t n = uint64_t{blockIdx.x} * kWarps + warp; n < g.cols; n += uint64_t{gridDim.x} * kWarps) {
    float acc[kMaxRows];
#pragma unroll
    for (uint32_t m = 0; m < kMaxRows; ++m) acc[m] = 0.0f;
    for (uint64_t k0 = uint64_t(lane) * kChunk; k0 < g.depth; k0 += 32 * kChunk) {
      float v[kChunk];
      LoadRun(d, table, g.aligned, n, g.cols, k0, g.depth, v);
#pragma unroll
      for (uint32_t m = 0; m < kMaxRows; ++m) {
        if (m < g.rows) {
          const float* a = g.a + m * g.depth + k0;
#pragma unroll
          for (int j = 0; j < kChunk; ++j) {
            if (k0 + j < g.depth) acc[m] = __fmaf_rn(__ldg(a + j), v[j], acc[m]);
          }
        }
      }
    }
#pragma unroll
    for (uint32_t m = 0; m < kMaxRows; ++m) {
      if (m < g.rows) {
        float s = acc[m];
#pragma unroll
        for (int o = 16; o > 0; o /= 2) s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
        if (lane == 0) g.y[m * g.cols + n] = Finish(g.epilogue, s, m, n);
      }
    }
  }
}

// M > 8: the output tile rows [BM * y, + BM) x columns [64 x, + 64), BM = 16 * TM. Thread
// (ty, tx) = (tid / 16, tid % 16) owns rows ty + 16i (i < TM) and columns tx + 16j (j < 4): a
// warp reads 16 consecutive weights and 2 activation values per step (no bank conflicts).
// Each K step: threads 0-127 decode the 16 x 64 weight tile (one chunk each), 128-255 load the
// activation tile; then all multiply.
template <typename D, int TM>
__global__ void __launch_bounds__(kThreads) GemmKernel(D d, Problem g, bool trans) {
  constexpr int BM = 16 * TM;
  extern __shared__ float table[];
  __shared__ float a_tile[kTileK][BM + 1];  // +1: the transposing stores hit different banks
  __shared__ float w_tile[kTileK][kTileN];
  d.Stage(table);
  __syncthreads();
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const uint64_t m0 = uint64_t{blockIdx.y} * BM, n0 = uint64_t{blockIdx.x} * kTileN;
  float acc[TM][4];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
  }
  for (uint64_t k0 = 0; k0 < g.depth; k0 += kTileK) {
    if (threadIdx.x < 128) {
      const int c = threadIdx.x;
      float v[kChunk];
      if (!trans) {  // W [K, N]: chunk c = tile row c / 8, columns 8 (c % 8) ..
        const int kk = c / 8, nn = c % 8 * kChunk;
        LoadRun(d, table, g.aligned, k0 + kk, g.depth, n0 + nn, g.cols, v);
#pragma unroll
        for (int j = 0; j < kChunk; ++j) w_tile[kk][nn + j] = v[j];
      } else {  // W stored [N, K]: chunk c = tile column c / 2, rows 8 (c % 2) ..
        const int nn = c / 2, kk = c % 2 * kChunk;
        LoadRun(d, table, g.aligned, n0 + nn, g.cols, k0 + kk, g.depth, v);
#pragma unroll
        for (int j = 0; j < kChunk; ++j) w_tile[kk + j][nn] = v[j];
      }
    } else {
      for (int e = threadIdx.x - 128; e < BM * kTileK; e += 128) {
        const int r = e / kTileK, kk = e % kTileK;
        const uint64_t m = m0 + r, k = k0 + kk;
        a_tile[kk][r] = (m < g.rows && k < g.depth) ? __ldg(g.a + m * g.depth + k) : 0.0f;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float x[TM], w[4];
#pragma unroll
      for (int i = 0; i < TM; ++i) x[i] = a_tile[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) w[j] = w_tile[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __fmaf_rn(x[i], w[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < g.rows && n < g.cols) g.y[m * g.cols + n] = Finish(g.epilogue, acc[i][j], m, n);
    }
  }
}

struct GatherRows {
  uint32_t count;  // <= kGatherBatch
  int64_t row[kGatherBatch];  // weight rows, each < the weight's first dimension
};

// Output row i (blockIdx.y) = weight row rows.row[i]; threads take 8 weights of it at a time.
template <typename D>
__global__ void __launch_bounds__(kThreads) GatherKernel(D d, GatherRows rows, uint64_t row_elements, bool aligned,
                                                         float* y) {
  extern __shared__ float table[];
  d.Stage(table);
  __syncthreads();
  const uint32_t i = blockIdx.y;
  if (i >= rows.count) return;
  const uint64_t row = static_cast<uint64_t>(rows.row[i]);
  float* out = y + i * row_elements;
  for (uint64_t c0 = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) * kChunk; c0 < row_elements;
       c0 += uint64_t{gridDim.x} * blockDim.x * kChunk) {
    float v[kChunk];
    LoadRun(d, table, aligned, row, row + 1, c0, row_elements, v);
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      if (c0 + j < row_elements) out[c0 + j] = v[j];
    }
  }
}

__global__ void LatticeTableKernel(LatticeParams p, float* table) {
  for (uint32_t m = blockIdx.x * blockDim.x + threadIdx.x; m < p.points; m += gridDim.x * blockDim.x) {
    table[m] = LatticeCoordinate(p, m);
  }
}

__global__ void TrellisTableKernel(TrellisParams p, float* table) {
  const uint32_t states = uint32_t{1} << p.window;
  for (uint32_t s = blockIdx.x * blockDim.x + threadIdx.x; s < states; s += gridDim.x * blockDim.x) {
    table[s] = TrellisValue(p, s);
  }
}

// ----------------------------------------------------------------------------------------------
// Host side

constexpr uint64_t kMaxGridX = 0x7fffffffu, kMaxGridY = 65535;

uint64_t CeilDiv(uint64_t x, uint64_t d) { return (x + d - 1) / d; }

template <typename D>
size_t TableBytes(const D& d) {
  return size_t{d.table_floats} * sizeof(float);
}

template <typename D>
std::string LaunchGemm(const D& d, const Problem& g, bool trans, int sms, cudaStream_t stream) {
  const size_t shared = TableBytes(d);
  cudaError_t e = cudaSuccess;
  if (g.rows <= kMaxRows && trans) {
    const uint64_t blocks = std::min<uint64_t>(CeilDiv(g.cols, kWarps), uint64_t(sms) * 8);
    GemvTransKernel<D><<<static_cast<unsigned>(blocks), kThreads, shared, stream>>>(d, g);
  } else if (g.rows <= kMaxRows) {
    const uint64_t col_blocks = CeilDiv(g.cols, kGemvColumns);
    if (col_blocks > kMaxGridX) return "the weight has too many columns for one launch";
    // split K until about 4 blocks per SM, each slice at least 64 rows (8 per warp)
    uint64_t splits = std::max<uint64_t>(1, std::min<uint64_t>(CeilDiv(uint64_t(sms) * 4, col_blocks),
                                                                CeilDiv(g.depth, 64)));
    splits = std::min<uint64_t>(splits, kMaxGridY);
    const uint64_t slice = std::max<uint64_t>(1, CeilDiv(g.depth, splits));
    splits = std::max<uint64_t>(1, CeilDiv(g.depth, slice));
    e = cudaMemsetAsync(g.y, 0, g.rows * g.cols * sizeof(float), stream);
    if (e != cudaSuccess) return CudaError("clearing the output", e);
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(splits));
    GemvKernel<D><<<grid, kThreads, shared, stream>>>(d, g, slice);
    if (g.epilogue.active) {
      const uint64_t blocks = std::min<uint64_t>(CeilDiv(g.rows * g.cols, kThreads), uint64_t(sms) * 8);
      EpilogueKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(g);
    }
  } else {
    const bool small = g.rows <= 32;  // a 16-row tile wastes less on few rows; 64 rows reuse W more
    const uint64_t row_blocks = CeilDiv(g.rows, small ? 16 : 64), col_blocks = CeilDiv(g.cols, kTileN);
    if (row_blocks > kMaxGridY || col_blocks > kMaxGridX) return "the product is too large for one launch";
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks));
    if (small) {
      GemmKernel<D, 1><<<grid, kThreads, shared, stream>>>(d, g, trans);
    } else {
      GemmKernel<D, 4><<<grid, kThreads, shared, stream>>>(d, g, trans);
    }
  }
  e = cudaGetLastError();
  return e == cudaSuccess ? "" : CudaError("launching a fused kernel", e);
}

template <typename D>
std::string LaunchGather(const D& d, const int64_t* rows, uint64_t count, uint64_t row_elements, float* y, int sms,
                         cudaStream_t stream) {
  const size_t shared = TableBytes(d);
  const bool aligned = row_elements % kChunk == 0;
  // blocks per output row: about 2 waves of the GPU in all, at most what the row needs
  const uint64_t needed = CeilDiv(CeilDiv(row_elements, kChunk), kThreads);
  for (uint64_t first = 0; first < count; first += kGatherBatch) {
    GatherRows batch;
    batch.count = static_cast<uint32_t>(std::min<uint64_t>(kGatherBatch, count - first));
    for (uint32_t i = 0; i < batch.count; ++i) batch.row[i] = rows[first + i];
    const uint64_t per_row = std::max<uint64_t>(1, std::min<uint64_t>(needed, CeilDiv(uint64_t(sms) * 2, batch.count)));
    const dim3 grid(static_cast<unsigned>(per_row), batch.count);
    GatherKernel<D><<<grid, kThreads, shared, stream>>>(d, batch, row_elements, aligned, y + first * row_elements);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return CudaError("launching the DecodeGather kernel", e);
  }
  return "";
}

int MultiprocessorCount() {
  DeviceLimits limits;
  return QueryDevice(&limits) == cudaSuccess ? std::max(limits.sms, 1) : 1;
}

}  // namespace

struct DeviceWeight::Impl {
  enum class Codec { kWinding, kLattice, kTrellis } codec = Codec::kWinding;
  uint64_t num_elements = 0;
  int sms = 1;
  uint8_t* seed = nullptr;  // device buffers, owned
  uint16_t* scales = nullptr;
  float* table = nullptr;
  WindingDecoder winding{};
  LatticeDecoder lattice{};
  TrellisDecoder trellis{};

  ~Impl() {
    cudaFree(seed);  // nullptr is a no-op
    cudaFree(scales);
    cudaFree(table);
  }

  // Device copies of `count` bytes of host memory (at least one byte allocated), on `stream`.
  template <typename T>
  cudaError_t Upload(const T* host, uint64_t count, T** out, cudaStream_t stream) {
    cudaError_t e = cudaMalloc(reinterpret_cast<void**>(out), std::max<uint64_t>(count, 1) * sizeof(T));
    if (e == cudaSuccess && count > 0) e = cudaMemcpyAsync(*out, host, count * sizeof(T), cudaMemcpyHostToDevice, stream);
    return e;
  }

  // After the uploads and table launches: waits, so the weight is complete for every stream.
  std::string Complete(cudaStream_t stream) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess) return CudaError("copying the weight to the GPU", e);
    sms = MultiprocessorCount();
    return "";
  }

  template <typename F>
  std::string Dispatch(const F& f) const {
    switch (codec) {
      case Codec::kWinding: return f(winding);
      case Codec::kLattice: return f(lattice);
      case Codec::kTrellis: return f(trellis);
    }
    return "unknown codec";
  }
};

DeviceWeight::DeviceWeight(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceWeight::~DeviceWeight() = default;

uint64_t DeviceWeight::num_elements() const { return impl_->num_elements; }

std::string DeviceWeight::Create(const WindingParams& p, const uint8_t* seed, void* raw_stream,
                                 std::unique_ptr<DeviceWeight>* out) {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  auto impl = std::make_unique<Impl>();
  impl->codec = Impl::Codec::kWinding;
  impl->num_elements = p.num_elements;
  const cudaError_t e = impl->Upload(seed, p.seed_bytes, &impl->seed, stream);
  if (e != cudaSuccess) return CudaError("copying the weight to the GPU", e);
  impl->winding = WindingDecoder{MakeWindingArgs(p, impl->seed, nullptr), p.rings + 1};
  const std::string error = impl->Complete(stream);
  if (!error.empty()) return error;
  out->reset(new DeviceWeight(std::move(impl)));
  return "";
}

std::string DeviceWeight::Create(const LatticeParams& p, const uint8_t* seed, const uint16_t* scales, void* raw_stream,
                                 std::unique_ptr<DeviceWeight>* out) {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  auto impl = std::make_unique<Impl>();
  impl->codec = Impl::Codec::kLattice;
  impl->num_elements = p.num_elements;
  cudaError_t e = impl->Upload(seed, p.seed_bytes, &impl->seed, stream);
  if (e == cudaSuccess) e = impl->Upload(scales, p.num_scales, &impl->scales, stream);
  const bool tabulate = p.points <= kTableFloats;
  if (e == cudaSuccess && tabulate) e = cudaMalloc(reinterpret_cast<void**>(&impl->table), p.points * sizeof(float));
  if (e != cudaSuccess) return CudaError("copying the weight to the GPU", e);
  if (tabulate) LatticeTableKernel<<<static_cast<unsigned>(CeilDiv(p.points, kThreads)), kThreads, 0, stream>>>(p, impl->table);
  impl->lattice = LatticeDecoder{MakeLatticeArgs(p, impl->seed, impl->scales, nullptr), impl->table,
                                 tabulate ? p.points : 0u};
  const std::string error = impl->Complete(stream);
  if (!error.empty()) return error;
  out->reset(new DeviceWeight(std::move(impl)));
  return "";
}

std::string DeviceWeight::Create(const TrellisParams& p, const uint8_t* seed, const uint16_t* scales, void* raw_stream,
                                 std::unique_ptr<DeviceWeight>* out) {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  auto impl = std::make_unique<Impl>();
  impl->codec = Impl::Codec::kTrellis;
  impl->num_elements = p.num_elements;
  cudaError_t e = impl->Upload(seed, p.seed_bytes, &impl->seed, stream);
  if (e == cudaSuccess) e = impl->Upload(scales, p.num_groups, &impl->scales, stream);
  const uint32_t states = uint32_t{1} << p.window;
  const bool tabulate = states <= kTableFloats;
  if (e == cudaSuccess && tabulate) e = cudaMalloc(reinterpret_cast<void**>(&impl->table), states * sizeof(float));
  if (e != cudaSuccess) return CudaError("copying the weight to the GPU", e);
  if (tabulate) TrellisTableKernel<<<static_cast<unsigned>(CeilDiv(states, kThreads)), kThreads, 0, stream>>>(p, impl->table);
  impl->trellis = TrellisDecoder{p, impl->seed, impl->scales, MakeFastDiv64(p.group), impl->table,
                                 tabulate ? states : 0u};
  const std::string error = impl->Complete(stream);
  if (!error.empty()) return error;
  out->reset(new DeviceWeight(std::move(impl)));
  return "";
}

std::string DeviceWeight::Gemm(const GemmArgs& args, void* raw_stream) const {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  if (args.depth * args.cols != impl_->num_elements) return "the product's K x N is not the weight's size";
  if (args.rows == 0 || args.cols == 0) return "";
  Problem g;
  g.a = args.a;
  g.y = args.y;
  g.rows = args.rows;
  g.depth = args.depth;
  g.cols = args.cols;
  g.aligned = (args.trans ? args.depth : args.cols) % kChunk == 0;
  g.epilogue.alpha = args.alpha;
  g.epilogue.beta = args.beta;
  g.epilogue.c = args.c != nullptr && args.beta != 0.0f ? args.c : nullptr;
  g.epilogue.c_rows = args.c_rows;
  g.epilogue.c_cols = args.c_cols;
  g.epilogue.active = args.alpha != 1.0f || g.epilogue.c != nullptr;
  return impl_->Dispatch([&](const auto& d) { return LaunchGemm(d, g, args.trans, impl_->sms, stream); });
}

std::string DeviceWeight::Gather(const int64_t* rows, uint64_t count, uint64_t row_elements, float* y,
                                 void* raw_stream) const {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  if (count == 0 || row_elements == 0) return "";
  return impl_->Dispatch(
      [&](const auto& d) { return LaunchGather(d, rows, count, row_elements, y, impl_->sms, stream); });
}

}  // namespace hyperonnx::cuda
