// Fused operators for the CUDAExecutionProvider: DecodeMatMul, DecodeGemm and DecodeGather, appended
// to the registration table of custom_ops/ops.cc by AppendFusedOps (DecodeConv has no CUDA kernel:
// onnxruntime runs its CPU kernel). A kernel is created exactly as the CPU one (ReadFusedNode: the
// attributes, the constant seed and scales, rules 2-7 and 9, the whole seed scanned on the host);
// the op declares the seed and scales in host memory so that this works, and the weight is copied
// to the GPU on the kernel's first run (which knows onnxruntime's stream) and kept there. A run
// checks its inputs with the CPU kernel's functions (CheckMatMul, CheckGemm, CheckGather: Gather's
// indices are declared in host memory too) and launches on onnxruntime's compute stream.
//
// Also the exported entry points hyperonnx_cuda_fused_* for tests and benchmarks (below).
#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cpu/decode_weights_cpu.h"
#include "cpu/fused_cpu.h"
#include "cuda/decode_weights_cuda.h"
#include "cuda/fused_cuda.h"
#include "hyperonnx/decode_weights_format.h"
#include "hyperonnx/ort_api.h"

namespace hyperonnx::cuda {

// Defined here, called by ops.cc next to AppendOps.
void AppendFusedOps(std::vector<const OrtCustomOp*>& ops);

namespace {

// The weight of a validated node on the GPU (DeviceWeight::Create of its codec).
std::string Upload(const NodeParams& node, const uint8_t* seed, const uint16_t* scales, void* stream,
                   std::unique_ptr<DeviceWeight>* out) {
  if (node.lattice) return DeviceWeight::Create(node.lattice_params, seed, scales, stream, out);
  if (node.trellis) return DeviceWeight::Create(node.trellis_params, seed, scales, stream, out);
  return DeviceWeight::Create(node.winding, seed, stream, out);
}

class FusedCudaKernel {
 public:
  FusedCudaKernel(FusedKind kind, FusedNode node) : kind_(kind), node_(std::move(node)) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* raw_context) {
    try {
      Ort::KernelContext context(raw_context);
      void* stream = context.GetGPUComputeStream();
      const DeviceWeight* weight = nullptr;
      std::string error = Weight(stream, &weight);
      if (!error.empty()) return CudaFail(error);
      const std::vector<int64_t>& shape = node_.node.shape;
      if (kind_ == FusedKind::kGather) {
        GatherRun run;
        error = CheckGather(context, shape, &run);
        if (!error.empty()) return Fail(error);
        Ort::UnownedValue y = context.GetOutput(0, run.y_shape.data(), run.y_shape.size());
        error = weight->Gather(run.rows.data(), run.rows.size(), run.row_elements, y.GetTensorMutableData<float>(),
                               stream);
        return error.empty() ? nullptr : CudaFail(error);
      }
      GemmRun run;
      error = kind_ == FusedKind::kMatMul ? CheckMatMul(context, shape, &run)
                                          : CheckGemm(context, shape, node_.attrs, &run);
      if (!error.empty()) return Fail(error);
      Ort::UnownedValue y = context.GetOutput(0, run.y_shape.data(), run.y_shape.size());
      GemmArgs g;
      g.a = run.a;
      g.rows = run.rows;
      g.depth = run.depth;
      g.cols = run.cols;
      if (kind_ == FusedKind::kGemm) {
        g.trans = node_.attrs.trans_b != 0;
        g.alpha = node_.attrs.alpha;
        g.beta = node_.attrs.beta;
        g.c = run.c;
        g.c_rows = run.c_rows;
        g.c_cols = run.c_cols;
      }
      g.y = y.GetTensorMutableData<float>();
      error = weight->Gemm(g, stream);
      return error.empty() ? nullptr : CudaFail(error);
    } catch (const std::bad_alloc&) {
      return Fail("out of memory");
    } catch (const Ort::Exception& e) {
      return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
    }
  }

 private:
  OrtStatusPtr Fail(const std::string& message) const { return FailNode(OpName(kind_), node_.name, message); }
  OrtStatusPtr CudaFail(const std::string& message) const {
    const std::string text = std::string(OpName(kind_)) + " node '" + Printable(node_.name) + "' (CUDA): " + message;
    return Ort::GetApi().CreateStatus(ORT_EP_FAIL, text.c_str());
  }

  // The weight on the GPU: copied on the first run (kernel creation has no stream), once even
  // when runs overlap. Later runs read the pointer without the lock.
  std::string Weight(void* stream, const DeviceWeight** out) {
    const DeviceWeight* weight = uploaded_.load(std::memory_order_acquire);
    if (weight == nullptr) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!device_) {
        const std::string error = Upload(node_.node, node_.seed, node_.scales, stream, &device_);
        if (!error.empty()) return error;
        uploaded_.store(device_.get(), std::memory_order_release);
      }
      weight = device_.get();
    }
    *out = weight;
    return "";
  }

  FusedKind kind_;
  FusedNode node_;  // seed and scales: onnxruntime's host copies of the initializers
  std::mutex mutex_;
  std::unique_ptr<DeviceWeight> device_;
  std::atomic<const DeviceWeight*> uploaded_{nullptr};
};

