// Fused operators, CPU (docs/FORMAT.md §8): DecodeMatMul, DecodeGemm, DecodeGather, DecodeConv.
//
// Each keeps its weight encoded in memory: at kernel creation it reads the node's constant seed
// (and scales) through KernelInfoGetConstantInput_tensor, validates them whole (rules 2-7: the
// seed is scanned once, so a run never meets a bad index), and keeps onnxruntime's buffers (the
// "pre-packed" form is the seed itself plus the codec's small pair table). A run decodes only
// what it computes with, through the codec's one decode primitive (codec_cpu.h):
// - MatMul / Gemm, few rows (<= kFewRows): each task owns a range of the weight's rows and
//   decodes them front to back, segment by segment, into an L1-sized buffer consumed at once by
//   an AXPY over every activation row into the task's partial output (summed at the end); for
//   transB each task owns output columns and takes dot products. The seed is read once per call;
// - MatMul / Gemm, many rows: each task decodes a kKc x kNb panel into an L2-resident buffer once
//   per call and runs a 6 x 16 register-blocked FMA micro-kernel over all rows;
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

#include <memory>
#include <string>
#include <vector>

#include "codec_cpu.h"
#include "decode_weights_cpu.h"
#include "int8_cpu.h"

namespace hyperonnx {

enum class FusedKind { kMatMul, kGemm, kGather, kConv };

// A fused node's own attributes (beyond DecodeWeights'), validated at creation.
struct FusedAttributes {
  int64_t trans_b = 0;  // Gemm
  float alpha = 1.0f, beta = 1.0f;
  int64_t accuracy_level = 0;  // MatMul, Gemm: 0 float32, 4 int8 compute
  std::string auto_pad = "NOTSET";  // Conv
  int64_t group = 1;
  std::vector<int64_t> dilations, kernel_shape, pads, strides;
};

class FusedCpuKernel {
 public:
  FusedCpuKernel(FusedKind kind, std::string name, FusedAttributes attrs, std::unique_ptr<EncodedWeight> weight,
                 bool int8, Int8Plan plan);
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
};

// One op class for the four operators: inputs (activation, seed, scales, [bias / C]).
struct FusedCpuOp : Ort::CustomOpBase<FusedCpuOp, FusedCpuKernel, /*WithStatus=*/true> {
  explicit FusedCpuOp(FusedKind kind) : kind_(kind) {
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
};

}  // namespace hyperonnx
