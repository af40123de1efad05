// DecodeWeights, CUDA kernel: the launcher shared by the onnxruntime op (decode_weights_cuda_op.cc)
// and the exported C entry point hyperonnx_cuda_decode (decode_weights_cuda.cu). No CUDA or ORT
// headers here: the op's .cc file compiles with the host compiler only.
#pragma once

#include <cstdint>
#include <string>

#include "hyperonnx/decode_weights_format.h"

namespace hyperonnx::cuda {

// How pairs are decoded. kTable: each block materialises a table in shared memory first (winding:
// the codebook in the output type; lattice: v(m) of FORMAT.md §7.3) and looks values up; kDirect:
// every pair runs the FORMAT.md arithmetic. kAuto picks (both give the same bits).
enum class Mode : int { kAuto = 0, kDirect = 1, kTable = 2 };

// Bits of the device flag a kernel sets for a node's run-time rules.
constexpr uint32_t kFlagBadIndex = 1;  // winding: an index >= (n+1)(C+1) (rule 5); lattice: a step >= N (rule 7)
constexpr uint32_t kFlagBadScale = 2;  // lattice, trellis: a NaN or +-Inf scale (rule 6)

// True when an index can be out of range (rule 5): (n + 1) * (C + 1) < 2^bits. When false the
// decoder needs no flag and no synchronisation. (A lattice seed always can: rule 7.)
bool NeedsRangeCheck(const WindingParams& p);

// Decodes p.num_elements values from `seed` (device, p.seed_bytes bytes) into `out` (device,
// aligned to two output elements) on `stream` (a cudaStream_t). p must come from ValidateWinding
// and the seed length from ValidateSeed. When `flag` (device, one uint32) is given it is zeroed
// and the kernel ors kFlagBadIndex into it for any index >= codebook_size; the launch is
// asynchronous. Returns "" or the CUDA error.
std::string Launch(const WindingParams& p, const uint8_t* seed, void* out, uint32_t* flag, void* stream,
                   Mode mode = Mode::kAuto);

// The same for a lattice node: p from ValidateLattice, `scales` (device, p.num_scales float16 bit
// patterns) of the length ValidateScales checked. The kernel checks rule 7 (kFlagBadIndex) and the
// scales' values (rule 6, kFlagBadScale) through `flag`.
std::string Launch(const LatticeParams& p, const uint8_t* seed, const uint16_t* scales, void* out, uint32_t* flag,
                   void* stream, Mode mode = Mode::kAuto);

// The same for a trellis node: p from ValidateTrellis, `scales` of the checked length. Every
// window is valid; the kernel sets kFlagBadScale for a NaN or +-Inf scale (rule 6).
std::string Launch(const TrellisParams& p, const uint8_t* seed, const uint16_t* scales, void* out, uint32_t* flag,
                   void* stream);

// Waits for `stream` and reads `flag` into *value (0: every rule held). "" or the CUDA error.
std::string ReadFlag(const uint32_t* flag, void* stream, uint32_t* value);

// The exported entry points' ending: `text` into `message` (`size` bytes, NUL-terminated,
// truncated), and `code` returned (0 done, 1 a FORMAT.md rule broken, 2 a CUDA error, 3 a bad
// argument).
int Report(char* message, uint64_t size, int code, const std::string& text);

}  // namespace hyperonnx::cuda
