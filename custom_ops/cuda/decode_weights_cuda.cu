// DecodeWeights, CUDA kernel (docs/FORMAT.md). Bit-identical to the CPU kernel and hyperonnx.decode.
//
// A grid-stride loop in which each thread decodes G consecutive pairs per step (G = 2 for float32,
// 4 for 16-bit outputs: one 16-byte store; G = 1 when the output is not 16-byte aligned), so a
// warp reads 32*G consecutive packed indices (two aligned 32-bit loads and a funnel shift per
// index, the G loads independent) and writes 512 contiguous bytes. Two ways to turn an index into its pair, same bits:
//   - table: each block decodes the reachable codebook, min((n+1)(C+1), 2^b) entries, already in
//     the output type, into shared memory; the loop is unpack, one shared load, one store;
//   - direct: the FORMAT.md §3 arithmetic per pair, with the integer divisions done by
//     multiply-high (FastDiv, exact for the 24-bit indices).
// Float arithmetic: __fmul_rn / __fadd_rn (never contracted into an FMA) in FORMAT.md's order; the
// file is also compiled with -fmad=false. Indices >= (n+1)(C+1) are clamped to 0 (no out-of-bounds
// read) and set a device flag the host reads before it returns the output (rule 5).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "decode_weights_cuda.h"

