// The library's entry point: one registration table for every op and backend, in the style of
// onnxruntime-extensions. ONNX Runtime calls RegisterCustomOps from
// SessionOptions.register_custom_ops_library(hyperonnx.get_library_path()).
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cpu/decode_weights_cpu.h"
#include "cpu/fused_cpu.h"
#include "hyperonnx/decode_weights_format.h"
#include "hyperonnx/ort_api.h"

#ifdef HYPERONNX_USE_CUDA
namespace hyperonnx::cuda {
// Defined by custom_ops/cuda/: append the CUDA kernels' OrtCustomOp objects (same domain, name
// and version as the CPU ones, GetExecutionProviderType "CUDAExecutionProvider"): DecodeWeights,
// and the fused DecodeMatMul, DecodeGemm and DecodeGather.
void AppendOps(std::vector<const OrtCustomOp*>& ops);
void AppendFusedOps(std::vector<const OrtCustomOp*>& ops);
}  // namespace hyperonnx::cuda
#endif

namespace hyperonnx {
namespace {

std::vector<const OrtCustomOp*> MakeOpTable(Packing packing);

// Every op of the ai.hyperonnx domain: DecodeWeights once per output type (kOutputTypes), then the
// fused operators (DecodeMatMul, DecodeGemm, DecodeGather, DecodeConv; DecodeConv has no CUDA
// kernel). The CPU ops are always present: a session without the CUDA provider must still find a
// kernel, and ONNX Runtime falls back to them for unassigned nodes.
// One table per packing mode (fused_cpu.h: Packing), chosen when a session's options register the
// library: the fused CPU ops carry the mode their kernels are created with.
const std::vector<const OrtCustomOp*>& OpTable(Packing packing) {
  static const std::vector<const OrtCustomOp*> packed = MakeOpTable(Packing::kPacked);
  static const std::vector<const OrtCustomOp*> none = MakeOpTable(Packing::kNone);
  return packing == Packing::kNone ? none : packed;
}

std::vector<const OrtCustomOp*> MakeOpTable(Packing packing) {
  static const DecodeWeightsCpuOp decode_weights_cpu[] = {
      DecodeWeightsCpuOp(kOutputTypes[0]), DecodeWeightsCpuOp(kOutputTypes[1]), DecodeWeightsCpuOp(kOutputTypes[2])};
  // the fused operators' output is always float32 (FusedCpuOp::GetOutputType): one op each (never
  // destroyed: sessions hold them)
  const auto* fused = new FusedCpuOp[4]{{FusedKind::kMatMul, packing}, {FusedKind::kGemm, packing},
                                        {FusedKind::kGather, packing}, {FusedKind::kConv, packing}};
  std::vector<const OrtCustomOp*> all;
  for (const DecodeWeightsCpuOp& op : decode_weights_cpu) all.push_back(&op);
  for (int i = 0; i < 4; ++i) all.push_back(&fused[i]);
#ifdef HYPERONNX_USE_CUDA
  cuda::AppendOps(all);  // declare the CPU ops' inputs: onnxruntime refuses a domain whose ops differ
  cuda::AppendFusedOps(all);
#endif
  return all;
}

// The session's "hyperonnx.packing" entry: "" when absent.
std::string PackingEntry(const OrtApi& api, const OrtSessionOptions* options) {
  int has = 0;
  if (OrtStatus* status = api.HasSessionConfigEntry(options, kPackingConfigKey, &has)) {
    api.ReleaseStatus(status);
    return "";
  }
  if (!has) return "";
  size_t size = 0;
  if (OrtStatus* status = api.GetSessionConfigEntry(options, kPackingConfigKey, nullptr, &size)) api.ReleaseStatus(status);
  std::string value(size, '\0');
  if (OrtStatus* status = api.GetSessionConfigEntry(options, kPackingConfigKey, value.data(), &size)) {
    api.ReleaseStatus(status);
    return "";
  }
  value.resize(size > 0 ? size - 1 : 0);  // the size counts the terminating NUL
  return value;
}

// Domains handed to sessions must outlive them; they are kept until the library is unloaded
// (onnxruntime never unloads a library a live session uses).
std::mutex domains_mutex;
std::vector<std::unique_ptr<Ort::CustomOpDomain>>& Domains() {
  static auto* domains = new std::vector<std::unique_ptr<Ort::CustomOpDomain>>;  // never destroyed
  return *domains;
}

}  // namespace
}  // namespace hyperonnx

extern "C" HYPERONNX_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                       const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(hyperonnx::kOrtApiVersion);
  if (api == nullptr) {
    // This runtime predates the API the library was built against; API version 1 always exists.
    const std::string message = "hyperonnx custom ops need onnxruntime >= 1." + std::to_string(hyperonnx::kOrtApiVersion) +
                                " (ORT API version " +
                                std::to_string(hyperonnx::kOrtApiVersion) + "); this onnxruntime is " +
                                api_base->GetVersionString();
    return api_base->GetApi(1)->CreateStatus(ORT_FAIL, message.c_str());
  }
  Ort::InitApi(api);
  try {
    const std::string entry = hyperonnx::PackingEntry(*api, options);
    hyperonnx::Packing packing;
    if (!hyperonnx::ParsePacking(entry, &packing)) {
      const std::string message = std::string("hyperonnx: session config entry ") + hyperonnx::kPackingConfigKey + "='" +
                                  hyperonnx::Printable(entry) + "' is not one of auto, packed, none";
      return api->CreateStatus(ORT_INVALID_ARGUMENT, message.c_str());
    }
    auto domain = std::make_unique<Ort::CustomOpDomain>(hyperonnx::kDomain);
    for (const OrtCustomOp* op : hyperonnx::OpTable(packing)) domain->Add(op);
    Ort::UnownedSessionOptions(options).Add(*domain);
    std::lock_guard<std::mutex> lock(hyperonnx::domains_mutex);
    hyperonnx::Domains().push_back(std::move(domain));
    return nullptr;
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
}

// The library's own format version, for hyperonnx.runtime to check it loaded the right binary.
extern "C" HYPERONNX_EXPORT int HyperonnxFormatVersion() { return hyperonnx::kFormatVersion; }
