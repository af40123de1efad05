// DecodeWeights, CUDA kernel: the launcher shared by the onnxruntime op (decode_weights_cuda_op.cc)
// and the exported C entry point hyperonnx_cuda_decode (decode_weights_cuda.cu). No CUDA or ORT
// headers here: the op's .cc file compiles with the host compiler only.
#pragma once

#include <cstdint>
#include <string>

#include "hyperonnx/decode_weights_format.h"

namespace hyperonnx::cuda {

// How pairs are decoded. kTable: each block materialises the codebook (in the output type) in
// shared memory and looks indices up; kDirect: every pair runs the FORMAT.md §3 arithmetic.
// kAuto picks by the codebook's size against the tensor's (both give the same bits).
enum class Mode : int { kAuto = 0, kDirect = 1, kTable = 2 };

// True when an index can be out of range (rule 5): (n + 1) * (C + 1) < 2^bits. When false the
// decoder needs no flag and no synchronisation.
bool NeedsRangeCheck(const WindingParams& p);

// Decodes p.num_elements values from `seed` (device, p.seed_bytes bytes) into `out` (device,
// aligned to two output elements) on `stream` (a cudaStream_t). p must come from ValidateWinding
// and the seed length from ValidateSeed. When `flag` (device, one uint32) is given it is zeroed
// and set to nonzero by any index >= codebook_size; the launch is asynchronous. Returns "" or the
// CUDA error.
std::string Launch(const WindingParams& p, const uint8_t* seed, void* out, uint32_t* flag, void* stream,
                   Mode mode = Mode::kAuto);

// Waits for `stream` and reads `flag`: *bad = whether some index was out of range. "" or the CUDA error.
std::string ReadFlag(const uint32_t* flag, void* stream, bool* bad);

}  // namespace hyperonnx::cuda
