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
// The ORT API version the library asks onnxruntime for, and the version of its OrtCustomOp structs
// (onnxruntime refuses an op struct newer than itself): 20, so onnxruntime 1.20 and later.
// The API functions it calls are all in version 17 (the newest: KernelContext_ParallelFor and the
// ShapeInferContext_* functions of InferOutputShape; the OrtApi members read in g++'s
// -fdump-tree-optimized of every source). Measured below that: 1.18.0 types a node by the first
// DecodeWeights op registered instead of InferOutputShape (float16/bfloat16 nodes fail); 1.19.0
// decodes correctly, but its Python API cannot bind a bfloat16 output, so the kernel tests cannot
// cover it. `make test-ort-versions` runs them under onnxruntime 1.20.0 and the newest.
constexpr uint32_t kOrtApiVersion = 20;
}  // namespace hyperonnx
