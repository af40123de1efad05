// DecodeWeights, CPU decoder of the `lattice` codec (docs/FORMAT.md §7). Bit-identical to
// hyperonnx.codec.lattice.decode.
//
// A pair's two values are v(x) * S and v(y) * S, where (x, y) depends on its step j only and S on
// its group only. So a node keeps a table of the unscaled pair (v(j), v(row(j))) of every step,
// computed once with the §7.3 operations (LatticeCoordinate), and the hot loop is a bit-unpack,
// one table load, two float32 multiplications by the group's scale and the conversion to the
// output type. Steps >= N are clamped into the table (a branch-free select) and fail the run
// (rule 7) after the loop.
#include "lattice_cpu.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

namespace hyperonnx {
namespace {

constexpr uint64_t kPairsPerTask = uint64_t{1} << 16;  // pairs per ParallelFor task

// The output type's bits and the §3 conversion of a float32 value to it.
template <int64_t D>
struct Output;
template <>
struct Output<kFloat32> {
  using T = uint32_t;
  static T Convert(float f) { return FloatBits(f); }
};
template <>
struct Output<kFloat16> {
  using T = uint16_t;
  static T Convert(float f) { return FloatToHalf(f); }
};
template <>
struct Output<kBFloat16> {
  using T = uint16_t;
  static T Convert(float f) { return FloatToBFloat16(f); }
};

struct Job {
  const LatticeParams* params;
  const uint8_t* seed;
  const uint16_t* scales;
  const float* table;
  void* out;
  uint64_t whole_pairs;  // num_elements / 2: the last, half pair of an odd tensor is not in a task
  std::atomic<bool> bad{false};
};

// Pairs [begin, end), group by group. Returns true when a step was >= N.
template <int B, int64_t D>
bool DecodeRange(const Job& job, uint64_t begin, uint64_t end) {
  using T = typename Output<D>::T;
  constexpr uint32_t kMask = (uint32_t{1} << B) - 1;
  const LatticeParams& p = *job.params;
  T* out = static_cast<T*>(job.out);
  const float* table = job.table;
  const uint32_t points = p.points;
  const uint64_t pairs_per_group = p.group / 2;  // G is even: a pair never straddles two groups
  // Pairs below `windowed` read their step from one 4-byte window inside the seed.
  const uint64_t windowed = p.seed_bytes >= 4 ? ((p.seed_bytes - 4) * 8) / B + 1 : 0;
  uint32_t bad = 0;
  uint64_t i = begin;
  while (i < end) {
    const uint64_t q = i / pairs_per_group;
    const uint64_t stop = std::min(end, (q + 1) * pairs_per_group);
    const float s = LatticeScale(p, job.scales[q]);
    for (; i < stop; ++i) {
      uint32_t j;
      if (i < windowed) {
        uint32_t window;
        std::memcpy(&window, job.seed + ((i * B) >> 3), 4);  // little-endian hosts only (checked in CMake)
        j = (window >> ((i * B) & 7)) & kMask;
      } else {
        j = ReadIndex(job.seed, p.seed_bytes, i, B);
      }
      const uint32_t ok = j < points;
      bad |= ok ^ 1u;
      j = ok ? j : 0;
      const float x = table[2 * j] * s;
      const float y = table[2 * j + 1] * s;
      out[2 * i] = Output<D>::Convert(x);
      out[2 * i + 1] = Output<D>::Convert(y);
    }
  }
  return bad != 0;
}

using RangeFn = bool (*)(const Job&, uint64_t, uint64_t);

template <int64_t D, int... Bs>
RangeFn SelectRange(uint32_t bits, std::integer_sequence<int, Bs...>) {
  static const RangeFn kByBits[] = {&DecodeRange<Bs + 1, D>...};
  return kByBits[bits - 1];  // bits is 2..16, validated
}

RangeFn GetRange(int64_t dtype, uint32_t bits) {
  using Widths = std::make_integer_sequence<int, kLatticeMaxBits>;
  if (dtype == kFloat32) return SelectRange<kFloat32>(bits, Widths{});
  if (dtype == kFloat16) return SelectRange<kFloat16>(bits, Widths{});
  return SelectRange<kBFloat16>(bits, Widths{});
}

void RunTask(void* data, size_t task) {
  auto* job = static_cast<Job*>(data);
  const uint64_t begin = uint64_t{task} * kPairsPerTask;
  const uint64_t end = std::min<uint64_t>(begin + kPairsPerTask, job->whole_pairs);
  if (begin >= end) return;
  if (GetRange(job->params->dtype, job->params->bits)(*job, begin, end)) {
    job->bad.store(true, std::memory_order_relaxed);
  }
}

// Tables by trajectory, kept while a node uses them.
std::shared_ptr<const std::vector<float>> SharedTable(const LatticeParams& p) {
  using Key = std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>;
  static std::mutex mutex;
  static auto* tables = new std::map<Key, std::weak_ptr<const std::vector<float>>>;  // never destroyed
  const Key key{p.bits, p.generator, FloatBits(p.alpha), FloatBits(p.beta)};
  std::lock_guard<std::mutex> lock(mutex);
  if (auto table = (*tables)[key].lock()) return table;
  auto table = std::make_shared<std::vector<float>>(2 * size_t{p.points});
  for (uint32_t j = 0; j < p.points; ++j) {
    (*table)[2 * j] = LatticeCoordinate(p, j);
    (*table)[2 * j + 1] = LatticeCoordinate(p, LatticeRow(p, j));
  }
  for (auto it = tables->begin(); it != tables->end();) it = it->second.expired() ? tables->erase(it) : std::next(it);
  (*tables)[key] = table;
  return table;
}

}  // namespace

LatticeCpuDecoder::LatticeCpuDecoder(const LatticeParams& params) : params_(params), table_(SharedTable(params)) {}

uint64_t LatticeCpuDecoder::FirstNonFiniteScale(const uint16_t* scales) const {
  uint64_t q = 0;
  while (q < params_.num_scales && HalfIsFinite(scales[q])) ++q;
  return q;
}

bool LatticeCpuDecoder::Decode(const Ort::KernelContext& context, const uint8_t* seed, const uint16_t* scales,
                               void* out) const {
  const LatticeParams& p = params_;
  Job job;
  job.params = &p;
  job.seed = seed;
  job.scales = scales;
  job.table = table_->data();
  job.out = out;
  job.whole_pairs = p.num_elements / 2;
  const uint64_t tasks = (job.whole_pairs + kPairsPerTask - 1) / kPairsPerTask;
  if (tasks > 1) {
    context.ParallelFor(&RunTask, static_cast<size_t>(tasks), 0, &job);
  } else if (tasks == 1) {
    RunTask(&job, 0);
  }
  bool bad = job.bad.load();
  if (p.num_elements % 2) {  // the last pair: its second value is computed and dropped
    const uint64_t i = p.num_pairs - 1;
    uint32_t j = ReadIndex(seed, p.seed_bytes, i, p.bits);
    if (j >= p.points) {
      bad = true;
      j = 0;
    }
    const float x = job.table[2 * j] * LatticeScale(p, scales[(2 * i) / p.group]);
    if (p.dtype == kFloat32) {
      static_cast<uint32_t*>(out)[2 * i] = FloatBits(x);
    } else {
      static_cast<uint16_t*>(out)[2 * i] = p.dtype == kFloat16 ? FloatToHalf(x) : FloatToBFloat16(x);
    }
  }
  return !bad;
}

}  // namespace hyperonnx
