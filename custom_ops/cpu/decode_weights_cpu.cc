// DecodeWeights, CPU kernel (docs/FORMAT.md). Bit-identical to hyperonnx.decode.
//
// The decoded value of a pair depends only on its index, so a kernel materialises the codebook
// once, already converted to the output type, with the exact §3 arithmetic (DecodeIndex), and the
// hot loop is a bit-unpack plus one table load and one store per pair. Indices are clamped into
// the table (a branch-free select) and any out-of-range index fails the run (rule 5) after the
// loop. A codebook too large for a table is decoded pair by pair with the same DecodeIndex.
// On x86 CPUs with AVX2 the hot loop unpacks 8 indices with a byte shuffle and variable shifts
// and looks them up with gathers (chosen at run time; the scalar loop is the reference and the
// fallback); on aarch64 NEON unpacks them the same way (vqtbl1q_u8, vshlq_u32) and the lookups
// are scalar loads (no gather). All only copy table entries, so their outputs are the same bits.
#include "decode_weights_cpu.h"

#include "lattice_cpu.h"
#include "trellis_cpu.h"
#include "neon.h"
#include "pair_tasks.h"
#include "unpack_avx2.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef HYPERONNX_AVX2
#include <immintrin.h>
#endif

namespace hyperonnx {
OrtStatusPtr FailNode(const char* op, const std::string& node, const std::string& message) {
  const std::string text = std::string(op) + " node '" + Printable(node) + "': " + message + " (docs/FORMAT.md)";
  return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, text.c_str());
}

namespace {

constexpr uint64_t kMaxTableEntries = uint64_t{1} << 20;  // 8 MiB of float32 pairs at most

template <typename T>
struct Pair {
  T first, second;
};

uint16_t ConvertTo(int64_t dtype, float f) {
  return dtype == kFloat16 ? FloatToHalf(f) : FloatToBFloat16(f);
}

// Unpacks pairs [begin, end) through the table; pair i lands at out[i - base]. `begin` is a
// multiple of 8, so each group of 8 indices starts on a byte boundary: group g's bytes are
// [g * B, g * B + B). Returns true when an index was out of range (the output of that pair is
// then table[0]).
template <int B, typename T>
bool UnpackWithTable(const uint8_t* seed, uint64_t seed_bytes, const Pair<T>* table, uint32_t entries,
                     Pair<T>* out, uint64_t base, uint64_t begin, uint64_t end) {
  constexpr uint32_t kMask = (uint32_t{1} << B) - 1;
  uint32_t bad = 0;
  uint64_t i = begin;
  // Whole groups whose 32-bit windows stay inside the seed: the last window of a group starts at
  // byte (7B)/8 and reads 4 bytes, below g*B + B + 4.
  for (; i + 8 <= end && (i / 8) * B + B + 4 <= seed_bytes; i += 8) {
    const uint8_t* group = seed + (i / 8) * B;
    for (int k = 0; k < 8; ++k) {
      uint32_t window;
      std::memcpy(&window, group + (k * B) / 8, 4);  // little-endian hosts only (checked in CMake)
      uint32_t x = (window >> ((k * B) % 8)) & kMask;
      const uint32_t ok = x < entries;
      bad |= ok ^ 1u;
      x = ok ? x : 0;
      out[i + k - base] = table[x];
    }
  }
  for (; i < end; ++i) {  // the tail: byte-wise reads that stop at the seed's end
    uint32_t x = ReadIndex(seed, seed_bytes, i, B);
    const uint32_t ok = x < entries;
    bad |= ok ^ 1u;
    x = ok ? x : 0;
    out[i - base] = table[x];
  }
  return bad != 0;
}

#ifdef HYPERONNX_AVX2
template <typename T>
__attribute__((target("avx2"))) inline void GatherPairs(const Pair<T>* table, __m256i x, Pair<T>* out);

template <>
__attribute__((target("avx2"))) inline void GatherPairs<uint16_t>(const Pair<uint16_t>* table, __m256i x,
                                                                 Pair<uint16_t>* out) {
  const __m256i pairs = _mm256_i32gather_epi32(reinterpret_cast<const int*>(table), x, 4);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), pairs);
}

