// The trellis codec's encoder search (hyperonnx.codec.trellis.viterbi in C++), exported for the
// Python encoder as HyperonnxTrellisViterbi. The walks are the reference's bit for bit: the same
// float32 operations in the same order (-ffp-contract=off), ties to the first state, and every
// group is searched on its own, so any number of threads gives the same bytes.
//
// Backwards in time, window_t = ((window_{t+1} << k) | chunk_t) mod 2^L: the best predecessor of
// window_t is the least of cost[(j << (L - k)) | (window_t >> k)] over j < 2^k, an elementwise
// minimum of 2^k contiguous blocks of the cost array (AVX2 when the CPU has it).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "decode_weights_cpu.h"

#ifdef HYPERONNX_AVX2
#include <immintrin.h>
#endif

namespace hyperonnx {
namespace {

constexpr uint32_t kWrap = 16;  // weights each side of the wrap in the first pass (trellis._WRAP)

struct Search {
  uint32_t k, window, states, low;
  const float* h;          // 2^L values
  std::vector<float> cost;  // 2^L
  std::vector<float> best;  // 2^(L-k) + 8 (the vector loop reads 8 from any block start)
  std::vector<uint8_t> back;  // (G) x 2^(L-k)

  Search(uint32_t k_, uint32_t window_, const float* h_, uint32_t group)
      : k(k_), window(window_), states(1u << window_), low(1u << (window_ - k_)), h(h_),
        cost(states), best(low + 8), back(size_t{group} * low) {}

  // cost[s] = best[s >> k] + (x - h[s])^2 over all states
  void Step(float x) {
#ifdef HYPERONNX_AVX2
    if (HasAvx2() && states >= 8) return StepAvx2(x);
#endif
    for (uint32_t s = 0; s < states; ++s) {
      const float d = x - h[s];
      const float dd = d * d;
      cost[s] = best[s >> k] + dd;
    }
  }

  // best[c] = min over j of cost[j * low + c] (first j on ties), back pointers to row
  void Reduce(uint8_t* row) {
#ifdef HYPERONNX_AVX2
    if (HasAvx2() && low >= 8) return ReduceAvx2(row);
#endif
    const uint32_t blocks = 1u << k;
    for (uint32_t c = 0; c < low; ++c) {
      float m = cost[c];
      uint32_t arg = 0;
      for (uint32_t j = 1; j < blocks; ++j) {
        const float v = cost[size_t{j} * low + c];
        if (v < m) {
          m = v;
          arg = j;
        }
      }
      best[c] = m;
      row[c] = static_cast<uint8_t>(arg);
    }
  }

#ifdef HYPERONNX_AVX2
  __attribute__((target("avx2"))) void StepAvx2(float x) {
    const __m256 vx = _mm256_set1_ps(x);
    const __m256i lanes = _mm256_srlv_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(k)));
    for (uint32_t s = 0; s < states; s += 8) {
      const __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(best.data() + (s >> k)), lanes);
      const __m256 d = _mm256_sub_ps(vx, _mm256_loadu_ps(h + s));
      _mm256_storeu_ps(cost.data() + s, _mm256_add_ps(b, _mm256_mul_ps(d, d)));
    }
  }

  __attribute__((target("avx2"))) void ReduceAvx2(uint8_t* row) {
    const uint32_t blocks = 1u << k;
    for (uint32_t c = 0; c < low; c += 8) {
      __m256 m = _mm256_loadu_ps(cost.data() + c);
      __m256i arg = _mm256_setzero_si256();
      for (uint32_t j = 1; j < blocks; ++j) {
        const __m256 v = _mm256_loadu_ps(cost.data() + size_t{j} * low + c);
        const __m256 less = _mm256_cmp_ps(v, m, _CMP_LT_OQ);
        m = _mm256_blendv_ps(m, v, less);
        arg = _mm256_blendv_epi8(arg, _mm256_set1_epi32(static_cast<int>(j)), _mm256_castps_si256(less));
      }
      _mm256_storeu_ps(best.data() + c, m);
      alignas(32) int32_t args[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(args), arg);
      for (int i = 0; i < 8; ++i) row[c + i] = static_cast<uint8_t>(args[i]);
    }
  }
