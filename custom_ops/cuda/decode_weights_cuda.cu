// DecodeWeights, CUDA kernels (docs/FORMAT.md). Bit-identical to the CPU kernel and hyperonnx.decode.
//
// One grid-stride loop (DecodePairs) serves both codecs: each thread decodes G consecutive pairs
// per step (G = 2 for float32, 4 for 16-bit outputs: one 16-byte store; G = 1 when the output is
// not 16-byte aligned), so a warp reads 32*G consecutive packed indices (two aligned 32-bit loads
// and a funnel shift per index, the G loads independent) and writes 512 contiguous bytes.
//
// Winding (§3), two ways to turn an index into its pair, same bits:
//   - table: each block decodes the reachable codebook, min((n+1)(C+1), 2^b) entries, already in
//     the output type, into shared memory; the loop is unpack, one shared load, one store;
//   - direct: the FORMAT.md §3 arithmetic per pair, with the integer divisions done by
//     multiply-high (FastDiv, exact for the 24-bit indices).
// Indices >= (n+1)(C+1) are clamped to 0 (no out-of-bounds read) and set a device flag the host
// reads before it returns the output (rule 5).
// Lattice (§7): the shared header's LatticeRow and LatticeCoordinate (or a shared-memory table of
// the coordinates), the group scale found by a 64-bit multiply-high (or a shared-memory table of it). Steps
// N = 2^b - 1 (rule 7) are clamped to 0 and NaN / Inf scales (rule 6) noted, both in the flag.
// Float arithmetic: __fmul_rn / __fadd_rn (never contracted into an FMA) in FORMAT.md's order; the
// file is also compiled with -fmad=false.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "decode_device.cuh"
#include "decode_weights_cuda.h"

