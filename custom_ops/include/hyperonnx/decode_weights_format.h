// The DecodeWeights contract of docs/FORMAT.md (versions 1 to 3), shared by every backend.
//
// Host code (the CPU kernel, and the host side of the CUDA kernel) validates a node's attributes
// with `ValidateWinding` / `ValidateLattice`, which fill a `WindingParams` / `LatticeParams`: plain
// structs that device code can take by value. `DecodeIndex`, `LatticeCoordinate`, `ReadIndex` and
// the float conversions are HYPERONNX_HD so that CPU and CUDA decode with the same operations, in
// the same order (FORMAT.md §3 and §7.3: every float operation is one IEEE binary32 operation
// rounded to nearest-even, no FMA; compile with -ffp-contract=off and nvcc with -fmad=false).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define HYPERONNX_HD __host__ __device__ __forceinline__
#else
#define HYPERONNX_HD inline
#endif

#if !defined(__CUDA_ARCH__)
#include <cmath>
#include <string>
#include <vector>
#endif

namespace hyperonnx {

constexpr const char* kDomain = "ai.hyperonnx";
constexpr const char* kOpName = "DecodeWeights";
// The ai.hyperonnx opset versions (= format versions) the kernels decode: 1 (winding), 2
// (winding and lattice), 3 (the fused operators, FORMAT.md §9), 4 (the trellis codec, §9).
// Rule 8 (no codec or operator under a version older than it) is hyperonnx.runtime's: a kernel
// cannot see the model's opsets.
constexpr int kMinFormatVersion = 1;
constexpr int kFusedFormatVersion = 3;
constexpr int kFormatVersion = 4;
constexpr const char* kCodecWinding = "winding";
constexpr const char* kCodecLattice = "lattice";
constexpr const char* kCodecTrellis = "trellis";

constexpr uint64_t kMaxElements = uint64_t{1} << 40;
constexpr int64_t kMaxBits = 24;
constexpr int64_t kMaxPoints = int64_t{1} << 20;
constexpr int64_t kMaxRings = 64;
constexpr int64_t kLatticeMinBits = 2;
constexpr int64_t kLatticeMaxBits = 16;  // N = 2^16 - 1 points keep j * g + c below 2^32
constexpr int64_t kLatticeMaxGroup = int64_t{1} << 16;
// Bound of |alpha|, |beta| and scale_unit: every float32 intermediate of FORMAT.md §7.3 stays
// finite, so no decoder meets 0 * Inf, whose NaN bits differ between CPU and GPU.
constexpr float kLatticeFloatLimit = 0x1p100f;

// The trellis codec (FORMAT.md §9): k bits per weight, a window of L <= 16 bits.
constexpr int64_t kTrellisMinBits = 1;
constexpr int64_t kTrellisMaxBits = 8;
constexpr int64_t kTrellisMaxWindow = 16;
constexpr uint32_t kTrellisMultiplier = 0x9E3779B1u;  // §9.3's state permutation (odd)
// a, b, c, d of §9.3's value map, float32
constexpr float kTrellisA = 1.0084383f;
constexpr float kTrellisB = -0.9740608f;
constexpr float kTrellisC = 1.4579432f;
constexpr float kTrellisD = -0.4645949f;

// ONNX TensorProto data types of the outputs a decoder supports.
constexpr int64_t kFloat32 = 1;
constexpr int64_t kFloat16 = 10;
constexpr int64_t kBFloat16 = 16;

// Everything a kernel needs to decode one tensor, validated and with the derived constants.
struct WindingParams {
  uint64_t num_elements;   // N = prod(shape)
  uint64_t num_pairs;      // P = ceil(N / 2)
  uint64_t seed_bytes;     // ceil(P * bits / 8)
  int64_t dtype;           // kFloat32, kFloat16 or kBFloat16
  uint32_t bits;           // b, 1..24
  uint32_t points;         // n, 1..2^20
  uint32_t rings;          // C, 0..64
  uint32_t m;              // ceil(sqrt(n))
  uint32_t modulus;        // M = m * m
  uint32_t codebook_size;  // (n + 1) * (C + 1): every index must be below it
  float center[2];         // (cx, cy)
  float step;              // L / float32(M)
  float offset;            // -0.5 * L
  float scales[kMaxRings + 1];  // S_0 = 1, S_1 .. S_C
};
static_assert(sizeof(float) == 4 && sizeof(uint32_t) == 4, "binary32 floats required");

// A lattice node (FORMAT.md §7), validated, with the derived constants of §7.3.
struct LatticeParams {
  uint64_t num_elements;  // N_el = prod(shape)
  uint64_t num_pairs;     // P = ceil(N_el / 2)
  uint64_t seed_bytes;    // ceil(P * bits / 8)
  uint64_t num_scales;    // ceil(N_el / G)
  int64_t dtype;          // kFloat32, kFloat16 or kBFloat16
  uint32_t bits;          // b, 2..16
  uint32_t points;        // N = 2^b - 1: every step must be below it (rule 7)
  uint32_t generator;     // g, odd, < N
  uint32_t offset;        // c = (g - 1) / 2
  uint32_t group;         // G, even, 2..65536
  float alpha;
  float beta;
  float scale_unit;       // U
  float r;                // 1.0f / float32(N)
};

// A trellis node (FORMAT.md §9), validated, with its derived constants.
struct TrellisParams {
  uint64_t num_elements;  // N_el = prod(shape)
  uint64_t num_groups;    // ceil(N_el / G): scales, and walks of G weights
  uint64_t seed_bytes;    // num_groups * G * k / 8
  int64_t dtype;          // kFloat32, kFloat16 or kBFloat16
  uint32_t bits;          // k, 1..8
  uint32_t window;        // L, k..16
  uint32_t group;         // G, a multiple of 8, k * G >= L
  uint32_t group_bytes;   // G * k / 8: a group's stream
  float scale_unit;       // U
  float unit_u;           // 2^-L
};

// FORMAT.md §9.3: h(s), the value of window s < 2^L, operation by operation.
HYPERONNX_HD float TrellisValue(const TrellisParams& p, uint32_t s) {
  const uint32_t r = (s * kTrellisMultiplier) & ((uint32_t{1} << p.window) - 1u);
  const int32_t centred = 2 * static_cast<int32_t>(r) + 1 - (int32_t{1} << p.window);
  const float u = static_cast<float>(centred) * p.unit_u;  // exact: |centred| < 2^17, unit_u a power of 2
  const float t = u * u;  // separate statements: no contraction into an FMA
  float num = t * kTrellisB;
  num = num + kTrellisA;
  num = u * num;
  float den = t * kTrellisD;
  den = den + kTrellisC;
  den = den * t;
  den = 1.0f - den;
  return num / den;
}

// FORMAT.md §9.2: the window of weight t < G of group q, read from the circular stream of the
// group (bytes [q * group_bytes, (q + 1) * group_bytes)), only bytes inside it.
HYPERONNX_HD uint32_t TrellisWindow(const TrellisParams& p, const uint8_t* seed, uint64_t q, uint32_t t) {
  const uint8_t* g = seed + q * p.group_bytes;
  const uint32_t bit = t * p.bits;  // < 2^19
  uint32_t byte = bit >> 3;
  uint32_t word = 0;
  for (uint32_t i = 0; i < 4; ++i) {  // L + 7 <= 23 bits: three bytes, a fourth for simplicity
    word |= uint32_t{g[byte]} << (8 * i);
    byte = byte + 1 == p.group_bytes ? 0 : byte + 1;
  }
  return (word >> (bit & 7)) & ((uint32_t{1} << p.window) - 1u);
}

// Index i of a FORMAT.md §4 bit stream, reading only bytes inside [0, seed_bytes).
HYPERONNX_HD uint32_t ReadIndex(const uint8_t* seed, uint64_t seed_bytes, uint64_t i, uint32_t bits) {
  const uint64_t bit = i * bits;
  const uint64_t byte = bit >> 3;
  uint32_t window = 0;
  for (uint32_t k = 0; k < 4; ++k) {
    if (byte + k < seed_bytes) window |= uint32_t{seed[byte + k]} << (8 * k);
  }
  return (window >> (bit & 7)) & ((uint32_t{1} << bits) - 1);
}

// FORMAT.md §3 for one index already checked to be < codebook_size: the float32 pair it stands for.
HYPERONNX_HD void DecodeIndex(const WindingParams& p, uint32_t x, float* first, float* second) {
  const uint32_t j = x % (p.points + 1);
  const uint32_t k = x / (p.points + 1);
  float qx = 0.0f;
  float qy = 0.0f;
  if (j != p.points) {
    const uint32_t ux = j % p.modulus;
    const uint32_t uy = static_cast<uint32_t>((uint64_t{j} * p.m) % p.modulus);
    qx = static_cast<float>(ux) * p.step;  // separate statements: no contraction into an FMA
    qx = qx + p.offset;
    qy = static_cast<float>(uy) * p.step;
    qy = qy + p.offset;
  }
  const float sx = qx * p.scales[k];
  const float sy = qy * p.scales[k];
  *first = p.center[0] + sx;
  *second = p.center[1] + sy;
}

HYPERONNX_HD uint32_t FloatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

HYPERONNX_HD float BitsFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// FORMAT.md §7.3: the row y_int = (j * g + c) mod N of step j < N (the column x_int is j itself).
// N = 2^b - 1, so 2^b = 1 (mod N): two folds of the high b bits onto the low ones reduce
// x < 2^(2b) to [0, N] without a division (a GPU has no integer divider).
HYPERONNX_HD uint32_t LatticeRow(const LatticeParams& p, uint32_t j) {
  const uint32_t x = j * p.generator + p.offset;  // j, g <= 2^b - 2, c < 2^(b-1): below 2^(2b) <= 2^32
  uint32_t r = (x & p.points) + (x >> p.bits);    // <= 2 * (2^b - 1)
  r = (r & p.points) + (r >> p.bits);             // <= N
  return r == p.points ? 0u : r;
}

// FORMAT.md §7.3: v(m) = phi(u(m)) for a coordinate m < N, operation by operation.
HYPERONNX_HD float LatticeCoordinate(const LatticeParams& p, uint32_t m) {
  const int32_t centred = 2 * static_cast<int32_t>(m) - static_cast<int32_t>(p.points - 1);
  const float u = static_cast<float>(centred) * p.r;  // exact conversion: |centred| < 2^16
  float t = u * u;  // separate statements: no contraction into an FMA
  t = t * p.beta;
  t = t + p.alpha;
  return u * t;
}

// A float16 scale whose exponent field is 31 (Inf or NaN) breaks rule 6.
HYPERONNX_HD bool HalfIsFinite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

// IEEE binary16 -> binary32, exact (subnormals included); `h` is finite (rule 6).
HYPERONNX_HD float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float32
    return BitsFloat(FloatBits(static_cast<float>(mantissa) * 5.9604644775390625e-8f) | sign);
  }
  return BitsFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// FORMAT.md §7.3: S_q = float32(scales[q]) * U.