template <>
__attribute__((target("avx2"))) inline void GatherPairs<uint32_t>(const Pair<uint32_t>* table, __m256i x,
                                                                 Pair<uint32_t>* out) {
  const auto* base = reinterpret_cast<const long long*>(table);
  const __m256i low = _mm256_i32gather_epi64(base, _mm256_castsi256_si128(x), 8);
  const __m256i high = _mm256_i32gather_epi64(base, _mm256_extracti128_si256(x, 1), 8);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), low);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 4), high);
}

// UnpackWithTable with AVX2, same contract. Indices are clamped to the table before the gather;
// the largest one seen decides rule 5. Groups whose loads would pass the seed's end, and the
// pairs after the last whole group, go to the scalar loop.
template <int B, typename T>
__attribute__((target("avx2"))) bool UnpackWithTableAvx2(const uint8_t* seed, uint64_t seed_bytes,
                                                         const Pair<T>* table, uint32_t entries, Pair<T>* out,
                                                         uint64_t base, uint64_t begin, uint64_t end) {
  const Unpack8Avx2<B> unpack;
  const __m256i last = _mm256_set1_epi32(static_cast<int>(entries - 1));
  __m256i largest = _mm256_setzero_si256();
  uint64_t i = begin;
  for (; i + 8 <= end && (i / 8) * B + Unpack8Avx2<B>::kReach <= seed_bytes; i += 8) {
    const __m256i x = unpack(seed + (i / 8) * B);
    largest = _mm256_max_epu32(largest, x);
    GatherPairs<T>(table, _mm256_min_epu32(x, last), out + (i - base));
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), largest);
  bool bad = *std::max_element(lanes, lanes + 8) >= entries;
  CountVectorPairs(i - begin);
  if (i < end) bad |= UnpackWithTable<B, T>(seed, seed_bytes, table, entries, out, base, i, end);  // i % 8 == 0
  return bad;
}

#endif

#ifdef HYPERONNX_NEON
// UnpackWithTable with NEON, same contract and the same group layout as the AVX2 loop (Unpack8Neon,
// unpack_avx2.h); the clamped indices are looked up with scalar loads (NEON has no gather).
template <int B, typename T>
bool UnpackWithTableNeon(const uint8_t* seed, uint64_t seed_bytes, const Pair<T>* table, uint32_t entries,
                         Pair<T>* out, uint64_t base, uint64_t begin, uint64_t end) {
  const Unpack8Neon<B> unpack;
  const uint32x4_t last = vdupq_n_u32(entries - 1);
  uint32x4_t largest = vdupq_n_u32(0);
  uint64_t i = begin;
  for (; i + 8 <= end && (i / 8) * B + Unpack8Neon<B>::kReach <= seed_bytes; i += 8) {
    uint32x4_t low, high;
    unpack(seed + (i / 8) * B, &low, &high);
    largest = vmaxq_u32(largest, vmaxq_u32(low, high));
    uint32_t x[8];
    vst1q_u32(x, vminq_u32(low, last));
    vst1q_u32(x + 4, vminq_u32(high, last));
    for (int k = 0; k < 8; ++k) out[i + k - base] = table[x[k]];
  }
  bool bad = vmaxvq_u32(largest) >= entries;
  CountVectorPairs(i - begin);
  if (i < end) bad |= UnpackWithTable<B, T>(seed, seed_bytes, table, entries, out, base, i, end);  // i % 8 == 0
  return bad;
}
#endif

std::atomic<uint64_t> vector_pairs{0};
}  // namespace

void CountVectorPairs(uint64_t pairs) {
  if (pairs != 0) vector_pairs.fetch_add(pairs, std::memory_order_relaxed);
}