struct FusedCudaOp : Ort::CustomOpBase<FusedCudaOp, FusedCudaKernel, /*WithStatus=*/true> {
  explicit FusedCudaOp(FusedKind kind) : kind_(kind), cpu_(kind, Packing::kNone) {
    OrtCustomOp::version = kOrtApiVersion;  // as the CPU op's
    start_ver_ = kFusedFormatVersion;
    end_ver_ = kFormatVersion;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* raw_info, void** kernel) const {
    return CreateFusedKernel(api, kind_, raw_info, kernel, [&](FusedNode node) {
      node.decoder.reset();  // the host decoder served the scan; the GPU decodes from here on
      return new FusedCudaKernel(kind_, std::move(node));
    });
  }
  const char* GetName() const { return cpu_.GetName(); }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  // The CPU op's inputs (onnxruntime needs every op of one name to declare the same).
  size_t GetInputTypeCount() const { return cpu_.GetInputTypeCount(); }
  ONNXTensorElementDataType GetInputType(size_t i) const { return cpu_.GetInputType(i); }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const { return cpu_.GetInputCharacteristic(i); }
  // Seed and scales in host memory: validated there at creation, the kernel keeps its own device
  // copy. Gather's indices too: checked on the host as the CPU kernel checks them.
  OrtMemType GetInputMemoryType(size_t i) const {
    return i == 1 || i == 2 || (i == 0 && kind_ == FusedKind::kGather) ? OrtMemTypeCPUInput : OrtMemTypeDefault;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

 private:
  FusedKind kind_;
  FusedCpuOp cpu_;  // the declarations this op shares
};

}  // namespace

// Makes no CUDA call, so CPU-only machines load the library.
void AppendFusedOps(std::vector<const OrtCustomOp*>& ops) {
  static const FusedCudaOp matmul(FusedKind::kMatMul), gemm(FusedKind::kGemm), gather(FusedKind::kGather);
  for (const FusedCudaOp* op : {&matmul, &gemm, &gather}) ops.push_back(op);
}

}  // namespace hyperonnx::cuda

// ------------------------------------------------------------------------------------------------
// Entry points for tests and benchmarks (ctypes). A weight is created from host arrays (seed,
// float16 scales as uint16 bit patterns) and the codec's attributes as FORMAT.md names them,
// validated as a kernel validates them at creation (the shared header's rules 2-4, every scale
// finite, rules 5 and 7 over the whole seed by the CPU decoder), then copied to the current GPU
// on `stream` (a cudaStream_t; null: the legacy default stream), which the call waits for. The
// products and gathers take device pointers and launch on `stream` without waiting. Every call
// returns 0, 1 (a FORMAT.md rule or a shape broken; the reason in `message`), 2 (a CUDA error) or
// 3 (a bad argument), as the hyperonnx_cuda_decode* entry points do.

namespace {

using hyperonnx::cuda::Report;

struct FusedHandle {
  std::vector<int64_t> shape;
  std::unique_ptr<hyperonnx::cuda::DeviceWeight> weight;
};

// The rest of a create call once `node` holds validated attributes: the lengths (rule 4, 6),
// the scales' values (rule 6), the seed's indices (rules 5, 7), the copy to the GPU.
int CreateHandle(const hyperonnx::NodeParams& node, const void* seed, uint64_t seed_bytes, const void* scales,
                 uint64_t scales_count, void* stream, void** handle, char* message, uint64_t message_size) {
  using namespace hyperonnx;
  if (handle == nullptr || (seed == nullptr && seed_bytes > 0) || (scales == nullptr && scales_count > 0)) {
    return Report(message, message_size, 3, "bad argument: null handle, seed or scales");
  }
  *handle = nullptr;
  const int64_t seed_dims[1] = {static_cast<int64_t>(seed_bytes)};
  const int64_t scale_dims[1] = {static_cast<int64_t>(scales_count)};
  std::string error = node.lattice   ? ValidateSeed(node.lattice_params, 1, seed_dims)
                      : node.trellis ? ValidateSeed(node.trellis_params, 1, seed_dims)
                                     : ValidateSeed(node.winding, 1, seed_dims);
  if (error.empty() && node.lattice) error = ValidateScalesShape(node.lattice_params, 1, scale_dims);
  if (error.empty() && node.trellis) error = ValidateScalesShape(node.trellis_params, 1, scale_dims);
  const auto* scale_bits = static_cast<const uint16_t*>(scales);
  for (uint64_t q = 0; error.empty() && (node.lattice || node.trellis) && q < scales_count; ++q) {
    if (!HalfIsFinite(scale_bits[q])) error = "rule 6: scales[" + std::to_string(q) + "] is Inf or NaN";
  }
  const auto* seed_bytes_ptr = static_cast<const uint8_t*>(seed);
  if (error.empty()) error = ScanSeed(*MakePairDecoder(node), node, seed_bytes_ptr, scale_bits);
  if (!error.empty()) return Report(message, message_size, 1, error + " (docs/FORMAT.md)");
  auto h = std::make_unique<FusedHandle>();
  h->shape = node.shape;
  error = node.lattice   ? cuda::DeviceWeight::Create(node.lattice_params, seed_bytes_ptr, scale_bits, stream, &h->weight)
          : node.trellis ? cuda::DeviceWeight::Create(node.trellis_params, seed_bytes_ptr, scale_bits, stream, &h->weight)
                         : cuda::DeviceWeight::Create(node.winding, seed_bytes_ptr, stream, &h->weight);
  if (!error.empty()) return Report(message, message_size, 2, error);
  *handle = h.release();
  return Report(message, message_size, 0, "");
}

int Refuse(char* message, uint64_t message_size, const std::string& error) {
  return Report(message, message_size, 1, error + " (docs/FORMAT.md)");
}

}  // namespace

