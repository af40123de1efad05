// The trellis codec's encoder search (hyperonnx.codec.trellis.viterbi in C++), exported for the
// Python encoder as HyperonnxTrellisViterbi. The walks are the reference's bit for bit: the same
// float32 operations in the same order (-ffp-contract=off), ties to the first state, and every
// group is searched on its own, so any number of threads gives the same bytes.
//
// Backwards in time, window_t = ((window_{t+1} << k) | chunk_t) mod 2^L: the best predecessor of
// window_t is the least of cost[(j << (L - k)) | (window_t >> k)] over j < 2^k, an elementwise
// minimum over 2^k contiguous blocks of states (AVX2 when the CPU has it).
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

#ifdef HYPERONNX_AVX2
// AVX-512F for the search's inner loop (not HYPERONNX_NO_AVX2: that forces the scalar loops).
bool HasAvx512() {
  static const bool has = HasAvx2() && __builtin_cpu_supports("avx512f") != 0;
  return has;
}
#endif

constexpr uint32_t kWrap = 16;  // weights each side of the wrap in the first pass (trellis._WRAP)
constexpr uint32_t kTrellisMaxSearchGroup = 4096;  // a thread keeps (G + 1) * 2^(L-k) floats (trellis.MAX_SEARCH_GROUP)

// The search of one thread. The forward pass keeps only best_t[c] = min over j of
// cost_t[(j << (L - k)) | c] for every step (cost_t itself is never stored: each candidate is
// best_{t+1}[state >> k] + (x_t - h[state])^2, computed where the minimum needs it); the
// traceback recomputes the 2^k candidates of the one state it follows, in the same operations,
// and takes the first least one, as the reference's argmin does.
struct Search {
  uint32_t k, window, states, low;
  const float* h;            // 2^L values
  // h again in 2^k rows of 2^(L-k) + 16 (row j: the states (j << (L-k)) | c): the vector loop
  // reads all rows at once, and rows 2^(L-k) floats apart would share their L1 cache sets
  std::vector<float> padded;
  std::vector<float> best;   // (G + 1) rows of 2^(L-k) + 16 floats (vector loads read 16 from any start)
  std::vector<float> cost;   // 2^L: the first and last steps' costs, materialised
  size_t row;                // floats per row of best

  Search(uint32_t k_, uint32_t window_, const float* h_, uint32_t group)
      : k(k_), window(window_), states(1u << window_), low(1u << (window_ - k_)), h(h_),
        padded((size_t{1} << k_) * (low + 16)),
        best((size_t{group} + 1) * ((size_t{1} << (window_ - k_)) + 16)), cost(states),
        row((size_t{1} << (window_ - k_)) + 16) {
    for (uint32_t s = 0; s < states; ++s) padded[size_t{s >> (window - k)} * (low + 16) + (s & (low - 1))] = h[s];
  }

  float* Best(uint32_t t) { return best.data() + size_t{t} * row; }

  // The candidate cost of `state` at a step whose successor row is `next` (x the step's target).
  float Candidate(const float* next, float x, uint32_t state) const {
    const float d = x - h[state];
    const float dd = d * d;
    return next[state >> k] + dd;
  }

  // out[c] = min over j of Candidate(next, x, (j << (L-k)) | c)
  void Fold(const float* next, float x, float* out) {
#ifdef HYPERONNX_AVX2
    if (HasAvx512() && low >= 16) return FoldAvx512(next, x, out);
    if (HasAvx2() && low >= 8) return FoldAvx2(next, x, out);
#endif
    const uint32_t blocks = 1u << k;
    for (uint32_t c = 0; c < low; ++c) {
      float m = Candidate(next, x, c);
      for (uint32_t j = 1; j < blocks; ++j) m = std::min(m, Candidate(next, x, (j << (window - k)) | c));
      out[c] = m;
    }
  }

