// DecodeWeights for the CUDAExecutionProvider: the onnxruntime op and kernel classes, appended to
// the registration table of custom_ops/ops.cc by AppendOps. The kernel validates on the host as the
// CPU kernel does (ValidateWinding at kernel creation, ValidateSeed per run), decodes on the compute
// stream onnxruntime hands it into the output it allocates, and checks rule 5 through a one-word
// device flag taken from the context's allocator before it returns. That check waits for the
// stream, so a constant seed (an initializer: its bytes cannot change) is checked on its first
// run only, and later runs stay asynchronous.
#include <atomic>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/decode_weights_cpu.h"
#include "cuda/decode_weights_cuda.h"
#include "hyperonnx/decode_weights_format.h"
#include "hyperonnx/ort_api.h"

namespace hyperonnx::cuda {
namespace {

OrtStatusPtr Fail(const std::string& node, const std::string& message) {
  const std::string text = "DecodeWeights node '" + Printable(node) + "': " + message + " (docs/FORMAT.md section 5)";
  return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, text.c_str());
}

OrtStatusPtr CudaFail(const std::string& node, const std::string& message) {
  const std::string text = "DecodeWeights node '" + Printable(node) + "' (CUDA): " + message;
  return Ort::GetApi().CreateStatus(ORT_EP_FAIL, text.c_str());
}

// The attribute reading of the CPU op (decode_weights_cpu.cc), with the same messages.
template <typename R>
bool ReadAttribute(const Ort::ConstKernelInfo& info, const char* name, R* out, std::string* error,
                   const char* type) {
  try {
    if constexpr (std::is_same_v<R, std::vector<int64_t>> || std::is_same_v<R, std::vector<float>>) {
      *out = info.GetAttributes<typename R::value_type>(name);
    } else {
      *out = info.GetAttribute<R>(name);
    }
    return true;
  } catch (const std::exception& e) {
    *error = std::string("rule 2: attribute ") + name + " is missing or not of type " + type + " (" + e.what() + ")";
    return false;
  }
}

std::string ReadWinding(const Ort::ConstKernelInfo& info, WindingAttributes* a) {
  std::string error;
  if (!ReadAttribute(info, "codec", &a->codec, &error, "string") ||
      !ReadAttribute(info, "shape", &a->shape, &error, "ints") ||
      !ReadAttribute(info, "dtype", &a->dtype, &error, "int") ||
      !ReadAttribute(info, "bits", &a->bits, &error, "int") ||
      !ReadAttribute(info, "points", &a->points, &error, "int") ||
      !ReadAttribute(info, "rings", &a->rings, &error, "int") ||
      !ReadAttribute(info, "center", &a->center, &error, "floats") ||
      !ReadAttribute(info, "side", &a->side, &error, "float") ||
      !ReadAttribute(info, "ring_scales", &a->ring_scales, &error, "floats")) {
    return error;
  }
  return "";
}

class DecodeWeightsCudaKernel {
 public:
  DecodeWeightsCudaKernel(std::string name, std::vector<int64_t> shape, const WindingParams& params,
                          bool constant_seed)
      : name_(std::move(name)), shape_(std::move(shape)), params_(params), constant_seed_(constant_seed) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* raw_context) {
    try {
      Ort::KernelContext context(raw_context);
      Ort::ConstValue input = context.GetInput(0);
      const Ort::TensorTypeAndShapeInfo info = input.GetTensorTypeAndShapeInfo();
      if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) {
        return Fail(name_, "rule 4: seed must be a rank-1 uint8 tensor");
      }
      const std::vector<int64_t> dims = info.GetShape();
      const std::string seed_error = ValidateSeed(params_, dims.size(), dims.data());
      if (!seed_error.empty()) return Fail(name_, seed_error);
      Ort::UnownedValue output = context.GetOutput(0, shape_.data(), shape_.size());
      if (params_.num_elements == 0) return nullptr;
      void* stream = context.GetGPUComputeStream();
      const uint8_t* seed = input.GetTensorData<uint8_t>();
      void* out = output.GetTensorMutableRawData();
      // Nothing to wait for when every 2^bits index is in the codebook, or this constant seed
      // already passed rule 5.
      if (!NeedsRangeCheck(params_) || (constant_seed_ && checked_seed_.load() == seed)) {
        const std::string error = Launch(params_, seed, out, nullptr, stream);
        return error.empty() ? nullptr : CudaFail(name_, error);
      }
      // Rule 5: a device flag from the allocator of the output's device, read before returning.
      OrtAllocator* allocator = nullptr;
      Ort::ThrowOnError(Ort::GetApi().KernelContext_GetAllocator(raw_context, output.GetTensorMemoryInfo(), &allocator));
      std::unique_ptr<OrtAllocator, void (*)(OrtAllocator*)> owned(allocator, [](OrtAllocator* a) {
        Ort::GetApi().ReleaseAllocator(a);
      });
      void* flag = allocator->Alloc(allocator, sizeof(uint32_t));
      if (flag == nullptr) return CudaFail(name_, "cannot allocate the range flag");
      std::string error = Launch(params_, seed, out, static_cast<uint32_t*>(flag), stream);
      uint32_t bad = 0;
      if (error.empty()) error = ReadFlag(static_cast<const uint32_t*>(flag), stream, &bad);
      allocator->Free(allocator, flag);  // after ReadFlag waited for the stream (or the launch failed)
      if (!error.empty()) return CudaFail(name_, error);
      if (bad) {
        return Fail(name_, "rule 5: a seed index is >= (points + 1) * (rings + 1) = " +
                               std::to_string(params_.codebook_size));
      }
      if (constant_seed_) checked_seed_.store(seed);
      return nullptr;
    } catch (const Ort::Exception& e) {
      return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
    }
  }

 private:
  std::string name_;
  std::vector<int64_t> shape_;
  WindingParams params_;
  const bool constant_seed_;
  std::atomic<const uint8_t*> checked_seed_{nullptr};  // the constant seed's buffer that passed rule 5
};

