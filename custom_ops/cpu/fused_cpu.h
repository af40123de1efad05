// Fused operators, CPU (docs/FORMAT.md §8): DecodeMatMul, DecodeGemm, DecodeGather, DecodeConv.
//
// Each keeps its weight encoded in memory: at kernel creation it reads the node's constant seed
// (and scales) through KernelInfoGetConstantInput_tensor, validates them whole (rules 2-7: the
// seed is scanned once, so a run never meets a bad index), and keeps onnxruntime's buffers. With
// Packing::kPacked (the default) MatMul / Gemm also transcode the weight once, there, into the
// layout their compute reads fastest: int8 compute the int8 quads of int8_cpu.h (Int8Packed),
// float compute a lattice weight's codes or steps (packed_cpu.h, FloatPacked; transB=0, G and N
// multiples of 64, AVX-512 VBMI); about a byte a weight beside the seed. Otherwise (Packing::kNone,
// other weights) a run decodes only what it computes with, through the codec's one decode
// primitive (codec_cpu.h):
// - MatMul / Gemm, few rows (<= kFewRows): each task owns a range of the weight's rows and
//   decodes them front to back, segment by segment, into an L1-sized buffer consumed at once by
//   an AXPY over every activation row into the task's partial output (summed at the end); for
//   transB each task owns output columns and takes dot products. The seed is read once per call;
// - MatMul / Gemm, many rows: each task decodes a kKc x kNb panel into an L2-resident buffer once
//   per call and runs a 6 x 16 register-blocked FMA micro-kernel over all rows (6 x 64 with
//   AVX-512, packed_cpu.h: Panel64Gemm);
// - Gather: only the rows asked for, straight into the output;
// - Conv: one group's weights decoded once per call (one layer's block, never the model's
//   weights), then im2col tiles (1x1 stride-1 convolutions copy input rows) and the same
//   micro-kernel; a direct, vectorised loop for depthwise-like groups (one input channel).
// - MatMul / Gemm with accuracy_level 4: int8 compute (int8_cpu.h), where the weight's groups line
//   up with its tiles and blocks (else float32 as above);
// Threads: onnxruntime's intra-op pool (KernelContext_ParallelFor). AVX2+FMA chosen at run time
// (HYPERONNX_NO_AVX2=1 forces the portable loops). Products and sums are float32 in an order of
// their own (FMA), so outputs agree with DecodeWeights + the standard op within float32
// summation error, not bit for bit; the decoded weights themselves are bit-identical.
#pragma once

#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "codec_cpu.h"
#include "decode_weights_cpu.h"
#include "int8_cpu.h"
#include "packed_cpu.h"

namespace hyperonnx {

enum class FusedKind { kMatMul, kGemm, kGather, kConv };

// What a fused kernel makes of its weight at creation (the session config entry
// "hyperonnx.packing", read when the library is registered on the session options; see
// kPackingConfigKey): kPacked transcodes it once into the layout its compute reads fastest
// (int8 compute: int8 quads with their scales, Int8Packed; about 1 byte a weight beside the
// seed), kNone keeps only the seed and decodes from it on every call (memory-tight devices).
enum class Packing { kPacked, kNone };
constexpr const char* kPackingConfigKey = "hyperonnx.packing";
// "" (absent: packed), "auto" / "packed" or "none": the mode, or false for another value.
bool ParsePacking(const std::string& text, Packing* packing);
// Bytes of packed weights held by live kernels (exported as HyperonnxPackedBytes for tests and
// `bench runtime`).
void CountPackedBytes(int64_t delta);

// A fused node's own attributes (beyond DecodeWeights'), validated at creation.
struct FusedAttributes {
  int64_t trans_b = 0;  // Gemm
  float alpha = 1.0f, beta = 1.0f;
  int64_t accuracy_level = 0;  // MatMul, Gemm: 0 float32, 4 int8 compute
  std::string auto_pad = "NOTSET";  // Conv
  int64_t group = 1;
  std::vector<int64_t> dilations, kernel_shape, pads, strides;
};

const char* OpName(FusedKind kind);

// A fused node as its kernel is created: its attributes and its constant seed (and scales) in
// host memory, validated whole (rules 2-7 and 9; the seed scanned once, so a run never meets a
// bad index). The CPU kernel and the CUDA kernel (custom_ops/cuda) are both built from it.
struct FusedNode {
  std::string name;
  FusedAttributes attrs;
  NodeParams node;
  const uint8_t* seed = nullptr;     // onnxruntime's constant initializer: it outlives the kernel
  const uint16_t* scales = nullptr;  // idem (lattice, trellis), or nullptr
  std::unique_ptr<PairDecoder> decoder;
};

// "" and `out` filled, or the message naming the rule broken.
std::string ReadFusedNode(FusedKind kind, const Ort::ConstKernelInfo& info, FusedNode* out);

// CreateKernelV2 of a fused op (CPU and CUDA): the node read and validated by ReadFusedNode, then
// `make(std::move(node))` returns the kernel; a broken rule or an exception becomes onnxruntime's
// status naming the operator and the node.
template <typename Make>
OrtStatusPtr CreateFusedKernel(const OrtApi& api, FusedKind kind, const OrtKernelInfo* raw_info, void** kernel,
                               Make make) {
  *kernel = nullptr;
  std::string name = "?";
  try {
    Ort::ConstKernelInfo info(raw_info);
    name = info.GetNodeName();
    FusedNode node;
    const std::string error = ReadFusedNode(kind, info, &node);
    if (!error.empty()) return FailNode(OpName(kind), name, error);
    *kernel = make(std::move(node));
    return nullptr;
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ORT_FAIL, (std::string(OpName(kind)) + " node '" + Printable(name) + "': out of memory").c_str());
  } catch (const std::exception& e) {
    return api.CreateStatus(ORT_FAIL, (std::string(OpName(kind)) + " node '" + Printable(name) + "': " + e.what()).c_str());
  }
}

