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
// The ORT API version the library is compiled against and needs at run time (onnxruntime 1.21).
constexpr uint32_t kOrtApiVersion = ORT_API_VERSION;
}  // namespace hyperonnx