namespace hyperonnx::cuda {
namespace {

constexpr int kDirectThreads = 256;
constexpr int kTableThreads = 512;
constexpr size_t kDefaultSharedBytes = 48 * 1024;  // dynamic shared memory without opting in

// Conversion to the output's bits. float16: the hardware's round-to-nearest-even conversion
// (overflow to Inf, subnormals kept: what FloatToHalf does for every finite and infinite value).
// bfloat16: the hardware's on sm_80+, the shared header's FloatToBFloat16 before. NaN is the one
// value whose bits could differ from the CPU's (0 * Inf is 0x7fffffff here, 0xffc00000 on x86):
// valid attributes never make one (winding: finite centre, side and scales; lattice: the bounds

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

__device__ __forceinline__ void LoadScales(const WindingArgs& a, float* scales) {
  for (uint32_t t = threadIdx.x; t <= a.rings; t += blockDim.x) scales[t] = a.scales[t];
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

// The loop of every kernel: pair i becomes decode(i, its index). Each thread takes G consecutive
// pairs per step: G independent index loads in flight, then one wide store. The last pair of an
// odd tensor writes its first value only.
template <typename T, int G, typename Decode>
__device__ __forceinline__ void DecodePairs(const Stream& s, uint64_t num_elements, Pair<T>* out, const Decode& decode) {
  const uint64_t whole_pairs = num_elements / 2;
  const uint64_t stride = uint64_t{gridDim.x} * blockDim.x;
  const uint64_t start = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const uint64_t groups = whole_pairs / G;
  for (uint64_t g = start; g < groups; g += stride) {
    uint32_t x[G];
#pragma unroll
    for (int k = 0; k < G; ++k) x[k] = LoadIndex(s, g * G + k);
    Group<T, G> v;
#pragma unroll
    for (int k = 0; k < G; ++k) v.pairs[k] = decode(g * G + k, x[k]);
    reinterpret_cast<Group<T, G>*>(out)[g] = v;
  }
  const uint64_t rest = groups * G + start;  // the last whole_pairs % G pairs, one per thread
  if (rest < whole_pairs) out[rest] = decode(rest, LoadIndex(s, rest));
  if (start == 0 && (num_elements & 1)) {
    reinterpret_cast<T*>(out)[num_elements - 1] = decode(whole_pairs, LoadIndex(s, whole_pairs)).first;
  }
}

// Winding (FORMAT.md §3); kTable selects how an index becomes its pair.
template <typename T, int G, bool kTable>
__global__ void __launch_bounds__(kTable ? kTableThreads : kDirectThreads) WindingKernel(WindingArgs a, Pair<T>* out) {
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
  const auto decode = [&](uint64_t, uint32_t x) {
    const bool ok = x < a.codebook_size;  // in range implies x < entries (x < 2^bits)
    bad |= !ok;
    x = ok ? x : 0u;
    if (kTable) return table[x];
    float f, s;
    DecodePair(a, scales, x, &f, &s);
    return Pair<T>{Encode<T>(a.dtype, f), Encode<T>(a.dtype, s)};
  };
  DecodePairs<T, G>(a.s, a.num_elements, out, decode);
  if (bad && a.flag != nullptr) atomicOr(a.flag, kFlagBadIndex);
}



// Lattice (FORMAT.md §7.3) with the shared header's operations. kTable: each block first
// tabulates v(m) for m < N in shared memory (FORMAT.md allows it: the same operations, the same
// bits); otherwise every value runs the arithmetic. A step N (all ones, rule 7) decodes as step 0,
// a NaN / Inf scale (rule 6) decodes as it is; each sets its bit of the flag.
template <typename T, int G, bool kTable>
__global__ void __launch_bounds__(kDirectThreads) LatticeKernel(LatticeArgs a, Pair<T>* out) {
  extern __shared__ __align__(16) unsigned char shared[];
  float* table = reinterpret_cast<float*>(shared);
  if (kTable) {
    for (uint32_t m = threadIdx.x; m < a.p.points; m += blockDim.x) table[m] = LatticeCoordinate(a.p, m);
    __syncthreads();
  }
  uint32_t bad = 0;
  const auto coordinate = [&](uint32_t m) { return kTable ? table[m] : LatticeCoordinate(a.p, m); };
  const auto decode = [&](uint64_t i, uint32_t j) {
    const bool ok = j < a.p.points;
    bad |= ok ? 0u : kFlagBadIndex;
    j = ok ? j : 0u;
    const uint16_t h = __ldg(a.scales + Divide(i, a.by_group_pairs));
    bad |= HalfIsFinite(h) ? 0u : kFlagBadScale;
    const float2 v = LatticePair(a.p, j, LatticeScale(a.p, h), coordinate);
    return Pair<T>{Encode<T>(a.p.dtype, v.x), Encode<T>(a.p.dtype, v.y)};
  };
  DecodePairs<T, G>(a.s, a.p.num_elements, out, decode);
  if (bad != 0 && a.flag != nullptr) atomicOr(a.flag, bad);
}

// Trellis (FORMAT.md §9.3) with the shared header's operations, one element per thread (grid
// stride): its window, h, the group's scale. A NaN / Inf scale (rule 6) decodes as it is and sets
// kFlagBadScale; every window is valid.
template <typename T>
__global__ void __launch_bounds__(kDirectThreads) TrellisKernel(TrellisParams p, const uint8_t* seed,
                                                                const uint16_t* scales, T* out, uint32_t* flag) {
  uint32_t bad = 0;
  const uint64_t stride = uint64_t{gridDim.x} * blockDim.x;
  for (uint64_t e = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; e < p.num_elements; e += stride) {
    const uint64_t q = e / p.group;
    const uint32_t t = static_cast<uint32_t>(e - q * p.group);
    const uint16_t h = __ldg(scales + q);
    bad |= HalfIsFinite(h) ? 0u : kFlagBadScale;
    out[e] = Encode<T>(p.dtype, __fmul_rn(TrellisValue(p, TrellisWindow(p, seed, q, t)), TrellisScale(p, h)));
  }
  if (bad != 0 && flag != nullptr) atomicOr(flag, bad);
}

// One launch of a kernel taking G pairs per thread: as many blocks as fit on the GPU at once (a
// table's blocks are bounded by its shared memory), fewer for small tensors.
template <int G, typename A, typename T>
cudaError_t Run(void (*kernel)(A, Pair<T>*), int threads, const A& a, uint64_t num_elements, Pair<T>* out,
                size_t shared_bytes, int sms, cudaStream_t stream) {
  cudaError_t e = cudaSuccess;
  if (shared_bytes > kDefaultSharedBytes) {
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes));
  }
  int per_sm = 0;
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared_bytes);
  if (e != cudaSuccess) return e;
  const uint64_t wanted = (num_elements / 2 / G + threads - 1) / threads;  // the tail needs < G threads of block 0
  const uint64_t resident = uint64_t(sms) * std::max(per_sm, 1);
  const unsigned grid = static_cast<unsigned>(std::max<uint64_t>(1, std::min(wanted, resident)));
  kernel<<<grid, threads, shared_bytes, stream>>>(a, out);
  return cudaGetLastError();
}

