// DecodeWeights, CPU kernel: the op and kernel classes registered by custom_ops/ops.cc.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "codec_cpu.h"
#include "hyperonnx/decode_weights_format.h"
#include "hyperonnx/ort_api.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define HYPERONNX_AVX2 1  // the hot loops have AVX2 variants, chosen at run time
#endif

namespace hyperonnx {

#ifdef HYPERONNX_AVX2
bool HasAvx2();  // this CPU has AVX2 and HYPERONNX_NO_AVX2 is not set
bool HasAvx512();  // and AVX-512 F/DQ/BW/VL, and HYPERONNX_NO_AVX512 is not set
#endif

// Adds to the pairs decoded by a vector loop (AVX2, AVX-512, or NEON on aarch64) since the library
// was loaded, which the exported HyperonnxVectorPairs() reports: the way to see which loop ran.
void CountVectorPairs(uint64_t pairs);

// A DecodeWeights node's attributes as onnxruntime gives them, read and validated (FORMAT.md §5
// rules 2-3, §7.1, the input count per codec). The CPU and CUDA ops both create kernels from it.
struct NodeParams {
  bool lattice = false;  // codec lattice: lattice_params
  bool trellis = false;  // codec trellis: trellis_params; neither: winding
  std::vector<int64_t> shape;
  WindingParams winding{};
  LatticeParams lattice_params{};
  TrellisParams trellis_params{};
};

// "" and `node` filled, or the message naming the rule broken. `count_inputs`: check the
// DecodeWeights input count per codec (the fused operators check their seed inputs themselves).
std::string ReadNode(const Ort::ConstKernelInfo& info, NodeParams* node, bool count_inputs = true);

// The codec's decode primitive for a validated node (codec_cpu.h).
std::unique_ptr<PairDecoder> MakePairDecoder(const NodeParams& node);

// FORMAT.md rules 2 (scales present exactly for lattice and trellis), 4 and 6 on the seed and scales a kernel
// receives (`scales` empty when absent): "" or the message naming the rule. Rules 5 and 7 (the
// indices) are the decoder's: IndexRuleError is their message.
std::string ValidateInputs(const NodeParams& node, const Ort::ConstValue& seed, const Ort::ConstValue& scales);
std::string IndexRuleError(const NodeParams& node);

// The whole tensor, in tasks on onnxruntime's thread pool; true when an index broke rule 5 / 7.
bool DecodeTensor(const Ort::KernelContext& context, const PairDecoder& decoder, const uint8_t* seed,
                  const uint16_t* scales, void* out);

// An INVALID_ARGUMENT status "<op> node '<node>': <message> (docs/FORMAT.md)".
OrtStatusPtr FailNode(const char* op, const std::string& node, const std::string& message);

class DecodeWeightsCpuKernel {
 public:
  DecodeWeightsCpuKernel(std::string name, NodeParams node);
  ~DecodeWeightsCpuKernel();
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  std::string name_;
  NodeParams node_;
  std::unique_ptr<PairDecoder> decoder_;
};

// The output types of DecodeWeights (its dtype attribute). Each backend registers one op per type,
// all named DecodeWeights, and InferOutputShape gives a node its type, which picks the op:
// onnxruntime before 1.22 refuses a single op whose output type only its shape inference knows.
constexpr ONNXTensorElementDataType kOutputTypes[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
                                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16};

struct DecodeWeightsCpuOp : Ort::CustomOpBase<DecodeWeightsCpuOp, DecodeWeightsCpuKernel, /*WithStatus=*/true> {
  // Rule 1 (the opset version) cannot be checked here: onnxruntime builds one schema per custom op
  // name and binds every ai.hyperonnx version to it, and a kernel cannot see the model's opsets.
  // hyperonnx.InferenceSession checks it before onnxruntime sees the model.
  explicit DecodeWeightsCpuOp(ONNXTensorElementDataType output) : output_(output) {
    // the op's struct version: onnxruntime refuses one newer than itself (the headers' 21)
    OrtCustomOp::version = kOrtApiVersion;
    start_ver_ = kMinFormatVersion;
    end_ver_ = kFormatVersion;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return kOpName; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  // seed, and scales (lattice nodes only): every op of this name must declare the same inputs
  // (static: the CUDA op declares these).
  static size_t GetInputTypeCount() { return 2; }
  static ONNXTensorElementDataType GetInputType(size_t i) {
    return i == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  }
  static OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) {
    return i == 0 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return output_; }
  static OrtStatusPtr InferOutputShape(Ort::ShapeInferContext& context);

 private:
  ONNXTensorElementDataType output_;
};

}  // namespace hyperonnx