// Codec lattice (FORMAT.md §7), float32 weight of `shape`.
extern "C" HYPERONNX_EXPORT int hyperonnx_cuda_fused_lattice(const void* seed, uint64_t seed_bytes, const void* scales,
                                                             uint64_t scales_count, const int64_t* shape, uint64_t rank,
                                                             int64_t bits, int64_t generator, int64_t group, float alpha,
                                                             float beta, float scale_unit, void* stream, void** handle,
                                                             char* message, uint64_t message_size) {
  using namespace hyperonnx;
  try {
    if (rank > 0 && shape == nullptr) return Report(message, message_size, 3, "bad argument: null shape");
    const LatticeAttributes attrs{kCodecLattice, {shape, shape + rank}, kFloat32, bits, generator, group, alpha, beta,
                                  scale_unit};
    NodeParams node;
    node.lattice = true;
    node.shape = attrs.shape;
    const std::string error = ValidateLattice(attrs, &node.lattice_params);
    if (!error.empty()) return Refuse(message, message_size, error);
    return CreateHandle(node, seed, seed_bytes, scales, scales_count, stream, handle, message, message_size);
  } catch (const std::exception& e) {
    return Report(message, message_size, 2, e.what());
  }
}

// Codec trellis (FORMAT.md §9), float32 weight of `shape`.
extern "C" HYPERONNX_EXPORT int hyperonnx_cuda_fused_trellis(const void* seed, uint64_t seed_bytes, const void* scales,
                                                             uint64_t scales_count, const int64_t* shape, uint64_t rank,
                                                             int64_t bits, int64_t window, int64_t group,
                                                             float scale_unit, void* stream, void** handle,
                                                             char* message, uint64_t message_size) {
  using namespace hyperonnx;
  try {
    if (rank > 0 && shape == nullptr) return Report(message, message_size, 3, "bad argument: null shape");
    const TrellisAttributes attrs{kCodecTrellis, {shape, shape + rank}, kFloat32, bits, window, group, scale_unit};
    NodeParams node;
    node.trellis = true;
    node.shape = attrs.shape;
    const std::string error = ValidateTrellis(attrs, &node.trellis_params);
    if (!error.empty()) return Refuse(message, message_size, error);
    return CreateHandle(node, seed, seed_bytes, scales, scales_count, stream, handle, message, message_size);
  } catch (const std::exception& e) {
    return Report(message, message_size, 2, e.what());
  }
}

// Codec winding (FORMAT.md §3), float32 weight of `shape`; no scales input.
extern "C" HYPERONNX_EXPORT int hyperonnx_cuda_fused_winding(const void* seed, uint64_t seed_bytes, const int64_t* shape,
                                                             uint64_t rank, int64_t bits, int64_t points, int64_t rings,
                                                             const float* center, uint64_t center_count, float side,
                                                             const float* ring_scales, uint64_t ring_scales_count,
                                                             void* stream, void** handle, char* message,
                                                             uint64_t message_size) {
  using namespace hyperonnx;
  try {
    if ((rank > 0 && shape == nullptr) || (center_count > 0 && center == nullptr) ||
        (ring_scales_count > 0 && ring_scales == nullptr)) {
      return Report(message, message_size, 3, "bad argument: null array");
    }
    const WindingAttributes attrs{kCodecWinding, {shape, shape + rank}, kFloat32, bits, points, rings,
                                  {center, center + center_count}, side, {ring_scales, ring_scales + ring_scales_count}};
    NodeParams node;
    node.shape = attrs.shape;
    const std::string error = ValidateWinding(attrs, &node.winding);
    if (!error.empty()) return Refuse(message, message_size, error);
    return CreateHandle(node, seed, seed_bytes, nullptr, 0, stream, handle, message, message_size);
  } catch (const std::exception& e) {
    return Report(message, message_size, 2, e.what());
  }
}