namespace hyperonnx::cuda {
namespace {

constexpr int kDirectThreads = 256;
constexpr int kTableThreads = 512;
constexpr size_t kDefaultSharedBytes = 48 * 1024;  // dynamic shared memory without opting in

// Exact x / d for x < 2^24 and 1 <= d <= 2^21 (the 24-bit indices and the divisors n+1 and m).
// d = 2^s: x >> s. Otherwise, with s = floor(log2 d) and magic = ceil(2^(32+s) / d) < 2^32,
// q = umulhi(x, magic) >> s: the error x*e / (d*2^(32+s)), e = magic*d - 2^(32+s) < d < 2^(s+1),
// is below 2^(25+s) / (d*2^(32+s)) < 1/d, too small to cross the next integer.
struct FastDiv {
  uint32_t magic;  // 0 for a power of two
  uint32_t shift;
};

FastDiv MakeFastDiv(uint32_t d) {
  uint32_t s = 0;
  while ((uint64_t{2} << s) <= d) ++s;  // s = floor(log2 d)
  if ((d & (d - 1)) == 0) return FastDiv{0, s};
  const uint64_t magic = ((uint64_t{1} << (32 + s)) + d - 1) / d;
  return FastDiv{static_cast<uint32_t>(magic), s};
}

__device__ __forceinline__ uint32_t Divide(uint32_t x, FastDiv d) {
  return (d.magic ? __umulhi(x, d.magic) : x) >> d.shift;
}

template <typename T>
struct alignas(2 * sizeof(T)) Pair {
  T first, second;
};

// What every kernel needs, by value (kernel parameter space).
struct Args {
  const uint8_t* seed;
  uint64_t seed_bytes;
  uint64_t whole_pairs;  // N / 2: pairs whose two values are both written
  uint64_t num_elements;
  uint32_t bits;
  uint32_t mask;
  uint32_t points;
  uint32_t m;
  uint32_t codebook_size;
  uint32_t entries;  // table entries: min(codebook_size, 2^bits)
  uint32_t rings;
  int aligned;  // the seed pointer is 4-byte aligned: whole-word loads
  int64_t dtype;
  FastDiv by_points1;  // n + 1
  FastDiv by_m;
  float cx, cy, step, offset;
  float scales[kMaxRings + 1];
  uint32_t* flag;  // null: every index is in range by construction
};

// Index i of the bit stream (FORMAT.md §4). Whole aligned words when both lie inside the seed,
// else the byte-wise ReadIndex of the shared header, which stops at the seed's end.
__device__ __forceinline__ uint32_t LoadIndex(const Args& a, uint64_t i) {
  const uint64_t bit = i * a.bits;
  const uint64_t word = bit >> 5;
  if (a.aligned && (word + 2) * 4 <= a.seed_bytes) {
    const uint32_t* words = reinterpret_cast<const uint32_t*>(a.seed) + word;
    const uint32_t lo = __ldg(words);
    const uint32_t hi = __ldg(words + 1);
    return __funnelshift_r(lo, hi, static_cast<uint32_t>(bit) & 31u) & a.mask;
  }
  return ReadIndex(a.seed, a.seed_bytes, i, a.bits);
}

// FORMAT.md §3 for an index x < codebook_size. The integers equal DecodeIndex's: j < n <= M gives
// ux = j mod M = j, and (j*m) mod m^2 = m * (j mod m). The float operations are DecodeIndex's, in
// its order, each rounded on its own.
__device__ __forceinline__ void DecodePair(const Args& a, const float* scales, uint32_t x, float* first,
                                           float* second) {
  const uint32_t k = Divide(x, a.by_points1);
  const uint32_t j = x - k * (a.points + 1);
  const uint32_t uy = a.m * (j - Divide(j, a.by_m) * a.m);
  float qx = __fadd_rn(__fmul_rn(__uint2float_rn(j), a.step), a.offset);
  float qy = __fadd_rn(__fmul_rn(__uint2float_rn(uy), a.step), a.offset);
  if (j == a.points) {  // the centroid
    qx = 0.0f;
    qy = 0.0f;
  }
  const float s = scales[k];
  *first = __fadd_rn(a.cx, __fmul_rn(qx, s));
  *second = __fadd_rn(a.cy, __fmul_rn(qy, s));
}

// Conversion to the output's bits. float16: the hardware's round-to-nearest-even conversion
// (overflow to Inf, subnormals kept: what FloatToHalf does for the finite and infinite values a
// decoder produces; NaN cannot arise from finite attributes). bfloat16: the hardware's on sm_80+,
// the shared header's FloatToBFloat16 before.
template <typename T>
__device__ __forceinline__ T Encode(int64_t dtype, float f);

template <>
__device__ __forceinline__ uint32_t Encode<uint32_t>(int64_t, float f) {
  return __float_as_uint(f);
}

template <>
__device__ __forceinline__ uint16_t Encode<uint16_t>(int64_t dtype, float f) {
  if (dtype == kFloat16) return __half_as_ushort(__float2half_rn(f));
#if __CUDA_ARCH__ >= 800
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
  return FloatToBFloat16(f);
#endif
}

__device__ __forceinline__ void LoadScales(const Args& a, float* scales) {
  for (uint32_t t = threadIdx.x; t <= a.rings; t += blockDim.x) scales[t] = a.scales[t];
}

__device__ __forceinline__ void ReportBad(const Args& a, bool bad) {
  if (bad && a.flag != nullptr) atomicOr(a.flag, 1u);
}

// The table's entries use the shared header's conversions, exactly the CPU kernel's.
template <typename T>
__device__ __forceinline__ T EncodeTable(int64_t dtype, float f);
template <>
__device__ __forceinline__ uint32_t EncodeTable<uint32_t>(int64_t, float f) { return FloatBits(f); }
template <>
__device__ __forceinline__ uint16_t EncodeTable<uint16_t>(int64_t dtype, float f) {
  return dtype == kFloat16 ? FloatToHalf(f) : FloatToBFloat16(f);
}

// G consecutive pairs, written with one store: 16 bytes when the output is 16-byte aligned.
template <typename T, int G>
struct alignas(G * sizeof(Pair<T>)) Group {
  Pair<T> pairs[G];
};

// Both paths in one loop; kTable selects how an index becomes its pair. Each thread takes G
// consecutive pairs per step: G independent index loads in flight, then one wide store.
template <typename T, int G, bool kTable>
__global__ void __launch_bounds__(kTable ? kTableThreads : kDirectThreads) DecodeKernel(Args a, Pair<T>* out) {
  extern __shared__ __align__(16) unsigned char shared[];
  Pair<T>* table = reinterpret_cast<Pair<T>*>(shared);
  __shared__ float scales[kMaxRings + 1];
  LoadScales(a, scales);
  __syncthreads();
  if (kTable) {
    for (uint32_t e = threadIdx.x; e < a.entries; e += blockDim.x) {
      float f, s;
      DecodePair(a, scales, e < a.codebook_size ? e : 0u, &f, &s);
      table[e] = Pair<T>{EncodeTable<T>(a.dtype, f), EncodeTable<T>(a.dtype, s)};
    }
    __syncthreads();
  }
  bool bad = false;
  // The pair of index x; an index out of range decodes as index 0 and raises the flag.
  const auto decode = [&](uint32_t x) {
    const bool ok = x < a.codebook_size;  // in range implies x < entries (x < 2^bits)
    bad |= !ok;
    x = ok ? x : 0u;
    if (kTable) return table[x];
    float f, s;
    DecodePair(a, scales, x, &f, &s);
    return Pair<T>{Encode<T>(a.dtype, f), Encode<T>(a.dtype, s)};
  };
  const uint64_t stride = uint64_t{gridDim.x} * blockDim.x;
  const uint64_t start = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const uint64_t groups = a.whole_pairs / G;
  for (uint64_t g = start; g < groups; g += stride) {
    uint32_t x[G];
#pragma unroll
    for (int k = 0; k < G; ++k) x[k] = LoadIndex(a, g * G + k);
    Group<T, G> v;
#pragma unroll
    for (int k = 0; k < G; ++k) v.pairs[k] = decode(x[k]);
    reinterpret_cast<Group<T, G>*>(out)[g] = v;
  }
  const uint64_t rest = groups * G + start;  // the last whole_pairs % G pairs, one per thread
  if (rest < a.whole_pairs) out[rest] = decode(LoadIndex(a, rest));
  if (start == 0 && (a.num_elements & 1)) {  // the last pair of an odd tensor: its first value only
    reinterpret_cast<T*>(out)[a.num_elements - 1] = decode(LoadIndex(a, a.whole_pairs)).first;
  }
  ReportBad(a, bad);
}

std::string CudaError(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

// One launch of DecodeKernel<T, G, kTable>: as many blocks as fit on the GPU at once (a table's
// blocks are bounded by its shared memory), fewer for small tensors.
template <typename T, int G, bool kTable>
cudaError_t Run(const Args& a, Pair<T>* out, size_t shared_bytes, int sms, cudaStream_t stream) {
  const auto kernel = &DecodeKernel<T, G, kTable>;
  const int threads = kTable ? kTableThreads : kDirectThreads;
  cudaError_t e = cudaSuccess;
  if (shared_bytes > kDefaultSharedBytes) {
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes));
  }
  int per_sm = 0;
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared_bytes);
  if (e != cudaSuccess) return e;
  const uint64_t wanted = (a.whole_pairs / G + threads - 1) / threads;  // the tail needs < G threads of block 0
  const uint64_t resident = uint64_t(sms) * std::max(per_sm, 1);
  const unsigned grid = static_cast<unsigned>(std::max<uint64_t>(1, std::min(wanted, resident)));
  kernel<<<grid, threads, shared_bytes, stream>>>(a, out);
  return cudaGetLastError();
}