struct DecodeWeightsCudaOp : Ort::CustomOpBase<DecodeWeightsCudaOp, DecodeWeightsCudaKernel, /*WithStatus=*/true> {
  DecodeWeightsCudaOp() {
    start_ver_ = kFormatVersion;
    end_ver_ = kFormatVersion;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* raw_info, void** kernel) const {
    *kernel = nullptr;
    std::string name = "?";
    try {
      Ort::ConstKernelInfo info(raw_info);
      name = info.GetNodeName();
      WindingAttributes attrs;
      WindingParams params;
      std::string error = ReadWinding(info, &attrs);
      if (error.empty()) error = ValidateWinding(attrs, &params);
      if (!error.empty()) return Fail(name, error);
      int constant = 0;
      const OrtValue* value = nullptr;
      if (OrtStatus* status = api.KernelInfoGetConstantInput_tensor(raw_info, 0, &constant, &value)) {
        api.ReleaseStatus(status);  // not known to be constant: check every run
        constant = 0;
      }
      *kernel = new DecodeWeightsCudaKernel(name, attrs.shape, params, constant != 0);
      return nullptr;
    } catch (const std::bad_alloc&) {
      return api.CreateStatus(ORT_FAIL, ("DecodeWeights node '" + Printable(name) + "': out of memory").c_str());
    } catch (const std::exception& e) {
      return api.CreateStatus(ORT_FAIL, ("DecodeWeights node '" + Printable(name) + "': " + e.what()).c_str());
    }
  }
  const char* GetName() const { return kOpName; }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  size_t GetInputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }
  static OrtStatusPtr InferOutputShape(Ort::ShapeInferContext& context) {
    return DecodeWeightsCpuOp::InferOutputShape(context);
  }
};

}  // namespace

// Called from RegisterCustomOps; makes no CUDA call, so CPU-only machines load the library.
void AppendOps(std::vector<const OrtCustomOp*>& ops) {
  static const DecodeWeightsCudaOp decode_weights_cuda;
  ops.push_back(&decode_weights_cuda);
}

}  // namespace hyperonnx::cuda