#endif

  // trellis._walk: the walk of least squared error through x[0, n); `shared` < 2^(L-k) fixes
  // the low L-k bits of window_0 and the high ones of window_{n-1}, or is -1 (free ends).
  void Walk(const float* x, uint32_t n, int64_t shared, uint32_t* out) {
    const float inf = std::numeric_limits<float>::infinity();
    std::fill(best.begin(), best.end(), 0.0f);
    Step(x[n - 1]);  // best = 0: cost = (x - h)^2 + 0, the same bits as (x - h)^2
    if (shared >= 0) {
      for (uint32_t s = 0; s < states; ++s) {
        if ((s >> k) != static_cast<uint32_t>(shared)) cost[s] = inf;
      }
    }
    for (uint32_t t = n - 1; t-- > 0;) {
      Reduce(back.data() + size_t{t} * low);
      Step(x[t]);
    }
    if (shared >= 0) {
      for (uint32_t s = 0; s < states; ++s) {
        if ((s & (low - 1)) != static_cast<uint32_t>(shared)) cost[s] = inf;
      }
    }
    uint32_t s = 0;
    for (uint32_t i = 1; i < states; ++i) {
      if (cost[i] < cost[s]) s = i;
    }
    for (uint32_t t = 0; t < n; ++t) {
      out[t] = s;
      if (t + 1 < n) s = (uint32_t{back[size_t{t} * low + (s >> k)]} << (window - k)) | (s >> k);
    }
  }

  // trellis.viterbi for one group of g weights
  void Group(const float* x, uint32_t g, uint32_t* out, std::vector<float>& across, std::vector<uint32_t>& path) {
    const uint32_t wrap = std::min(kWrap, g / 2);
    across.assign(x + g - wrap, x + g);
    across.insert(across.end(), x, x + wrap);
    path.resize(2 * wrap);
    Walk(across.data(), 2 * wrap, -1, path.data());
    Walk(x, g, path[wrap] & (low - 1), out);
  }
};

}  // namespace
}  // namespace hyperonnx

// The walks of `groups` groups of `group` normalised weights (row-major float32), `k` bits per
// weight and an L = `window` bit window, on `threads` threads; windows into `out` (groups x group
// uint32). Returns null, or a static message when an argument is out of range.
extern "C" HYPERONNX_EXPORT const char* HyperonnxTrellisViterbi(const float* targets, uint64_t groups, uint32_t group,
                                                                uint32_t k, uint32_t window, uint32_t threads,
                                                                uint32_t* out) {
  using namespace hyperonnx;
  if (k < kTrellisMinBits || k > kTrellisMaxBits || window < k || window > kTrellisMaxWindow) {
    return "trellis search: need 1 <= k <= 8 and k <= window <= 16";
  }
  if (group < 2 || group > kLatticeMaxGroup || uint64_t{k} * group < window) {
    return "trellis search: need 2 <= group <= 65536 and k * group >= window";
  }
  if (threads < 1) return "trellis search: threads must be >= 1";
  if (groups == 0) return nullptr;
  if (targets == nullptr || out == nullptr) return "trellis search: null buffer";
  std::vector<float> h(size_t{1} << window);
  TrellisParams p{};
  p.window = window;
  p.unit_u = std::ldexp(1.0f, -static_cast<int>(window));
  for (uint32_t s = 0; s < h.size(); ++s) h[s] = TrellisValue(p, s);
  std::atomic<uint64_t> next{0};
  auto work = [&] {
    Search search(k, window, h.data(), group);
    std::vector<float> across;
    std::vector<uint32_t> path;
    for (uint64_t q; (q = next.fetch_add(1)) < groups;) {
      search.Group(targets + q * group, group, out + q * group, across, path);
    }
  };
  const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(threads, groups));
  std::vector<std::thread> pool;
  for (uint32_t i = 1; i < n; ++i) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  return nullptr;
}