  // cost[s] = Candidate(next, x, s) for every state
  void Costs(const float* next, float x) {
#ifdef HYPERONNX_AVX2
    if (HasAvx2() && states >= 8) return CostsAvx2(next, x);
#endif
    for (uint32_t state = 0; state < states; ++state) cost[state] = Candidate(next, x, state);
  }

#ifdef HYPERONNX_AVX2
  __attribute__((target("avx2"))) void CostsAvx2(const float* next, float x) {
    const __m256 vx = _mm256_set1_ps(x);
    const __m256i lanes = _mm256_srlv_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(k)));
    for (uint32_t state = 0; state < states; state += 8) {
      const __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(next + (state >> k)), lanes);
      const __m256 d = _mm256_sub_ps(vx, _mm256_loadu_ps(h + state));
      _mm256_storeu_ps(cost.data() + state, _mm256_add_ps(b, _mm256_mul_ps(d, d)));
    }
  }

  __attribute__((target("avx2"))) void FoldAvx2(const float* next, float x, float* out) {
    const uint32_t blocks = 1u << k;
    const __m256 vx = _mm256_set1_ps(x);
    const __m256i lanes = _mm256_srlv_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(k)));
    for (uint32_t c = 0; c < low; c += 8) {
      __m256 m = _mm256_set1_ps(std::numeric_limits<float>::infinity());
      for (uint32_t j = 0; j < blocks; ++j) {
        const uint32_t s = (j << (window - k)) | c;
        const __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(next + (s >> k)), lanes);
        const __m256 d = _mm256_sub_ps(vx, _mm256_loadu_ps(padded.data() + size_t{j} * (low + 16) + c));
        m = _mm256_min_ps(m, _mm256_add_ps(b, _mm256_mul_ps(d, d)));  // the value: order-free
      }
      _mm256_storeu_ps(out + c, m);
    }
  }

  // FoldAvx2 on 16 lanes (AVX-512 CPUs: half the instructions for the same minima). GCC 12's
  // avx512fintrin.h warns about its own _mm512_undefined_* under -Wextra.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
  __attribute__((target("avx512f"))) void FoldAvx512(const float* next, float x, float* out) {
    const uint32_t blocks = 1u << k;
    const __m512 vx = _mm512_set1_ps(x);
    const __m512i lanes = _mm512_srlv_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int>(k)));
    for (uint32_t c = 0; c < low; c += 16) {
      __m512 m = _mm512_set1_ps(std::numeric_limits<float>::infinity());
      for (uint32_t j = 0; j < blocks; ++j) {
        const uint32_t s = (j << (window - k)) | c;
        const __m512 b = _mm512_permutexvar_ps(lanes, _mm512_loadu_ps(next + (s >> k)));
        const __m512 d = _mm512_sub_ps(vx, _mm512_loadu_ps(padded.data() + size_t{j} * (low + 16) + c));
        m = _mm512_min_ps(m, _mm512_add_ps(b, _mm512_mul_ps(d, d)));
      }
      _mm512_storeu_ps(out + c, m);
    }
  }
#pragma GCC diagnostic pop
#endif

  // trellis._walk: the walk of least squared error through x[0, n); `shared` < 2^(L-k) fixes
  // the low L-k bits of window_0 and the high ones of window_{n-1}, or is -1 (free ends).
  void Walk(const float* x, uint32_t n, int64_t shared, uint32_t* out) {
    const float inf = std::numeric_limits<float>::infinity();
    const uint32_t blocks = 1u << k;
    // step n-1: cost = (x - h)^2 (+0 from a zero row: the same bits), masked by the tail-biting
    // constraint to the 2^k states (shared << k) | e
    std::fill(Best(n), Best(n) + row, 0.0f);
    const auto first = [&](uint32_t state) {
      return shared >= 0 && (state >> k) != static_cast<uint32_t>(shared) ? inf : Candidate(Best(n), x[n - 1], state);
    };
    if (shared < 0) {
      Fold(Best(n), x[n - 1], Best(n - 1));
    } else {
      std::fill(Best(n - 1), Best(n - 1) + row, inf);
      for (uint32_t e = 0; e < blocks; ++e) {
        const uint32_t state = (static_cast<uint32_t>(shared) << k) | e;
        float& b = Best(n - 1)[state & (low - 1)];
        b = std::min(b, Candidate(Best(n), x[n - 1], state));
      }
    }
    for (uint32_t t = n - 2; t > 0; --t) Fold(Best(t + 1), x[t], Best(t));  // n >= 2 (Group)
    // step 0: the first least state; tail-biting: among the states (j << (L-k)) | shared
    uint32_t s = 0;
    if (shared >= 0) {
      s = static_cast<uint32_t>(shared);
      float m = Candidate(Best(1), x[0], s);
      for (uint32_t j = 1; j < blocks; ++j) {
        const uint32_t state = (j << (window - k)) | static_cast<uint32_t>(shared);
        const float v = Candidate(Best(1), x[0], state);
        if (v < m) {
          m = v;
          s = state;
        }
      }
    } else {
      Costs(Best(1), x[0]);
      float m = cost[0];
      for (uint32_t i = 1; i < states; ++i) {
        if (cost[i] < m) {
          m = cost[i];
          s = i;
        }
      }
    }
    for (uint32_t t = 0; t < n; ++t) {
      out[t] = s;
      if (t + 1 == n) break;
      // the predecessor of window_t: the first least candidate of step t + 1
      const uint32_t c = s >> k;
      uint32_t arg = 0;
      float m = 0.0f;
      for (uint32_t j = 0; j < blocks; ++j) {
        const uint32_t state = (j << (window - k)) | c;
        const float v = t + 1 == n - 1 ? first(state) : Candidate(Best(t + 2), x[t + 1], state);
        if (j == 0 || v < m) {
          m = v;
          arg = j;
        }
      }
      s = (arg << (window - k)) | c;
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
  if (group < 2 || group > kTrellisMaxSearchGroup || uint64_t{k} * group < window) {
    return "trellis search: need 2 <= group <= 4096 and k * group >= window";
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