template <typename T>
std::string LaunchTyped(const Args& a, void* out, cudaStream_t stream, Mode mode) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  int sms = 0;
  int shared_optin = 0;
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&shared_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e != cudaSuccess) return CudaError("querying the device", e);
  const uint64_t pairs = a.whole_pairs + (a.num_elements & 1);
  const size_t table_bytes = size_t{a.entries} * sizeof(Pair<T>);
  // Static shared memory: the scale table, plus slack for the runtime's own reservation.
  const size_t table_limit = static_cast<size_t>(shared_optin) - 1024;
  if (mode == Mode::kTable && table_bytes > table_limit) mode = Mode::kDirect;
  if (mode == Mode::kAuto) {
    // The table costs each block `entries` decodes: worth it when every block's share of the
    // tensor is several times larger. Otherwise the direct arithmetic is as fast.
    const uint64_t blocks = uint64_t(sms) * 2;
    mode = table_bytes <= table_limit && pairs >= 8 * uint64_t{a.entries} * blocks ? Mode::kTable : Mode::kDirect;
  }
  Pair<T>* pairs_out = static_cast<Pair<T>*>(out);
  constexpr int kWide = 16 / sizeof(Pair<T>);  // pairs per 16-byte store
  const bool wide = (reinterpret_cast<uintptr_t>(out) & 15) == 0;
  if (mode == Mode::kTable) {
    e = wide ? Run<T, kWide, true>(a, pairs_out, table_bytes, sms, stream)
             : Run<T, 1, true>(a, pairs_out, table_bytes, sms, stream);
  } else {
    e = wide ? Run<T, kWide, false>(a, pairs_out, 0, sms, stream) : Run<T, 1, false>(a, pairs_out, 0, sms, stream);
  }
  return e == cudaSuccess ? "" : CudaError("launching the DecodeWeights kernel", e);
}

}  // namespace