constexpr const char* kLaunchError = "launching the DecodeWeights kernel";

template <typename T>
std::string LaunchWinding(const WindingArgs& a, void* out, cudaStream_t stream, Mode mode) {
  DeviceLimits limits;
  cudaError_t e = QueryDevice(&limits);
  if (e != cudaSuccess) return CudaError("querying the device", e);
  const uint64_t pairs = a.whole_pairs + (a.num_elements & 1);
  const size_t table_bytes = size_t{a.entries} * sizeof(Pair<T>);
  if (mode == Mode::kTable && table_bytes > limits.table_limit) mode = Mode::kDirect;
  if (mode == Mode::kAuto) {
    // The table costs each block `entries` decodes: worth it when every block's share of the
    // tensor is several times larger. Otherwise the direct arithmetic is as fast.
    const uint64_t blocks = uint64_t(limits.sms) * 2;
    mode = table_bytes <= limits.table_limit && pairs >= 8 * uint64_t{a.entries} * blocks ? Mode::kTable
                                                                                            : Mode::kDirect;
  }
  Pair<T>* pairs_out = static_cast<Pair<T>*>(out);
  constexpr int kWide = 16 / sizeof(Pair<T>);  // pairs per 16-byte store
  const bool wide = (reinterpret_cast<uintptr_t>(out) & 15) == 0;
  const int sms = limits.sms;
  const uint64_t n = a.num_elements;
  if (mode == Mode::kTable) {
    e = wide ? Run<kWide>(&WindingKernel<T, kWide, true>, kTableThreads, a, n, pairs_out, table_bytes, sms, stream)
             : Run<1>(&WindingKernel<T, 1, true>, kTableThreads, a, n, pairs_out, table_bytes, sms, stream);
  } else {
    e = wide ? Run<kWide>(&WindingKernel<T, kWide, false>, kDirectThreads, a, n, pairs_out, 0, sms, stream)
             : Run<1>(&WindingKernel<T, 1, false>, kDirectThreads, a, n, pairs_out, 0, sms, stream);
  }
  return e == cudaSuccess ? "" : CudaError(kLaunchError, e);
}

template <typename T>
std::string LaunchLattice(const LatticeArgs& a, void* out, cudaStream_t stream, Mode mode) {
  DeviceLimits limits;
  cudaError_t e = QueryDevice(&limits);
  if (e != cudaSuccess) return CudaError("querying the device", e);
  const size_t table_bytes = size_t{a.p.points} * sizeof(float);
  // Direct unless asked: the arithmetic is a few float operations per value (see bench cuda).
  if (mode != Mode::kTable || table_bytes > limits.table_limit) mode = Mode::kDirect;
  Pair<T>* pairs_out = static_cast<Pair<T>*>(out);
  constexpr int kWide = 16 / sizeof(Pair<T>);
  const bool wide = (reinterpret_cast<uintptr_t>(out) & 15) == 0;
  const int sms = limits.sms;
  const uint64_t n = a.p.num_elements;
  if (mode == Mode::kTable) {
    e = wide ? Run<kWide>(&LatticeKernel<T, kWide, true>, kDirectThreads, a, n, pairs_out, table_bytes, sms, stream)
             : Run<1>(&LatticeKernel<T, 1, true>, kDirectThreads, a, n, pairs_out, table_bytes, sms, stream);
  } else {
    e = wide ? Run<kWide>(&LatticeKernel<T, kWide, false>, kDirectThreads, a, n, pairs_out, 0, sms, stream)
             : Run<1>(&LatticeKernel<T, 1, false>, kDirectThreads, a, n, pairs_out, 0, sms, stream);
  }
  return e == cudaSuccess ? "" : CudaError(kLaunchError, e);
}

