// DecodeWeights for the CUDAExecutionProvider: the onnxruntime op and kernel classes, appended to
// the registration table of custom_ops/ops.cc by AppendOps. The kernel validates on the host as the
// CPU kernel does (ReadNode at kernel creation, the seed's and scales' shapes per run), decodes on
// the compute stream onnxruntime hands it into the output it allocates, and checks the run-time
// rules (5 for winding; 6's values and 7 for lattice) through a one-word device flag taken from
// the context's allocator before it returns. That check waits for the stream, so constant inputs
// (initializers: their bytes cannot change) are checked on their first run only, and later runs
// stay asynchronous.
#include <atomic>
#include <exception>
#include <memory>
#include <string>
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

// Rules 4 and 6 for the inputs of one run: "" or the message; `seed` and `scales` (lattice,
// trellis) then point at their device bytes.
std::string CheckInputs(Ort::KernelContext& context, const NodeParams& node, const uint8_t** seed,
                        const uint16_t** scales) {
  Ort::ConstValue seed_value = context.GetInput(0);
  const Ort::TensorTypeAndShapeInfo seed_info = seed_value.GetTensorTypeAndShapeInfo();
  if (seed_info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) return "rule 4: seed must be a rank-1 uint8 tensor";
  const std::vector<int64_t> dims = seed_info.GetShape();
  std::string error = node.lattice   ? ValidateSeed(node.lattice_params, dims.size(), dims.data())
                      : node.trellis ? ValidateSeed(node.trellis_params, dims.size(), dims.data())
                                     : ValidateSeed(node.winding, dims.size(), dims.data());
  if (!error.empty()) return error;
  *seed = seed_value.GetTensorData<uint8_t>();
  if (!node.lattice && !node.trellis) return "";
  Ort::ConstValue scales_value = context.GetInput(1);
  if (!scales_value) return "rule 2: this node has two inputs, seed and scales; scales is missing";
  const Ort::TensorTypeAndShapeInfo scales_info = scales_value.GetTensorTypeAndShapeInfo();
  if (scales_info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    return "rule 6: scales must be a rank-1 float16 tensor";
  }
  const std::vector<int64_t> scale_dims = scales_info.GetShape();
  error = node.trellis ? ValidateScalesShape(node.trellis_params, scale_dims.size(), scale_dims.data())
                       : ValidateScalesShape(node.lattice_params, scale_dims.size(), scale_dims.data());
  *scales = static_cast<const uint16_t*>(scales_value.GetTensorRawData());
  return error;
}

class DecodeWeightsCudaKernel {
 public:
  DecodeWeightsCudaKernel(std::string name, const NodeParams& node, bool constant_inputs)
      : name_(std::move(name)), node_(node), constant_inputs_(constant_inputs) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* raw_context) {
    try {
      Ort::KernelContext context(raw_context);
      const uint8_t* seed = nullptr;
      const uint16_t* scales = nullptr;
      const std::string input_error = CheckInputs(context, node_, &seed, &scales);
      if (!input_error.empty()) return Fail(name_, input_error);
      Ort::UnownedValue output = context.GetOutput(0, node_.shape.data(), node_.shape.size());
      const uint64_t count = node_.lattice   ? node_.lattice_params.num_elements
                             : node_.trellis ? node_.trellis_params.num_elements
                                             : node_.winding.num_elements;
      if (count == 0) return nullptr;
      void* stream = context.GetGPUComputeStream();
      void* out = output.GetTensorMutableRawData();
      const auto launch = [&](uint32_t* flag) {
        return node_.lattice   ? Launch(node_.lattice_params, seed, scales, out, flag, stream)
               : node_.trellis ? Launch(node_.trellis_params, seed, scales, out, flag, stream)
                               : Launch(node_.winding, seed, out, flag, stream);
      };
      // Nothing to wait for when every 2^bits winding index is in the codebook, or these constant
      // inputs already passed the run-time rules.
      if ((!node_.lattice && !node_.trellis && !NeedsRangeCheck(node_.winding)) ||
          (constant_inputs_ && checked_seed_.load() == seed && checked_scales_.load() == scales)) {
        const std::string error = launch(nullptr);
        return error.empty() ? nullptr : CudaFail(name_, error);
      }
      // Rules 5 (winding), 6 and 7 (lattice): a device flag from the allocator of the output's
      // device, read before returning.
      OrtAllocator* allocator = nullptr;
      Ort::ThrowOnError(Ort::GetApi().KernelContext_GetAllocator(raw_context, output.GetTensorMemoryInfo(), &allocator));
      std::unique_ptr<OrtAllocator, void (*)(OrtAllocator*)> owned(allocator, [](OrtAllocator* a) {
        Ort::GetApi().ReleaseAllocator(a);
      });
      void* flag = allocator->Alloc(allocator, sizeof(uint32_t));
      if (flag == nullptr) return CudaFail(name_, "cannot allocate the range flag");
      std::string error = launch(static_cast<uint32_t*>(flag));
      uint32_t bad = 0;
      if (error.empty()) error = ReadFlag(static_cast<const uint32_t*>(flag), stream, &bad);
      allocator->Free(allocator, flag);  // after ReadFlag waited for the stream (or the launch failed)
      if (!error.empty()) return CudaFail(name_, error);
      if (bad != 0) return Fail(name_, RuleBroken(bad));
      if (constant_inputs_) {
        checked_scales_.store(scales);
        checked_seed_.store(seed);
      }
      return nullptr;
    } catch (const Ort::Exception& e) {
      return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
    }
  }

 private:
  // The CPU kernel's messages (rule 6 first: a decoder checks it before reading the seed; the
  // GPU does not say which scale).
  std::string RuleBroken(uint32_t flag) const {
    if (node_.trellis) return "rule 6: a scale is Inf or NaN";
    if (!node_.lattice) {
      return "rule 5: a seed index is >= (points + 1) * (rings + 1) = " + std::to_string(node_.winding.codebook_size);
    }
    if (flag & kFlagBadScale) return "rule 6: a scale is Inf or NaN";
    return "rule 7: a seed step is >= 2^bits - 1 = " + std::to_string(node_.lattice_params.points);
  }

  std::string name_;
  NodeParams node_;
  const bool constant_inputs_;  // the seed (and scales) are initializers: their bytes cannot change
  // The constant inputs' buffers that passed the run-time rules.
  std::atomic<const uint8_t*> checked_seed_{nullptr};
  std::atomic<const uint16_t*> checked_scales_{nullptr};
};