bool NeedsRangeCheck(const WindingParams& p) {
  return uint64_t{p.codebook_size} < (uint64_t{1} << p.bits);
}

std::string Launch(const WindingParams& p, const uint8_t* seed, void* out, uint32_t* flag, void* raw_stream,
                   Mode mode) {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  if (flag != nullptr) {
    const cudaError_t e = cudaMemsetAsync(flag, 0, sizeof(uint32_t), stream);
    if (e != cudaSuccess) return CudaError("clearing the range flag", e);
  }
  if (p.num_elements == 0) return "";
  Args a;
  std::memset(&a, 0, sizeof a);
  a.seed = seed;
  a.seed_bytes = p.seed_bytes;
  a.whole_pairs = p.num_elements / 2;
  a.num_elements = p.num_elements;
  a.bits = p.bits;
  a.mask = p.bits >= 32 ? ~0u : (uint32_t{1} << p.bits) - 1;
  a.points = p.points;
  a.m = p.m;
  a.codebook_size = p.codebook_size;
  a.entries = static_cast<uint32_t>(std::min<uint64_t>(p.codebook_size, uint64_t{1} << p.bits));
  a.rings = p.rings;
  a.aligned = (reinterpret_cast<uintptr_t>(seed) & 3) == 0;
  a.dtype = p.dtype;
  a.by_points1 = MakeFastDiv(p.points + 1);
  a.by_m = MakeFastDiv(p.m);
  a.cx = p.center[0];
  a.cy = p.center[1];
  a.step = p.step;
  a.offset = p.offset;
  for (uint32_t k = 0; k <= p.rings; ++k) a.scales[k] = p.scales[k];
  a.flag = flag;
  return p.dtype == kFloat32 ? LaunchTyped<uint32_t>(a, out, stream, mode) : LaunchTyped<uint16_t>(a, out, stream, mode);
}

std::string ReadFlag(const uint32_t* flag, void* raw_stream, bool* bad) {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  uint32_t host = 0;
  cudaError_t e = cudaMemcpyAsync(&host, flag, sizeof host, cudaMemcpyDeviceToHost, stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  if (e != cudaSuccess) return CudaError("reading the range flag", e);
  *bad = host != 0;
  return "";
}

}  // namespace hyperonnx::cuda

#if !defined(__CUDA_ARCH__)  // host code only: the format header's validation is host-only
namespace {

int Report(char* message, uint64_t size, int code, const std::string& text) {
  if (message != nullptr && size > 0) {
    const size_t n = std::min<size_t>(text.size(), size - 1);
    std::memcpy(message, text.data(), n);
    message[n] = '\0';
  }
  return code;
}

}  // namespace