#ifdef HYPERONNX_AVX2
// HYPERONNX_NO_AVX2=1 forces the scalar loops (tests compare the two; benchmarks time them).
bool HasAvx2() {
  static const bool has = [] {
    const char* off = std::getenv("HYPERONNX_NO_AVX2");
    if (off != nullptr && *off != '\0' && std::strcmp(off, "0") != 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return has;
}

// HYPERONNX_NO_AVX512=1 keeps the AVX2 loops where an AVX-512 one exists.
bool HasAvx512() {
  static const bool has = [] {
    const char* off = std::getenv("HYPERONNX_NO_AVX512");
    if (off != nullptr && *off != '\0' && std::strcmp(off, "0") != 0) return false;
    return HasAvx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  }();
  return has;
}
#endif

namespace {

template <typename T>
using UnpackFn = bool (*)(const uint8_t*, uint64_t, const Pair<T>*, uint32_t, Pair<T>*, uint64_t, uint64_t, uint64_t);

template <typename T, int... Bs>
UnpackFn<T> SelectUnpack(uint32_t bits, std::integer_sequence<int, Bs...>) {
#ifdef HYPERONNX_NEON
  static const UnpackFn<T> kByBits[] = {nullptr, &UnpackWithTableNeon<Bs + 1, T>...};  // always, on aarch64
#else
  static const UnpackFn<T> kByBits[] = {nullptr, &UnpackWithTable<Bs + 1, T>...};
#endif
#ifdef HYPERONNX_AVX2
  static const UnpackFn<T> kAvx2ByBits[] = {nullptr, &UnpackWithTableAvx2<Bs + 1, T>...};
  if (HasAvx2()) return kAvx2ByBits[bits];
#endif
  return kByBits[bits];  // bits is 1..24, validated
}

template <typename T>
UnpackFn<T> GetUnpack(uint32_t bits) {
  return SelectUnpack<T>(bits, std::make_integer_sequence<int, kMaxBits>{});
}

template <typename T>
T Encode(int64_t dtype, float f);
template <>
inline uint32_t Encode<uint32_t>(int64_t, float f) { return FloatBits(f); }
template <>
inline uint16_t Encode<uint16_t>(int64_t dtype, float f) { return ConvertTo(dtype, f); }

// Pairs [begin, end) without a table (pair i at out[i - begin]), or, given one, through it one
// index at a time.
template <typename T>
bool DecodeDirect(const WindingParams& p, const uint8_t* seed, const Pair<T>* table, Pair<T>* out, uint64_t begin,
                  uint64_t end) {
  bool bad = false;
  for (uint64_t i = begin; i < end; ++i) {
    uint32_t x = ReadIndex(seed, p.seed_bytes, i, p.bits);
    if (x >= p.codebook_size) {
      bad = true;
      x = 0;
    }
    if (table != nullptr) {
      out[i - begin] = table[x];  // x < codebook_size and < 2^bits: inside the table
      continue;
    }
    float a, b;
    DecodeIndex(p, x, &a, &b);
    out[i - begin] = Pair<T>{Encode<T>(p.dtype, a), Encode<T>(p.dtype, b)};
  }
  return bad;
}

// The output type's bits per element: uint32_t holds float32, uint16_t float16 / bfloat16.
template <typename T>
std::vector<Pair<T>> BuildTable(const WindingParams& p, uint32_t entries) {
  std::vector<Pair<T>> table(entries);
  for (uint32_t x = 0; x < entries; ++x) {
    float a, b;
    DecodeIndex(p, x, &a, &b);
    table[x] = Pair<T>{Encode<T>(p.dtype, a), Encode<T>(p.dtype, b)};
  }
  return table;
}

OrtStatusPtr Fail(const std::string& node, const std::string& message) { return FailNode(kOpName, node, message); }

template <typename F>
bool Succeeds(F&& read) {
  try {
    read();
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

template <typename R>
bool ReadAttribute(const Ort::ConstKernelInfo& info, const char* name, R* out, std::string* error,
                   const char* type) {
  try {
    if constexpr (std::is_same_v<R, std::vector<int64_t>> || std::is_same_v<R, std::vector<float>>) {
      // onnxruntime reads the list of an attribute of another type as empty instead of failing:
      // refuse a scalar or string (their reads check the type) and a non-empty list of the other
      // kind. An empty list of the other kind is indistinguishable through the API.
      using Other = std::conditional_t<std::is_same_v<typename R::value_type, float>, int64_t, float>;
      if (Succeeds([&] { (void)info.GetAttribute<int64_t>(name); }) ||
          Succeeds([&] { (void)info.GetAttribute<float>(name); }) ||
          Succeeds([&] { (void)info.GetAttribute<std::string>(name); }) ||
          !info.GetAttributes<Other>(name).empty()) {
        *error = std::string("rule 2: attribute ") + name + " is not of type " + type;
        return false;
      }
      *out = info.GetAttributes<typename R::value_type>(name);
    } else {
      *out = info.GetAttribute<R>(name);
    }
    return true;
  } catch (const std::exception& e) {
    *error = std::string("rule 2: attribute ") + name + " is missing or not of type " + type + " (" + e.what() + ")";
    return false;
  }
}

}  // namespace

namespace {

// The winding codec's decode primitive (codec_cpu.h): the codebook materialised in the output
// type when it is small enough (indices are < 2^bits, so entries past it can never be read),
// else pair by pair with DecodeIndex.
template <typename T>
class WindingCpuDecoder final : public PairDecoder {
 public:
  explicit WindingCpuDecoder(const WindingParams& p) : p_(p) {
    const uint64_t reachable = std::min<uint64_t>(p.codebook_size, uint64_t{1} << p.bits);
    // A table pays off when building it costs no more than the pairs it serves.
    if (reachable <= kMaxTableEntries && reachable <= std::max<uint64_t>(p.num_pairs, 4096)) {
      table_ = BuildTable<T>(p, static_cast<uint32_t>(reachable));
      unpack_ = GetUnpack<T>(p.bits);
    }
  }
  bool DecodePairs(const uint8_t* seed, const uint16_t*, uint64_t begin, uint64_t end, void* raw) const override {
    auto* out = static_cast<Pair<T>*>(raw);
    const Pair<T>* table = table_.empty() ? nullptr : table_.data();
    if (table == nullptr) return DecodeDirect<T>(p_, seed, nullptr, out, begin, end);
    // the unpack loops start on a group of 8 pairs (a whole byte at any width)
    const uint64_t aligned = std::min(end, (begin + 7) / 8 * 8);
    bool bad = DecodeDirect<T>(p_, seed, table, out, begin, aligned);
    if (aligned < end) {
      bad |= unpack_(seed, p_.seed_bytes, table, static_cast<uint32_t>(table_.size()), out, begin, aligned, end);
    }
    return bad;
  }
  uint64_t num_elements() const override { return p_.num_elements; }
  int64_t dtype() const override { return p_.dtype; }

 private:
  WindingParams p_;
  std::vector<Pair<T>> table_;
  UnpackFn<T> unpack_ = nullptr;
};

}  // namespace

std::unique_ptr<PairDecoder> MakePairDecoder(const NodeParams& node) {
  if (node.lattice) return std::make_unique<LatticeCpuDecoder>(node.lattice_params);
  if (node.trellis) return std::make_unique<TrellisCpuDecoder>(node.trellis_params);
  if (node.winding.dtype == kFloat32) return std::make_unique<WindingCpuDecoder<uint32_t>>(node.winding);
  return std::make_unique<WindingCpuDecoder<uint16_t>>(node.winding);
}

namespace {

// Rules 2, 4-6 for a codec whose seed comes with float16 group scales (lattice, trellis): both
// inputs present, the seed's shape, the scales' type and shape, every scale finite.
template <typename Params>
std::string ValidateSeedAndScales(const Params& p, uint64_t scale_count, const char* codec,
                                  const std::vector<int64_t>& dims, const Ort::ConstValue& scales) {
  if (!scales) return std::string("rule 2: a ") + codec + " node has two inputs, seed and scales; scales is missing";
  std::string error = ValidateSeed(p, dims.size(), dims.data());
  if (!error.empty()) return error;
  const Ort::TensorTypeAndShapeInfo scales_info = scales.GetTensorTypeAndShapeInfo();
  if (scales_info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) return "rule 6: scales must be a rank-1 float16 tensor";
  const std::vector<int64_t> scale_dims = scales_info.GetShape();
  error = ValidateScalesShape(p, scale_dims.size(), scale_dims.data());
  if (!error.empty()) return error;
  const auto* bits = static_cast<const uint16_t*>(scales.GetTensorRawData());
  for (uint64_t q = 0; q < scale_count; ++q) {
    if (!HalfIsFinite(bits[q])) return "rule 6: scales[" + std::to_string(q) + "] is Inf or NaN";
  }
  return "";
}

}  // namespace

std::string ValidateInputs(const NodeParams& node, const Ort::ConstValue& seed, const Ort::ConstValue& scales) {
  if (!seed) return "rule 4: the seed input is missing";
  const Ort::TensorTypeAndShapeInfo seed_info = seed.GetTensorTypeAndShapeInfo();
  if (seed_info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) return "rule 4: seed must be a rank-1 uint8 tensor";
  const std::vector<int64_t> dims = seed_info.GetShape();
  if (node.trellis) {
    return ValidateSeedAndScales(node.trellis_params, node.trellis_params.num_groups, "trellis", dims, scales);
  }
  if (!node.lattice) {
    if (scales) return "rule 2: a winding node has one input (seed), not scales too";
    return ValidateSeed(node.winding, dims.size(), dims.data());
  }
  return ValidateSeedAndScales(node.lattice_params, node.lattice_params.num_scales, "lattice", dims, scales);
}

std::string IndexRuleError(const NodeParams& node) {
  if (node.lattice) return "rule 7: a seed step is >= 2^bits - 1 = " + std::to_string(node.lattice_params.points);
  return "rule 5: a seed index is >= (points + 1) * (rings + 1) = " + std::to_string(node.winding.codebook_size);
}

bool DecodeTensor(const Ort::KernelContext& context, const PairDecoder& decoder, const uint8_t* seed,
                  const uint16_t* scales, void* out) {
  const uint64_t elements = decoder.num_elements();
  const size_t item = decoder.dtype() == kFloat32 ? 4 : 2;
  auto* bytes = static_cast<uint8_t*>(out);
  // the whole pairs; the last, half pair of an odd tensor below
  bool bad = RunPairTasks(context, elements / 2, [&](uint64_t begin, uint64_t end) {
    return decoder.DecodePairs(seed, scales, begin, end, bytes + 2 * begin * item);
  });
  if (elements % 2) {  // the last pair: its second value is computed and dropped
    uint32_t pair[2];
    bad |= decoder.DecodePairs(seed, scales, elements / 2, elements / 2 + 1, pair);
    std::memcpy(bytes + (elements - 1) * item, pair, item);  // little-endian: the first value's bytes
  }
  return bad;
}

DecodeWeightsCpuKernel::DecodeWeightsCpuKernel(std::string name, NodeParams node)
    : name_(std::move(name)), node_(std::move(node)), decoder_(MakePairDecoder(node_)) {}

DecodeWeightsCpuKernel::~DecodeWeightsCpuKernel() = default;

OrtStatusPtr DecodeWeightsCpuKernel::ComputeV2(OrtKernelContext* raw_context) {
  try {
    Ort::KernelContext context(raw_context);
    Ort::ConstValue seed = context.GetInput(0);
    Ort::ConstValue scales = context.GetInputCount() > 1 ? context.GetInput(1) : Ort::ConstValue{nullptr};
    const std::string error = ValidateInputs(node_, seed, scales);
    if (!error.empty()) return Fail(name_, error);
    Ort::UnownedValue output = context.GetOutput(0, node_.shape.data(), node_.shape.size());
    if (decoder_->num_elements() == 0) return nullptr;
    const auto* scale_bits = scales ? static_cast<const uint16_t*>(scales.GetTensorRawData()) : nullptr;
    if (DecodeTensor(context, *decoder_, seed.GetTensorData<uint8_t>(), scale_bits, output.GetTensorMutableRawData())) {
      return Fail(name_, IndexRuleError(node_));
    }
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
  }
}

// Whether the node has an attribute `name` of any type (an empty list cannot be seen).
static bool HasAttribute(const Ort::ConstKernelInfo& info, const char* name) {
  return Succeeds([&] { (void)info.GetAttribute<int64_t>(name); }) ||
         Succeeds([&] { (void)info.GetAttribute<float>(name); }) ||
         Succeeds([&] { (void)info.GetAttribute<std::string>(name); }) ||
         Succeeds([&] { if (info.GetAttributes<int64_t>(name).empty()) throw std::exception(); }) ||
         Succeeds([&] { if (info.GetAttributes<float>(name).empty()) throw std::exception(); });
}

// Rule 2: attributes of the other codec are unknown to this one.
template <size_t K>
static std::string RefuseForeign(const Ort::ConstKernelInfo& info, const std::string& codec,
                                 const char* const (&names)[K]) {
  for (const char* name : names) {
    if (HasAttribute(info, name)) return "rule 2: attribute " + std::string(name) + " is unknown to codec '" + codec + "'";
  }
  return "";
}

constexpr const char* kNotLattice[] = {"points", "rings", "center", "side", "ring_scales", "window"};
constexpr const char* kNotWinding[] = {"generator", "group", "alpha", "beta", "scale_unit", "window"};
constexpr const char* kNotTrellis[] = {"points", "rings", "center", "side", "ring_scales", "generator", "alpha", "beta"};

// Reads and validates the attributes; "" or the error message.
static std::string ReadLattice(const Ort::ConstKernelInfo& info, LatticeAttributes* a) {
  std::string error;
  if (!ReadAttribute(info, "shape", &a->shape, &error, "ints") ||
      !ReadAttribute(info, "dtype", &a->dtype, &error, "int") ||
      !ReadAttribute(info, "bits", &a->bits, &error, "int") ||
      !ReadAttribute(info, "generator", &a->generator, &error, "int") ||
      !ReadAttribute(info, "group", &a->group, &error, "int") ||
      !ReadAttribute(info, "alpha", &a->alpha, &error, "float") ||
      !ReadAttribute(info, "beta", &a->beta, &error, "float") ||
      !ReadAttribute(info, "scale_unit", &a->scale_unit, &error, "float")) {
    return error;
  }
  return RefuseForeign(info, a->codec, kNotLattice);
}

static std::string ReadTrellis(const Ort::ConstKernelInfo& info, TrellisAttributes* a) {
  std::string error;
  if (!ReadAttribute(info, "shape", &a->shape, &error, "ints") ||
      !ReadAttribute(info, "dtype", &a->dtype, &error, "int") ||
      !ReadAttribute(info, "bits", &a->bits, &error, "int") ||
      !ReadAttribute(info, "window", &a->window, &error, "int") ||
      !ReadAttribute(info, "group", &a->group, &error, "int") ||
      !ReadAttribute(info, "scale_unit", &a->scale_unit, &error, "float")) {
    return error;
  }
  return RefuseForeign(info, a->codec, kNotTrellis);
}

static std::string ReadWinding(const Ort::ConstKernelInfo& info, WindingAttributes* a) {
  std::string error;
  if (!ReadAttribute(info, "shape", &a->shape, &error, "ints") ||
      !ReadAttribute(info, "dtype", &a->dtype, &error, "int") ||
      !ReadAttribute(info, "bits", &a->bits, &error, "int") ||
      !ReadAttribute(info, "points", &a->points, &error, "int") ||
      !ReadAttribute(info, "rings", &a->rings, &error, "int") ||
      !ReadAttribute(info, "center", &a->center, &error, "floats") ||
      !ReadAttribute(info, "side", &a->side, &error, "float") ||
      !ReadAttribute(info, "ring_scales", &a->ring_scales, &error, "floats")) {
    return error;
  }
  return RefuseForeign(info, a->codec, kNotWinding);
}

std::string ReadNode(const Ort::ConstKernelInfo& info, NodeParams* node, bool count_inputs) {
  std::string codec, error;
  if (!ReadAttribute(info, "codec", &codec, &error, "string")) return error;
  if (codec != kCodecWinding && codec != kCodecLattice && codec != kCodecTrellis) {
    return "rule 2: codec '" + Printable(codec) + "' is unknown (this decoder knows 'winding', 'lattice' and 'trellis')";
  }
  const size_t inputs = info.GetInputCount();
  if (codec == kCodecTrellis) {
    if (count_inputs && inputs != 2) return "rule 2: a trellis node has two inputs (seed, scales), not " + std::to_string(inputs);
    TrellisAttributes attrs;
    attrs.codec = codec;
    error = ReadTrellis(info, &attrs);
    if (error.empty()) error = ValidateTrellis(attrs, &node->trellis_params);
    node->trellis = true;
    node->shape = attrs.shape;
    return error;
  }
  if (codec == kCodecLattice) {
    if (count_inputs && inputs != 2) return "rule 2: a lattice node has two inputs (seed, scales), not " + std::to_string(inputs);
    LatticeAttributes attrs;
    attrs.codec = codec;
    error = ReadLattice(info, &attrs);
    if (error.empty()) error = ValidateLattice(attrs, &node->lattice_params);
    node->lattice = true;
    node->shape = attrs.shape;
    return error;
  }
  WindingAttributes attrs;
  attrs.codec = codec;
  error = ReadWinding(info, &attrs);
  if (error.empty()) error = ValidateWinding(attrs, &node->winding);
  if (error.empty() && count_inputs && inputs != 1) error = "rule 2: a winding node has one input (seed), not " + std::to_string(inputs);
  node->lattice = false;
  node->shape = attrs.shape;
  return error;
}

OrtStatusPtr DecodeWeightsCpuOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* raw_info, void** kernel) const {
  *kernel = nullptr;
  std::string name = "?";
  try {
    Ort::ConstKernelInfo info(raw_info);
    name = info.GetNodeName();
    NodeParams node;
    const std::string error = ReadNode(info, &node);
    if (!error.empty()) return Fail(name, error);
    *kernel = new DecodeWeightsCpuKernel(name, std::move(node));
    return nullptr;
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ORT_FAIL, ("DecodeWeights node '" + Printable(name) + "': out of memory").c_str());
  } catch (const std::exception& e) {
    return api.CreateStatus(ORT_FAIL, ("DecodeWeights node '" + Printable(name) + "': " + e.what()).c_str());
  }
}

OrtStatusPtr DecodeWeightsCpuOp::InferOutputShape(Ort::ShapeInferContext& context) {
  try {
    const int64_t dtype = context.GetAttrInt("dtype");
    if (dtype != kFloat32 && dtype != kFloat16 && dtype != kBFloat16) return nullptr;  // the kernel reports it
    const std::vector<int64_t> dims = context.GetAttrInts("shape");
    Ort::ShapeInferContext::Shape shape;
    for (int64_t d : dims) {
      if (d < 0) return nullptr;
      shape.emplace_back(d);
    }
    return context.SetOutputShape(0, shape, static_cast<ONNXTensorElementDataType>(dtype)).release();
  } catch (...) {
    return nullptr;  // missing or mistyped attributes: CreateKernelV2 names the rule
  }
}

// The kernels' float32 -> float16 / bfloat16 conversion over an array, for tests
// (tests/test_kernel.py drives it with ctypes): on aarch64 the NEON lanes of the lattice loop.
extern "C" HYPERONNX_EXPORT int HyperonnxConvertFloats(const float* in, uint64_t count, int64_t dtype, uint16_t* out) {
  if (dtype != kFloat16 && dtype != kBFloat16) return -1;
  uint64_t i = 0;
#ifdef HYPERONNX_NEON
  for (; i + 4 <= count; i += 4) {
    const float32x4_t v = vld1q_f32(in + i);
    vst1_u16(out + i, dtype == kFloat16 ? HalfLanes(v) : BFloat16Lanes(v));
  }
#endif
  for (; i < count; ++i) out[i] = ConvertTo(dtype, in[i]);
  return 0;
}

// Pairs decoded by a vector loop since the library was loaded (CountVectorPairs).
extern "C" HYPERONNX_EXPORT uint64_t HyperonnxVectorPairs() { return vector_pairs.load(); }

}  // namespace hyperonnx