// Whether input `index` is a constant initializer.
bool ConstantInput(const OrtApi& api, const OrtKernelInfo* info, size_t index) {
  int constant = 0;
  const OrtValue* value = nullptr;
  if (OrtStatus* status = api.KernelInfoGetConstantInput_tensor(info, index, &constant, &value)) {
    api.ReleaseStatus(status);  // not known to be constant: check every run
    return false;
  }
  return constant != 0;
}

struct DecodeWeightsCudaOp : Ort::CustomOpBase<DecodeWeightsCudaOp, DecodeWeightsCudaKernel, /*WithStatus=*/true> {
  explicit DecodeWeightsCudaOp(ONNXTensorElementDataType output) : output_(output) {
    OrtCustomOp::version = kOrtApiVersion;  // as the CPU op's
    start_ver_ = kMinFormatVersion;
    end_ver_ = kFormatVersion;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* raw_info, void** kernel) const {
    *kernel = nullptr;
    std::string name = "?";
    try {
      Ort::ConstKernelInfo info(raw_info);
      name = info.GetNodeName();
      NodeParams node;
      const std::string error = ReadNode(info, &node);
      if (!error.empty()) return Fail(name, error);
      const bool constant = ConstantInput(api, raw_info, 0) && (!(node.lattice || node.trellis) || ConstantInput(api, raw_info, 1));
      *kernel = new DecodeWeightsCudaKernel(name, node, constant);
      return nullptr;
    } catch (const std::bad_alloc&) {
      return api.CreateStatus(ORT_FAIL, ("DecodeWeights node '" + Printable(name) + "': out of memory").c_str());
    } catch (const std::exception& e) {
      return api.CreateStatus(ORT_FAIL, ("DecodeWeights node '" + Printable(name) + "': " + e.what()).c_str());
    }
  }
  const char* GetName() const { return kOpName; }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  // The CPU op's inputs (onnxruntime needs every op of one name to declare the same).
  size_t GetInputTypeCount() const { return DecodeWeightsCpuOp::GetInputTypeCount(); }
  ONNXTensorElementDataType GetInputType(size_t i) const { return DecodeWeightsCpuOp::GetInputType(i); }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return DecodeWeightsCpuOp::GetInputCharacteristic(i);
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return output_; }  // one op per kOutputTypes entry
  static OrtStatusPtr InferOutputShape(Ort::ShapeInferContext& context) {
    return DecodeWeightsCpuOp::InferOutputShape(context);
  }

 private:
  ONNXTensorElementDataType output_;
};

}  // namespace

// Called from RegisterCustomOps; makes no CUDA call, so CPU-only machines load the library.
void AppendOps(std::vector<const OrtCustomOp*>& ops) {
  static const DecodeWeightsCudaOp decode_weights_cuda[] = {
      DecodeWeightsCudaOp(kOutputTypes[0]), DecodeWeightsCudaOp(kOutputTypes[1]), DecodeWeightsCudaOp(kOutputTypes[2])};
  for (const DecodeWeightsCudaOp& op : decode_weights_cuda) ops.push_back(&op);
}

}  // namespace hyperonnx::cuda