// Rules 5 and 7 over a whole seed whose rules 2-4 and 6 hold: "" or IndexRuleError's message.
std::string ScanSeed(const PairDecoder& decoder, const NodeParams& node, const uint8_t* seed, const uint16_t* scales);

// A MatMul / Gemm run's inputs checked against the weight (rule 9's run part): Y [y_shape] =
// A [rows x depth] * W [depth x cols] (Gemm: then alpha, and beta * C broadcast from
// [c_rows x c_cols], each 1 or the full size). Pointers are the inputs' data (host or device).
struct GemmRun {
  std::vector<int64_t> y_shape;
  uint64_t rows = 0, depth = 0, cols = 0;
  const float* a = nullptr;
  const float* c = nullptr;  // Gemm's C, or nullptr
  int64_t c_rows = 0, c_cols = 0;
};
std::string CheckMatMul(const Ort::KernelContext& context, const std::vector<int64_t>& weight, GemmRun* run);
std::string CheckGemm(const Ort::KernelContext& context, const std::vector<int64_t>& weight,
                      const FusedAttributes& attrs, GemmRun* run);

// A Gather run: the indices (host memory) checked and made non-negative, the output's shape.
struct GatherRun {
  std::vector<int64_t> y_shape;
  std::vector<int64_t> rows;  // the weight row of each output row, in [0, weight[0])
  uint64_t row_elements = 0;  // prod(weight[1:])
};
std::string CheckGather(const Ort::KernelContext& context, const std::vector<int64_t>& weight, GatherRun* run);

class FusedCpuKernel {
 public:
  FusedCpuKernel(FusedKind kind, std::string name, FusedAttributes attrs, std::unique_ptr<EncodedWeight> weight,
                 bool int8, Int8Plan plan, std::unique_ptr<Int8Packed> packed,
                 std::unique_ptr<FloatPacked> float_packed);
  ~FusedCpuKernel();
  FusedCpuKernel(const FusedCpuKernel&) = delete;
  FusedCpuKernel& operator=(const FusedCpuKernel&) = delete;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  OrtStatusPtr Fail(const std::string& message) const;
  OrtStatusPtr MatMul(Ort::KernelContext& context);
  OrtStatusPtr Gemm(Ort::KernelContext& context);
  OrtStatusPtr Gather(Ort::KernelContext& context);
  OrtStatusPtr Conv(Ort::KernelContext& context);
  FusedKind kind_;
  std::string name_;
  FusedAttributes attrs_;
  std::unique_ptr<EncodedWeight> weight_;
  bool int8_;  // accuracy_level 4 and a weight PlanInt8 takes: int8_plan_
  Int8Plan int8_plan_;
  std::unique_ptr<Int8Packed> packed_;  // int8 compute with Packing::kPacked, else null
  std::unique_ptr<FloatPacked> float_packed_;  // float compute with Packing::kPacked where PackFloat takes it
  size_t PackedBytes() const;
};

// One op class for the four operators: inputs (activation, seed, scales, [bias / C]).
struct FusedCpuOp : Ort::CustomOpBase<FusedCpuOp, FusedCpuKernel, /*WithStatus=*/true> {
  FusedCpuOp(FusedKind kind, Packing packing) : kind_(kind), packing_(packing) {
    OrtCustomOp::version = kOrtApiVersion;  // as DecodeWeightsCpuOp's: onnxruntime refuses a newer op struct
    start_ver_ = kFusedFormatVersion;
    end_ver_ = kFormatVersion;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const;
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return kind_ == FusedKind::kGather ? 3 : 4; }
  ONNXTensorElementDataType GetInputType(size_t i) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i < 2 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

 private:
  FusedKind kind_;
  Packing packing_;
};

}  // namespace hyperonnx