template <typename T>
std::string LaunchTrellis(const TrellisParams& p, const uint8_t* seed, const uint16_t* scales, void* out,
                          uint32_t* flag, cudaStream_t stream) {
  DeviceLimits limits;
  cudaError_t e = QueryDevice(&limits);
  if (e != cudaSuccess) return CudaError("querying the device", e);
  const uint64_t wanted = (p.num_elements + kDirectThreads - 1) / kDirectThreads;
  const unsigned grid = static_cast<unsigned>(std::max<uint64_t>(1, std::min<uint64_t>(wanted, uint64_t(limits.sms) * 8)));
  TrellisKernel<T><<<grid, kDirectThreads, 0, stream>>>(p, seed, scales, static_cast<T*>(out), flag);
  e = cudaGetLastError();
  return e == cudaSuccess ? "" : CudaError(kLaunchError, e);
}

cudaError_t ClearFlag(uint32_t* flag, cudaStream_t stream) {
  return flag == nullptr ? cudaSuccess : cudaMemsetAsync(flag, 0, sizeof(uint32_t), stream);
}

}  // namespace

bool NeedsRangeCheck(const WindingParams& p) {
  return uint64_t{p.codebook_size} < (uint64_t{1} << p.bits);
}

std::string Launch(const WindingParams& p, const uint8_t* seed, void* out, uint32_t* flag, void* raw_stream,
                   Mode mode) {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  const cudaError_t e = ClearFlag(flag, stream);
  if (e != cudaSuccess) return CudaError("clearing the range flag", e);
  if (p.num_elements == 0) return "";
  const WindingArgs a = MakeWindingArgs(p, seed, flag);
  return p.dtype == kFloat32 ? LaunchWinding<uint32_t>(a, out, stream, mode) : LaunchWinding<uint16_t>(a, out, stream, mode);
}

std::string Launch(const LatticeParams& p, const uint8_t* seed, const uint16_t* scales, void* out, uint32_t* flag,
                   void* raw_stream, Mode mode) {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  const cudaError_t e = ClearFlag(flag, stream);
  if (e != cudaSuccess) return CudaError("clearing the range flag", e);
  if (p.num_elements == 0) return "";
  const LatticeArgs a = MakeLatticeArgs(p, seed, scales, flag);
  return p.dtype == kFloat32 ? LaunchLattice<uint32_t>(a, out, stream, mode) : LaunchLattice<uint16_t>(a, out, stream, mode);
}

std::string Launch(const TrellisParams& p, const uint8_t* seed, const uint16_t* scales, void* out, uint32_t* flag,
                   void* raw_stream) {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  const cudaError_t e = ClearFlag(flag, stream);
  if (e != cudaSuccess) return CudaError("clearing the range flag", e);
  if (p.num_elements == 0) return "";
  return p.dtype == kFloat32 ? LaunchTrellis<uint32_t>(p, seed, scales, out, flag, stream)
                             : LaunchTrellis<uint16_t>(p, seed, scales, out, flag, stream);
}

std::string ReadFlag(const uint32_t* flag, void* raw_stream, uint32_t* value) {
  cudaStream_t stream = static_cast<cudaStream_t>(raw_stream);
  uint32_t host = 0;
  cudaError_t e = cudaMemcpyAsync(&host, flag, sizeof host, cudaMemcpyDeviceToHost, stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  if (e != cudaSuccess) return CudaError("reading the range flag", e);
  *value = host;
  return "";
}

}  // namespace hyperonnx::cuda

#if !defined(__CUDA_ARCH__)  // host code only: the format header's validation is host-only
int hyperonnx::cuda::Report(char* message, uint64_t size, int code, const std::string& text) {
  if (message != nullptr && size > 0) {
    const size_t n = std::min<size_t>(text.size(), size - 1);
    std::memcpy(message, text.data(), n);
    message[n] = '\0';
  }
  return code;
}

