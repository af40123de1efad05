// CPU kernels' onnxruntime thread-pool tasks: the partition of a tensor's whole pairs (DecodeWeights,
// both codecs' decoders) and the fused operators' tasks (ParallelTasks).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "hyperonnx/ort_api.h"

namespace hyperonnx {

// Pairs per task: a multiple of 8, so every task starts on a whole byte of the seed at any width.
constexpr uint64_t kPairsPerTask = uint64_t{1} << 16;

// Runs `decode(begin, end)` over the pairs [0, whole_pairs) in tasks of kPairsPerTask pairs, on
// onnxruntime's thread pool when there is more than one. `decode` returns true when it met an
// index outside the codebook; so does this, once every task has run.
template <typename Decode>
bool RunPairTasks(const Ort::KernelContext& context, uint64_t whole_pairs, const Decode& decode) {
  struct Shared {
    const Decode* decode;
    uint64_t whole_pairs;
    std::atomic<bool> bad{false};
  };
  Shared shared{&decode, whole_pairs};
  void (*run)(void*, size_t) = [](void* data, size_t task) {
    auto* s = static_cast<Shared*>(data);
    const uint64_t begin = uint64_t{task} * kPairsPerTask;
    const uint64_t end = std::min<uint64_t>(begin + kPairsPerTask, s->whole_pairs);
    if (begin < end && (*s->decode)(begin, end)) s->bad.store(true, std::memory_order_relaxed);
  };
  const uint64_t tasks = (whole_pairs + kPairsPerTask - 1) / kPairsPerTask;
  if (tasks > 1) {
    context.ParallelFor(run, static_cast<size_t>(tasks), 0, &shared);
  } else if (tasks == 1) {
    run(&shared, 0);
  }
  return shared.bad.load();
}

constexpr uint64_t kMinParallelWork = 1 << 18;  // multiply-adds (or decoded weights) worth the thread pool

// Runs f(task) for task < tasks on onnxruntime's pool, or in this thread when the whole call does
// less than kMinParallelWork multiply-adds (a pool dispatch costs more than such small work);
// false when a task threw (out of memory).
template <typename F>
bool ParallelTasks(const Ort::KernelContext& context, size_t tasks, uint64_t work, const F& f) {
  struct Shared {
    const F* f;
    std::atomic<bool> failed{false};
  };
  Shared shared{&f};
  void (*run)(void*, size_t) = [](void* data, size_t task) {
    auto* s = static_cast<Shared*>(data);
    try {
      (*s->f)(task);
    } catch (...) {
      s->failed.store(true);
    }
  };
  if (tasks > 1 && work >= kMinParallelWork) {
    context.ParallelFor(run, tasks, 0, &shared);
  } else {
    for (size_t t = 0; t < tasks; ++t) run(&shared, t);
  }
  return !shared.failed.load();
}

}  // namespace hyperonnx