// Y [rows x N] = alpha * A [rows x K] * W + beta * C, W the handle's weight [K, N] (trans_b = 0)
// or [N, K] (trans_b = 1, W transposed); C (or null) broadcast from [c_rows x c_cols], each 1 or
// the full size. MatMul: trans_b = 0, alpha = 1, C null. `a`, `c`, `y` are device float32.
extern "C" HYPERONNX_EXPORT int hyperonnx_cuda_fused_gemm(void* handle, const float* a, uint64_t rows, int trans_b,
                                                          float alpha, float beta, const float* c, int64_t c_rows,
                                                          int64_t c_cols, float* y, void* stream, char* message,
                                                          uint64_t message_size) {
  using namespace hyperonnx;
  try {
    const auto* h = static_cast<const FusedHandle*>(handle);
    if (h == nullptr || (trans_b != 0 && trans_b != 1)) return Report(message, message_size, 3, "bad argument: null handle or trans_b not 0/1");
    if (h->shape.size() != 2) return Refuse(message, message_size, "rule 9: the weight must be a matrix");
    const uint64_t depth = static_cast<uint64_t>(trans_b ? h->shape[1] : h->shape[0]);
    const uint64_t cols = static_cast<uint64_t>(trans_b ? h->shape[0] : h->shape[1]);
    if (c != nullptr && ((c_rows != 1 && static_cast<uint64_t>(c_rows) != rows) ||
                         (c_cols != 1 && static_cast<uint64_t>(c_cols) != cols))) {
      return Refuse(message, message_size, "C does not broadcast to [M, N]");
    }
    if (rows > 0 && cols > 0 && (y == nullptr || (depth > 0 && a == nullptr))) {
      return Report(message, message_size, 3, "bad argument: null A or Y");
    }
    cuda::GemmArgs g;
    g.a = a;
    g.rows = rows;
    g.depth = depth;
    g.cols = cols;
    g.trans = trans_b != 0;
    g.alpha = alpha;
    g.beta = beta;
    g.c = c;
    g.c_rows = c_rows;
    g.c_cols = c_cols;
    g.y = y;
    const std::string error = h->weight->Gemm(g, stream);
    return Report(message, message_size, error.empty() ? 0 : 2, error);
  } catch (const std::exception& e) {
    return Report(message, message_size, 2, e.what());
  }
}

// y [count x prod(shape[1:])] = the weight's rows indices[0 .. count) (host int64, negative ones
// counted from the end, as Gather's), bit for bit; `y` is device float32.
extern "C" HYPERONNX_EXPORT int hyperonnx_cuda_fused_gather(void* handle, const int64_t* indices, uint64_t count,
                                                            float* y, void* stream, char* message,
                                                            uint64_t message_size) {
  using namespace hyperonnx;
  try {
    const auto* h = static_cast<const FusedHandle*>(handle);
    if (h == nullptr || (count > 0 && indices == nullptr)) return Report(message, message_size, 3, "bad argument: null handle or indices");
    if (h->shape.empty()) return Refuse(message, message_size, "rule 9: the weight must have rank >= 1");
    const int64_t rows = h->shape[0];
    uint64_t row_elements = 1;
    for (size_t i = 1; i < h->shape.size(); ++i) row_elements *= static_cast<uint64_t>(h->shape[i]);
    std::vector<int64_t> index(count);
    for (uint64_t i = 0; i < count; ++i) {
      if (indices[i] < -rows || indices[i] >= rows) {
        return Refuse(message, message_size, "indices[" + std::to_string(i) + "] = " + std::to_string(indices[i]) +
                                                 " is outside [" + std::to_string(-rows) + ", " +
                                                 std::to_string(rows - 1) + "]");
      }
      index[i] = indices[i] < 0 ? indices[i] + rows : indices[i];
    }
    if (count > 0 && row_elements > 0 && y == nullptr) return Report(message, message_size, 3, "bad argument: null Y");
    const std::string error = h->weight->Gather(index.data(), count, row_elements, y, stream);
    return Report(message, message_size, error.empty() ? 0 : 2, error);
  } catch (const std::exception& e) {
    return Report(message, message_size, 2, e.what());
  }
}

// Frees a handle (its device buffers); null is a no-op.
extern "C" HYPERONNX_EXPORT void hyperonnx_cuda_fused_free(void* handle) { delete static_cast<FusedHandle*>(handle); }