namespace {
using hyperonnx::cuda::Report;

// The end of both entry points: `launch(flag)` decodes. With a caller's `device_flag` the call
// does not wait; without one, when the run-time rules need checking (`check`), the call allocates
// a flag, waits for the stream and reports `refusal(flag value)` when a rule was broken.
template <typename LaunchFn, typename RefusalFn>
int LaunchChecked(bool check, uint32_t* device_flag, void* stream, const LaunchFn& launch, const RefusalFn& refusal,
                  char* message, uint64_t message_size) {
  using namespace hyperonnx;
  uint32_t* flag = device_flag;
  const bool own_flag = flag == nullptr && check;
  if (own_flag) {
    const cudaError_t e = cudaMallocAsync(reinterpret_cast<void**>(&flag), sizeof(uint32_t),
                                          static_cast<cudaStream_t>(stream));
    if (e != cudaSuccess) return Report(message, message_size, 2, cuda::CudaError("allocating the range flag", e));
  }
  std::string error = launch(flag);
  uint32_t value = 0;
  if (error.empty() && own_flag) error = cuda::ReadFlag(flag, stream, &value);
  if (own_flag) cudaFreeAsync(flag, static_cast<cudaStream_t>(stream));
  if (!error.empty()) return Report(message, message_size, 2, error);
  if (value != 0) return Report(message, message_size, 1, refusal(value));
  return Report(message, message_size, 0, "");
}

}  // namespace

// The entry points decode one tensor on the GPU, for tests and benchmarks (ctypes with torch /
// CuPy device tensors). `seed`, `scales` and `output` are device pointers (output aligned to two
// elements), the attributes plain host values as FORMAT.md names them, `stream` a cudaStream_t
// (null: the legacy default stream). Validation is the CPU kernel's (the shared header's).
// `device_flag`: null to have the call check the run-time rules itself (it waits for the stream),
// or one device uint32 that the call zeroes and the kernel sets (cuda::kFlagBadIndex,
// kFlagBadScale) when a rule is broken; the caller must then read it before using the output
// (the call does not wait). `mode`: 0 auto, 1 direct arithmetic, 2 shared-memory table (same bits).
// Returns 0, 1 (the seed, scales or attributes break FORMAT.md; the rule is in `message`),
// 2 (a CUDA error) or 3 (a bad argument: null or misaligned pointer, unknown mode).

// Codec winding (FORMAT.md §3).
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
    const WindingAttributes attrs{kCodecWinding, {shape, shape + rank}, dtype, bits, points, rings,
                                  {center, center + center_count}, side, {ring_scales, ring_scales + ring_scales_count}};
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
    return LaunchChecked(
        cuda::NeedsRangeCheck(params), device_flag, stream,
        [&](uint32_t* flag) {
          return cuda::Launch(params, static_cast<const uint8_t*>(seed), output, flag, stream,
                              static_cast<cuda::Mode>(mode));
        },
        [&](uint32_t) {
          return "rule 5: a seed index is >= (points + 1) * (rings + 1) = " + std::to_string(params.codebook_size) +
                 " (docs/FORMAT.md section 5)";
        },
        message, message_size);
  } catch (const std::exception& e) {
    return Report(message, message_size, 2, e.what());
  }
}