// Decodes one tensor on the GPU, for tests and benchmarks (ctypes with torch / CuPy device
// tensors). `seed` and `output` are device pointers (output aligned to two elements), the
// attributes plain host values as FORMAT.md §2 names them, `stream` a cudaStream_t (null: the
// legacy default stream). Validation is the CPU kernel's (ValidateWinding, ValidateSeed).
// `device_flag`: null to have the call check rule 5 itself (it waits for the stream), or one
// device uint32 that the call zeroes and the kernel sets when an index is out of range; the
// caller must then read it before using the output (the call does not wait).
// `mode`: 0 auto, 1 direct arithmetic, 2 shared-memory table (same bits).
// Returns 0, 1 (the seed or attributes break FORMAT.md §5; the rule is in `message`),
// 2 (a CUDA error) or 3 (a bad argument: null or misaligned pointer, unknown mode).
extern "C" __attribute__((visibility("default"))) int hyperonnx_cuda_decode(
    const void* seed, uint64_t seed_bytes, const int64_t* shape, uint64_t rank, int64_t dtype, int64_t bits,
    int64_t points, int64_t rings, const float* center, uint64_t center_count, float side,
    const float* ring_scales, uint64_t ring_scales_count, void* output, void* stream, int mode,
    uint32_t* device_flag, char* message, uint64_t message_size) {
  using namespace hyperonnx;
  try {
    if ((rank > 0 && shape == nullptr) || (center_count > 0 && center == nullptr) ||
        (ring_scales_count > 0 && ring_scales == nullptr) || mode < 0 || mode > 2) {
      return Report(message, message_size, 3, "bad argument: null array or unknown mode");
    }
    WindingAttributes attrs;
    attrs.codec = kCodecWinding;
    attrs.shape.assign(shape, shape + rank);
    attrs.dtype = dtype;
    attrs.bits = bits;
    attrs.points = points;
    attrs.rings = rings;
    attrs.center.assign(center, center + center_count);
    attrs.side = side;
    attrs.ring_scales.assign(ring_scales, ring_scales + ring_scales_count);
    WindingParams params;
    std::string error = ValidateWinding(attrs, &params);
    const int64_t dims[1] = {static_cast<int64_t>(seed_bytes)};
    if (error.empty()) error = ValidateSeed(params, 1, dims);
    if (!error.empty()) return Report(message, message_size, 1, error + " (docs/FORMAT.md section 5)");
    if (params.num_elements == 0) return Report(message, message_size, 0, "");
    const uintptr_t align = params.dtype == kFloat32 ? 8 : 4;
    if (seed == nullptr || output == nullptr || (reinterpret_cast<uintptr_t>(output) % align) != 0) {
      return Report(message, message_size, 3, "bad argument: null seed/output or output not aligned to 2 elements");
    }
    uint32_t* flag = device_flag;
    bool own_flag = false;
    if (flag == nullptr && cuda::NeedsRangeCheck(params)) {
      const cudaError_t e = cudaMallocAsync(reinterpret_cast<void**>(&flag), sizeof(uint32_t),
                                            static_cast<cudaStream_t>(stream));
      if (e != cudaSuccess) return Report(message, message_size, 2, cuda::CudaError("allocating the range flag", e));
      own_flag = true;
    }
    error = cuda::Launch(params, static_cast<const uint8_t*>(seed), output, flag, stream,
                         static_cast<cuda::Mode>(mode));
    bool bad = false;
    if (error.empty() && own_flag) error = cuda::ReadFlag(flag, stream, &bad);
    if (own_flag) cudaFreeAsync(flag, static_cast<cudaStream_t>(stream));
    if (!error.empty()) return Report(message, message_size, 2, error);
    if (bad) {
      return Report(message, message_size, 1,
                    "rule 5: a seed index is >= (points + 1) * (rings + 1) = " +
                        std::to_string(params.codebook_size) + " (docs/FORMAT.md section 5)");
    }
    return Report(message, message_size, 0, "");
  } catch (const std::exception& e) {
    return Report(message, message_size, 2, e.what());
  }
}
#endif  // !__CUDA_ARCH__