HYPERONNX_HD float LatticeScale(const LatticeParams& p, uint16_t h) { return HalfToFloat(h) * p.scale_unit; }

// float32 -> IEEE binary16, round to nearest, ties to even; overflow to +-Inf, subnormals kept,
// NaN stays NaN (quiet). Matches numpy's astype(float16).
HYPERONNX_HD uint16_t FloatToHalf(float f) {
  const uint32_t u = FloatBits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // Inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (a > 0x7f800000u ? 0x0200u | ((a >> 13) & 0x03ffu) : 0u));
  }
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to Inf
  if (a >= 0x38800000u) {  // a normal half: rebias the exponent, round the 13 dropped bits
    const uint32_t rounded = a + 0x0fffu + ((a >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
  }
  const uint32_t exponent = a >> 23;
  if (exponent < 102) return static_cast<uint16_t>(sign);  // below 2^-25: rounds to zero
  // A half subnormal (or the smallest normal after rounding): mantissa * 2^(e - 150) in units of 2^-24.
  const uint32_t mantissa = (a & 0x007fffffu) | 0x00800000u;
  const uint32_t shift = 126 - exponent;  // 14 .. 24
  uint32_t h = mantissa >> shift;
  const uint32_t rest = mantissa & ((uint32_t{1} << shift) - 1);
  const uint32_t half = uint32_t{1} << (shift - 1);
  if (rest > half || (rest == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

// float32 -> bfloat16, round to nearest, ties to even; overflow to +-Inf, subnormals kept,
// NaN stays NaN (quiet). Matches ml_dtypes' astype(bfloat16).
HYPERONNX_HD uint16_t FloatToBFloat16(float f) {
  const uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

#if !defined(__CUDA_ARCH__)

// The attributes of one DecodeWeights node as read from the model (types already checked).
struct WindingAttributes {
  std::string codec;
  std::vector<int64_t> shape;
  int64_t dtype = 0;
  int64_t bits = 0;
  int64_t points = 0;
  int64_t rings = 0;
  std::vector<float> center;
  float side = 0.0f;
  std::vector<float> ring_scales;
};

// `text` with every byte outside printable ASCII written as \xNN: strings from a model (node
// names, the codec) go into error messages, which onnxruntime's Python binding decodes as UTF-8.
inline std::string Printable(const std::string& text) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// m = ceil(sqrt(n)), the least m with m * m >= n (n >= 1).
inline uint32_t WindingSide(uint32_t n) {
  uint32_t m = static_cast<uint32_t>(std::sqrt(static_cast<double>(n)));
  while (uint64_t{m} * m < n) ++m;
  while (m > 1 && uint64_t{m - 1} * (m - 1) >= n) --m;
  return m;
}

// The attributes every codec shares, rules 2-3: dtype and shape; sets `count` = prod(shape).
inline std::string ValidateOutput(const std::vector<int64_t>& shape, int64_t dtype, uint64_t* count) {
  using std::to_string;
  if (dtype != kFloat32 && dtype != kFloat16 && dtype != kBFloat16) {
    return "rule 2: dtype " + to_string(dtype) + " is not float32 (1), float16 (10) or bfloat16 (16)";
  }
  *count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return "rule 2: shape has a negative dimension " + to_string(dim);
    if (dim != 0 && *count > kMaxElements / static_cast<uint64_t>(dim)) {
      return "rule 3: the product of shape exceeds 2^40 elements";
    }
    *count *= static_cast<uint64_t>(dim);
  }
  if (*count > kMaxElements) return "rule 3: the product of shape exceeds 2^40 elements";
  return "";
}

// FORMAT.md §5 rules 2-3 (rule 1 is the opset version, rule 4's length check needs the seed):
// returns "" and fills `p`, or the message naming the rule broken.
inline std::string ValidateWinding(const WindingAttributes& a, WindingParams* p) {
  using std::to_string;
  if (a.codec != kCodecWinding) {
    return "rule 2: codec '" + Printable(a.codec) + "' is not 'winding'";
  }
  uint64_t count = 0;
  const std::string output_error = ValidateOutput(a.shape, a.dtype, &count);
  if (!output_error.empty()) return output_error;
  struct Range { const char* name; int64_t value, low, high; };
  for (const Range& r : {Range{"bits", a.bits, 1, kMaxBits}, Range{"points", a.points, 1, kMaxPoints},
                         Range{"rings", a.rings, 0, kMaxRings}}) {
    if (r.value < r.low || r.value > r.high) {
      return std::string("rule 2: attribute ") + r.name + "=" + to_string(r.value) + " is outside [" +
             to_string(r.low) + ", " + to_string(r.high) + "]";
    }
  }
  if (a.center.size() != 2 || !std::isfinite(a.center[0]) || !std::isfinite(a.center[1])) {
    return "rule 2: attribute center must hold exactly 2 finite floats (it holds " +
           to_string(a.center.size()) + ")";
  }
  if (!std::isfinite(a.side) || !(a.side > 0.0f)) return "rule 2: attribute side must be finite and > 0";
  if (a.ring_scales.size() != static_cast<size_t>(a.rings)) {
    return "rule 2: attribute ring_scales holds " + to_string(a.ring_scales.size()) +
           " values, rings=" + to_string(a.rings) + " needs exactly that many";
  }
  for (float s : a.ring_scales) {
    if (!std::isfinite(s) || !(s > 0.0f)) return "rule 2: attribute ring_scales must hold finite values > 0";
  }
  std::memset(p, 0, sizeof *p);
  p->num_elements = count;
  p->num_pairs = (count + 1) / 2;
  p->bits = static_cast<uint32_t>(a.bits);
  p->seed_bytes = (p->num_pairs * p->bits + 7) / 8;  // < 2^39 * 24: no overflow
  p->dtype = a.dtype;
  p->points = static_cast<uint32_t>(a.points);
  p->rings = static_cast<uint32_t>(a.rings);
  p->m = WindingSide(p->points);
  p->modulus = p->m * p->m;
  p->codebook_size = (p->points + 1) * (p->rings + 1);  // <= (2^20 + 1) * 65 < 2^32
  p->center[0] = a.center[0];
  p->center[1] = a.center[1];
  const float side = a.side;
  const float modulus = static_cast<float>(p->modulus);  // exact: m <= 1024, so M <= 2^20
  p->step = side / modulus;
  p->offset = -0.5f * side;
  p->scales[0] = 1.0f;
  for (uint32_t k = 0; k < p->rings; ++k) p->scales[k + 1] = a.ring_scales[k];
  return "";
}

// The attributes of a lattice node as read from the model (types already checked).
struct LatticeAttributes {
  std::string codec;
  std::vector<int64_t> shape;
  int64_t dtype = 0;
  int64_t bits = 0;
  int64_t generator = 0;
  int64_t group = 0;
  float alpha = 0.0f;
  float beta = 0.0f;
  float scale_unit = 0.0f;
};

// FORMAT.md §5 rules 2-3 with §7.1's attributes: returns "" and fills `p`, or the message.
inline std::string ValidateLattice(const LatticeAttributes& a, LatticeParams* p) {
  using std::to_string;
  if (a.codec != kCodecLattice) return "rule 2: codec '" + Printable(a.codec) + "' is not 'lattice'";
  uint64_t count = 0;
  const std::string output_error = ValidateOutput(a.shape, a.dtype, &count);
  if (!output_error.empty()) return output_error;
  if (a.bits < kLatticeMinBits || a.bits > kLatticeMaxBits) {
    return "rule 2: attribute bits=" + to_string(a.bits) + " is outside [" + to_string(kLatticeMinBits) + ", " +
           to_string(kLatticeMaxBits) + "]";
  }
  const int64_t points = (int64_t{1} << a.bits) - 1;
  if (a.generator < 1 || a.generator >= points || a.generator % 2 == 0) {
    return "rule 2: attribute generator=" + to_string(a.generator) + " must be odd and in [1, " +
           to_string(points - 1) + "]";
  }
  if (a.group < 2 || a.group > kLatticeMaxGroup || a.group % 2 != 0) {
    return "rule 2: attribute group=" + to_string(a.group) + " must be even and in [2, " +
           to_string(kLatticeMaxGroup) + "]";
  }
  // written so that NaN fails too
  if (!(std::fabs(a.alpha) <= kLatticeFloatLimit)) return "rule 2: attribute alpha must be finite, within +-2^100";
  if (!(std::fabs(a.beta) <= kLatticeFloatLimit)) return "rule 2: attribute beta must be finite, within +-2^100";
  if (!(a.scale_unit > 0.0f && a.scale_unit <= kLatticeFloatLimit)) {
    return "rule 2: attribute scale_unit must be > 0 and <= 2^100";
  }
  std::memset(p, 0, sizeof *p);
  p->num_elements = count;
  p->num_pairs = (count + 1) / 2;
  p->bits = static_cast<uint32_t>(a.bits);
  p->seed_bytes = (p->num_pairs * p->bits + 7) / 8;  // < 2^39 * 16: no overflow
  p->group = static_cast<uint32_t>(a.group);
  p->num_scales = (count + p->group - 1) / p->group;
  p->dtype = a.dtype;
  p->points = static_cast<uint32_t>(points);
  p->generator = static_cast<uint32_t>(a.generator);
  p->offset = (p->generator - 1) / 2;
  p->alpha = a.alpha;
  p->beta = a.beta;
  p->scale_unit = a.scale_unit;
  p->r = 1.0f / static_cast<float>(p->points);  // exact conversion: N < 2^16
  return "";
}

// The attributes of a trellis node as read from the model (types already checked).
struct TrellisAttributes {
  std::string codec;
  std::vector<int64_t> shape;
  int64_t dtype = 0;
  int64_t bits = 0;
  int64_t window = 0;
  int64_t group = 0;
  float scale_unit = 0.0f;
};

// FORMAT.md §5 rules 2-3 with §9.1's attributes: returns "" and fills `p`, or the message.
inline std::string ValidateTrellis(const TrellisAttributes& a, TrellisParams* p) {
  using std::to_string;
  if (a.codec != kCodecTrellis) return "rule 2: codec '" + Printable(a.codec) + "' is not 'trellis'";
  uint64_t count = 0;
  const std::string output_error = ValidateOutput(a.shape, a.dtype, &count);
  if (!output_error.empty()) return output_error;
  if (a.bits < kTrellisMinBits || a.bits > kTrellisMaxBits) {
    return "rule 2: attribute bits=" + to_string(a.bits) + " is outside [" + to_string(kTrellisMinBits) + ", " +
           to_string(kTrellisMaxBits) + "]";
  }
  if (a.window < a.bits || a.window > kTrellisMaxWindow) {
    return "rule 2: attribute window=" + to_string(a.window) + " is outside [bits, " + to_string(kTrellisMaxWindow) + "]";
  }
  if (a.group < 8 || a.group > kLatticeMaxGroup || a.group % 8 != 0) {
    return "rule 2: attribute group=" + to_string(a.group) + " must be a multiple of 8 in [8, " +
           to_string(kLatticeMaxGroup) + "]";
  }
  if (a.bits * a.group < a.window) {
    return "rule 2: a group's stream of bits*group = " + to_string(a.bits * a.group) + " bits is shorter than window=" +
           to_string(a.window);
  }
  if (!(a.scale_unit > 0.0f && a.scale_unit <= kLatticeFloatLimit)) {  // written so that NaN fails too
    return "rule 2: attribute scale_unit must be > 0 and <= 2^100";
  }
  std::memset(p, 0, sizeof *p);
  p->num_elements = count;
  p->group = static_cast<uint32_t>(a.group);
  p->num_groups = (count + p->group - 1) / p->group;
  p->bits = static_cast<uint32_t>(a.bits);
  p->window = static_cast<uint32_t>(a.window);
  p->group_bytes = p->group / 8 * p->bits;
  p->seed_bytes = p->num_groups * p->group_bytes;  // < (2^40 + 2^16) * 8 / 8: no overflow
  p->dtype = a.dtype;
  p->scale_unit = a.scale_unit;
  p->unit_u = std::ldexp(1.0f, -static_cast<int>(p->window));
  return "";
}

// Rule 4 for the seed tensor a kernel receives (any codec: its packed length and width).
inline std::string ValidateSeedLength(uint64_t seed_bytes, uint32_t bits, size_t rank, const int64_t* dims) {
  if (rank != 1) return "rule 4: seed must be a rank-1 uint8 tensor (it has rank " + std::to_string(rank) + ")";
  if (dims[0] < 0 || static_cast<uint64_t>(dims[0]) != seed_bytes) {
    return "rule 4: seed holds " + std::to_string(dims[0]) + " bytes; shape and bits=" +
           std::to_string(bits) + " need exactly " + std::to_string(seed_bytes);
  }
  return "";
}

inline std::string ValidateSeed(const WindingParams& p, size_t rank, const int64_t* dims) {
  return ValidateSeedLength(p.seed_bytes, p.bits, rank, dims);
}

inline std::string ValidateSeed(const LatticeParams& p, size_t rank, const int64_t* dims) {
  return ValidateSeedLength(p.seed_bytes, p.bits, rank, dims);
}

// Rule 6's shape part for the scales tensor a kernel receives (the values: HalfIsFinite).
inline std::string ValidateScalesShape(const LatticeParams& p, size_t rank, const int64_t* dims) {
  if (rank != 1) return "rule 6: scales must be a rank-1 float16 tensor (it has rank " + std::to_string(rank) + ")";
  if (dims[0] < 0 || static_cast<uint64_t>(dims[0]) != p.num_scales) {
    return "rule 6: scales holds " + std::to_string(dims[0]) + " values; shape and group=" +
           std::to_string(p.group) + " need exactly " + std::to_string(p.num_scales);
  }
  return "";
}

inline std::string ValidateSeed(const TrellisParams& p, size_t rank, const int64_t* dims) {
  return ValidateSeedLength(p.seed_bytes, p.bits, rank, dims);
}

inline std::string ValidateScalesShape(const TrellisParams& p, size_t rank, const int64_t* dims) {
  if (rank != 1) return "rule 6: scales must be a rank-1 float16 tensor (it has rank " + std::to_string(rank) + ")";
  if (dims[0] < 0 || static_cast<uint64_t>(dims[0]) != p.num_groups) {
    return "rule 6: scales holds " + std::to_string(dims[0]) + " values; shape and group=" +
           std::to_string(p.group) + " need exactly " + std::to_string(p.num_groups);
  }
  return "";
}

#endif  // !__CUDA_ARCH__

}  // namespace hyperonnx