// Codec lattice (FORMAT.md §7): `scales` holds `scales_count` float16 values (2-byte aligned).
extern "C" __attribute__((visibility("default"))) int hyperonnx_cuda_decode_lattice(
    const void* seed, uint64_t seed_bytes, const void* scales, uint64_t scales_count, const int64_t* shape,
    uint64_t rank, int64_t dtype, int64_t bits, int64_t generator, int64_t group, float alpha, float beta,
    float scale_unit, void* output, void* stream, int mode, uint32_t* device_flag, char* message,
    uint64_t message_size) {
  using namespace hyperonnx;
  try {
    if ((rank > 0 && shape == nullptr) || mode < 0 || mode > 2) {
      return Report(message, message_size, 3, "bad argument: null array or unknown mode");
    }
    const LatticeAttributes attrs{kCodecLattice, {shape, shape + rank}, dtype, bits, generator, group, alpha, beta,
                                  scale_unit};
    LatticeParams params;
    std::string error = ValidateLattice(attrs, &params);
    const int64_t seed_dims[1] = {static_cast<int64_t>(seed_bytes)};
    const int64_t scale_dims[1] = {static_cast<int64_t>(scales_count)};
    if (error.empty()) error = ValidateSeed(params, 1, seed_dims);
    if (error.empty()) error = ValidateScalesShape(params, 1, scale_dims);
    if (!error.empty()) return Report(message, message_size, 1, error + " (docs/FORMAT.md sections 5, 7.4)");
    if (params.num_elements == 0) return Report(message, message_size, 0, "");
    const uintptr_t align = params.dtype == kFloat32 ? 8 : 4;
    if (seed == nullptr || scales == nullptr || output == nullptr ||
        (reinterpret_cast<uintptr_t>(output) % align) != 0 || (reinterpret_cast<uintptr_t>(scales) % 2) != 0) {
      return Report(message, message_size, 3,
                    "bad argument: null seed/scales/output, output not aligned to 2 elements or scales to 2 bytes");
    }
    return LaunchChecked(
        true, device_flag, stream,
        [&](uint32_t* flag) {
          return cuda::Launch(params, static_cast<const uint8_t*>(seed), static_cast<const uint16_t*>(scales), output,
                              flag, stream, static_cast<cuda::Mode>(mode));
        },
        [&](uint32_t value) {
          // The CPU kernel's messages; rule 6 first, as a decoder checks it before reading the seed.
          return ((value & cuda::kFlagBadScale) ? std::string("rule 6: a scale is Inf or NaN")
                                                : "rule 7: a seed step is >= 2^bits - 1 = " + std::to_string(params.points)) +
                 " (docs/FORMAT.md section 7.4)";
        },
        message, message_size);
  } catch (const std::exception& e) {
    return Report(message, message_size, 2, e.what());
  }
}

// Codec trellis (FORMAT.md §9): `scales` holds `scales_count` float16 values (2-byte aligned);
// no `mode` (one kernel).
extern "C" __attribute__((visibility("default"))) int hyperonnx_cuda_decode_trellis(
    const void* seed, uint64_t seed_bytes, const void* scales, uint64_t scales_count, const int64_t* shape,
    uint64_t rank, int64_t dtype, int64_t bits, int64_t window, int64_t group, float scale_unit, void* output,
    void* stream, uint32_t* device_flag, char* message, uint64_t message_size) {
  using namespace hyperonnx;
  try {
    if (rank > 0 && shape == nullptr) return Report(message, message_size, 3, "bad argument: null shape");
    const TrellisAttributes attrs{kCodecTrellis, {shape, shape + rank}, dtype, bits, window, group, scale_unit};
    TrellisParams params;
    std::string error = ValidateTrellis(attrs, &params);
    const int64_t seed_dims[1] = {static_cast<int64_t>(seed_bytes)};
    const int64_t scale_dims[1] = {static_cast<int64_t>(scales_count)};
    if (error.empty()) error = ValidateSeed(params, 1, seed_dims);
    if (error.empty()) error = ValidateScalesShape(params, 1, scale_dims);
    if (!error.empty()) return Report(message, message_size, 1, error + " (docs/FORMAT.md sections 5, 9.4)");
    if (params.num_elements == 0) return Report(message, message_size, 0, "");
    const uintptr_t align = params.dtype == kFloat32 ? 4 : 2;
    if (seed == nullptr || scales == nullptr || output == nullptr ||
        (reinterpret_cast<uintptr_t>(output) % align) != 0 || (reinterpret_cast<uintptr_t>(scales) % 2) != 0) {
      return Report(message, message_size, 3, "bad argument: null seed/scales/output or misaligned output/scales");
    }
    return LaunchChecked(
        true, device_flag, stream,
        [&](uint32_t* flag) {
          return cuda::Launch(params, static_cast<const uint8_t*>(seed), static_cast<const uint16_t*>(scales), output,
                              flag, stream);
        },
        [&](uint32_t) { return std::string("rule 6: a scale is Inf or NaN (docs/FORMAT.md section 9.4)"); },
        message, message_size);
  } catch (const std::exception& e) {
    return Report(message, message_size, 2, e.what());
  }
}
#endif  // !__CUDA_ARCH__
