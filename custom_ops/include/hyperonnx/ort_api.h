// The one way this library includes the ONNX Runtime C++ API: the API pointer is set by
// RegisterCustomOps (ORT_API_MANUAL_INIT), never looked up through a linked libonnxruntime.
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include "onnxruntime_cxx_api.h"

#if defined(_WIN32)
#define HYPERONNX_EXPORT __declspec(dllexport)
#else
#define HYPERONNX_EXPORT __attribute__((visibility("default")))
#endif

namespace hyperonnx {
// The ORT API version the library asks onnxruntime for, so the oldest onnxruntime it runs on: 22.
// The API functions it calls are all in version 17 (the newest: KernelContext_ParallelFor and the
// ShapeInferContext_* functions of InferOutputShape; the OrtApi members read in g++'s
// -fdump-tree-optimized of every source), but onnxruntime before 1.22 refuses to register an op
// whose output type only its shape inference knows (DecodeWeights: float32/16/bfloat16 by the
// dtype attribute): "There must be one (and only one) dynamic typed input" (measured: 1.17.0 to
// 1.21.0 refuse it, 1.22.0 runs every kernel test). Asking for 22 turns that into a clear error.
// `make test-ort-versions` runs the kernel tests under onnxruntime 1.22.0 and the newest.
constexpr uint32_t kOrtApiVersion = 22;
}  // namespace hyperonnx
