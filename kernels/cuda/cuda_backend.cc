// The CUDA backend's host side: the Backend interface, argument checks,
// pointer tables, cuBLAS, and errors kept until synchronize() (see
// cuda_backend.h: never run on a device yet). The kernels are in
// cuda_backend_kernels.cu.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda_backend_kernels.h"
#include "interlace/kernels/cuda/cuda_backend.h"

namespace interlace::kernels::cuda {
namespace {

class CudaBackendImpl final : public CudaBackend {
 public:
  CudaBackendImpl(int ordinal, cudaStream_t stream, cublasHandle_t blas)
      : ordinal_(ordinal), stream_(stream), blas_(blas) {}
  ~CudaBackendImpl() override {
    cudaSetDevice(ordinal_);
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }

  std::string_view name() const override { return "cuda"; }

  std::string synchronize() override {
    cudaSetDevice(ordinal_);
    note(cudaStreamSynchronize(stream_), "synchronize");
    std::string e;
    e.swap(error_);
    return e;
  }

  void linear(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k) override {
    if (m == 0 || n == 0) return;
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) {
      fail("linear: " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " exceeds cuBLAS's int sizes");
      return;
    }
    begin();
    if (k == 0) {  // an empty sum: zeros (cuBLAS refuses a leading dimension of 0)
      note(cudaMemsetAsync(y, 0, size_t(m * n) * sizeof(float), stream_), "linear");
      return;
    }
    // Row-major y[m,n] = x[m,k] w[n,k]^T is column-major y^T[n,m] = w^T^T x^T:
    // w seen column-major is [k,n] (transposed), x seen column-major is [k,m].
    const float one = 1.0f, zero = 0.0f;
    const cublasStatus_t s = cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &one, w, int(k), x,
                                         int(k), &zero, y, int(n));
    if (s != CUBLAS_STATUS_SUCCESS && error_.empty()) error_ = "linear: cublasSgemm status " + std::to_string(int(s));
  }

  void rms_norm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim, float eps) override {
    if (rows == 0) return;
    begin();
    detail::rms_norm(stream_, x, weight, y, rows, dim, eps);
    launched("rms_norm");
  }

  void rope(float* x, const int64_t* positions, int64_t tokens, int64_t heads, int64_t head_dim, int64_t rotary_dim,
            float theta) override {
    const int64_t n = tokens * heads * (rotary_dim / 2);
    if (n == 0) return;
    begin();
    detail::rope(stream_, x, positions, tokens, heads, head_dim, rotary_dim, theta);
    launched("rope");
  }

  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override {
    if (n == 0) return;
    begin();
    detail::silu_mul(stream_, gate, up, out, n);
    launched("silu_mul");
  }

  void silu_inplace(float* x, int64_t n) override {
    if (n == 0) return;
    begin();
    detail::silu_inplace(stream_, x, n);
    launched("silu_inplace");
  }

  void sigmoid_gate(const float* gate, float* x, int64_t n) override {
    if (n == 0) return;
    begin();
    detail::sigmoid_gate(stream_, gate, x, n);
    launched("sigmoid_gate");
  }

  void attention_prefill(const AttentionShape& s, const float* q, const KvView& kv, int64_t q_start, int64_t tokens,
                         float* out) override {
    if (tokens == 0 || !check_attention(s)) return;
    if (q_start < 0 || q_start + tokens > kv.length) {
      fail("attention_prefill: queries at " + std::to_string(q_start) + ".." + std::to_string(q_start + tokens - 1) +
           " past the " + std::to_string(kv.length) + " keys");
      return;
    }
    begin();
    detail::KvTable table{};
    table.entry[0] = {kv.k, kv.v, kv.length, nullptr, 0};
    detail::attention(stream_, tokens, s.q_heads, s.kv_heads, s.head_dim, s.scale, s.window,
                      s.kv_dtype == core::DType::kBF16, q, table, q_start, out);
    launched("attention_prefill");
  }

  void attention_decode(const AttentionShape& s, const float* q, std::span<const KvView> kv, float* out) override {
    if (kv.empty() || !check_attention(s)) return;
    begin();
    decode_in_launches(s, q, kv.size(), out, "attention_decode", [&](size_t i) {
      return detail::KvEntry{kv[i].k, kv[i].v, kv[i].length, nullptr, 0};
    });
  }

  void attention_decode_paged(const AttentionShape& s, const float* q, std::span<const PagedKvView> kv,
                              float* out) override {
    if (kv.empty() || !check_attention(s)) return;
    for (size_t i = 0; i < kv.size(); ++i)
      if (kv[i].block_size <= 0 || !kv[i].block_table) {
        fail("attention_decode_paged: sequence " + std::to_string(i) + " has no block table or block size " +
             std::to_string(kv[i].block_size));
        return;
      }
    begin();
    decode_in_launches(s, q, kv.size(), out, "attention_decode_paged", [&](size_t i) {
      return detail::KvEntry{kv[i].k_pool, kv[i].v_pool, kv[i].length, kv[i].block_table, kv[i].block_size};
    });
  }

  void lightning_prefill(const LightningShape& s, const float* q, const float* k, const float* v, int64_t tokens,
                         const LightningState& state, float* out) override {
    if (!check_lightning(s)) return;
    begin();
    detail::StateTable one{};
    one.entry[0] = {state.base, state.delta, state.steps};
    detail::lightning_fold(stream_, 1, s.heads, s.head_dim, s.slopes, one, /*advance=*/false, 0);
    launched("lightning_prefill (fold)");
    if (tokens == 0) return;
    detail::lightning_prefill(stream_, s.heads, s.head_dim, s.slopes, std::max<int64_t>(1, s.block_size), q, k, v,
                              tokens, one.entry[0], out);
    launched("lightning_prefill");
  }

  void lightning_decode(const LightningShape& s, const float* q, const float* k, const float* v,
                        std::span<const LightningState> states, float* out) override {
    if (states.empty() || !check_lightning(s)) return;
    begin();
    const int64_t row = s.heads * s.head_dim;
    for (size_t b0 = 0; b0 < states.size(); b0 += detail::kTableEntries) {
      const size_t n = std::min<size_t>(detail::kTableEntries, states.size() - b0);
      detail::StateTable table{};
      for (size_t i = 0; i < n; ++i) table.entry[i] = {states[b0 + i].base, states[b0 + i].delta, states[b0 + i].steps};
      const int64_t at = int64_t(b0) * row;
      detail::lightning_decode(stream_, int64_t(n), s.heads, s.head_dim, s.slopes, q + at, k + at, v + at, table,
                               out + at);
      launched("lightning_decode");
      detail::lightning_fold(stream_, int64_t(n), s.heads, s.head_dim, s.slopes, table, /*advance=*/true,
                             std::max<int64_t>(1, s.block_size));
      launched("lightning_decode (fold)");
    }
  }

  void moe_route(const float* logits, int64_t tokens, int64_t experts, int64_t top_k, int32_t* index,
                 float* weight) override {
    if (tokens == 0) return;
    if (experts > detail::kMaxExperts || top_k > experts) {
      fail("moe_route: " + std::to_string(experts) + " experts, top " + std::to_string(top_k) + " (at most " +
           std::to_string(detail::kMaxExperts) + " experts)");
      return;
    }
    begin();
    detail::moe_route(stream_, logits, tokens, experts, top_k, index, weight);
    launched("moe_route");
  }

  void log_softmax_gather(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                          float* out) override {
    if (rows == 0) return;
    begin();
    detail::log_softmax_gather(stream_, logits, targets, rows, vocab, out);
    launched("log_softmax_gather");
  }

 private:
  void begin() { cudaSetDevice(ordinal_); }
  // Decode attention for `count` sequences (entry(i): sequence i's keys and
  // values), in launches of kTableEntries sequences.
  template <typename EntryOf>
  void decode_in_launches(const AttentionShape& s, const float* q, size_t count, float* out, const char* what,
                          EntryOf entry) {
    const int64_t row = s.q_heads * s.head_dim;
    for (size_t b0 = 0; b0 < count; b0 += detail::kTableEntries) {
      const size_t n = std::min<size_t>(detail::kTableEntries, count - b0);
      detail::KvTable table{};
      for (size_t i = 0; i < n; ++i) table.entry[i] = entry(b0 + i);
      detail::attention(stream_, int64_t(n), s.q_heads, s.kv_heads, s.head_dim, s.scale, s.window,
                        s.kv_dtype == core::DType::kBF16, q + int64_t(b0) * row, table, /*q_start=*/-1,
                        out + int64_t(b0) * row);
      launched(what);
    }
  }
  void note(cudaError_t e, const char* what) {
    if (e != cudaSuccess && error_.empty()) error_ = std::string(what) + ": " + cudaGetErrorString(e);
  }
  void launched(const char* what) { note(cudaGetLastError(), what); }
  void fail(const std::string& what) {
    if (error_.empty()) error_ = what;
  }
  bool check_attention(const AttentionShape& s) {
    if (s.head_dim > detail::kMaxHeadDim || s.kv_heads <= 0 || s.q_heads % s.kv_heads != 0 ||
        (s.kv_dtype != core::DType::kF32 && s.kv_dtype != core::DType::kBF16)) {
      fail("attention: unsupported shape (head_dim " + std::to_string(s.head_dim) + ", heads " +
           std::to_string(s.q_heads) + "/" + std::to_string(s.kv_heads) + "; f32 or bf16 KV, head_dim <= " +
           std::to_string(detail::kMaxHeadDim) + ")");
      return false;
    }
    return true;
  }
  bool check_lightning(const LightningShape& s) {
    if (s.head_dim > detail::kMaxLightningHeadDim) {
      fail("lightning: head_dim " + std::to_string(s.head_dim) + " above " + std::to_string(detail::kMaxLightningHeadDim));
      return false;
    }
    return true;
  }

  int ordinal_;
  cudaStream_t stream_;
  cublasHandle_t blas_;
  std::string error_;  // the first error since the last synchronize()
};

}  // namespace

DeviceBuffer::DeviceBuffer(size_t bytes) {
  if (bytes == 0) return;
  const cudaError_t e = cudaMalloc(&data_, bytes);
  if (e != cudaSuccess) {
    data_ = nullptr;
    error_ = "cudaMalloc of " + std::to_string(bytes) + " bytes: " + cudaGetErrorString(e);
    return;
  }
  bytes_ = bytes;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(other.data_), bytes_(other.bytes_), error_(std::move(other.error_)) {
  other.data_ = nullptr;
  other.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) cudaFree(data_);
    data_ = other.data_;
    bytes_ = other.bytes_;
    error_ = std::move(other.error_);
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

std::string DeviceBuffer::upload(const void* host, size_t bytes, size_t offset) {
  if (offset + bytes > bytes_) return "upload: " + std::to_string(bytes) + " bytes at " + std::to_string(offset) +
                                      " past a buffer of " + std::to_string(bytes_);
  const cudaError_t e = cudaMemcpy(static_cast<char*>(data_) + offset, host, bytes, cudaMemcpyHostToDevice);
  return e == cudaSuccess ? std::string() : std::string("upload: ") + cudaGetErrorString(e);
}

std::string DeviceBuffer::download(void* host, size_t bytes, size_t offset) const {
  if (offset + bytes > bytes_) return "download: " + std::to_string(bytes) + " bytes at " + std::to_string(offset) +
                                      " past a buffer of " + std::to_string(bytes_);
  const cudaError_t e = cudaMemcpy(host, static_cast<const char*>(data_) + offset, bytes, cudaMemcpyDeviceToHost);
  return e == cudaSuccess ? std::string() : std::string("download: ") + cudaGetErrorString(e);
}

std::string DeviceBuffer::fill(unsigned char value) {
  const cudaError_t e = cudaMemset(data_, value, bytes_);
  return e == cudaSuccess ? std::string() : std::string("fill: ") + cudaGetErrorString(e);
}

std::unique_ptr<CudaBackend> CudaBackend::create(int ordinal, std::string* error) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    *error = "no CUDA device";
    return nullptr;
  }
  if (ordinal < 0 || ordinal >= count) {
    *error = "CUDA device " + std::to_string(ordinal) + " does not exist (" + std::to_string(count) + " found)";
    return nullptr;
  }
  if (cudaError_t e = cudaSetDevice(ordinal); e != cudaSuccess) {
    *error = std::string("cudaSetDevice: ") + cudaGetErrorString(e);
    return nullptr;
  }
  cudaStream_t stream = nullptr;
  // A blocking stream: it waits for work on the legacy default stream, where
  // DeviceBuffer's cudaMemcpy/cudaMemset go (a non-blocking one could run a
  // kernel before its inputs were uploaded, or poison an output after it).
  if (cudaError_t e = cudaStreamCreate(&stream); e != cudaSuccess) {
    *error = std::string("cudaStreamCreate: ") + cudaGetErrorString(e);
    return nullptr;
  }
  cublasHandle_t blas = nullptr;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(stream);
    *error = "cublasCreate failed";
    return nullptr;
  }
  cublasSetStream(blas, stream);
  // fp32 GEMMs stay fp32: no TF32 tensor-core rounding of the inputs.
  cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH);
  return std::make_unique<CudaBackendImpl>(ordinal, stream, blas);
}

}  // namespace interlace::kernels::cuda
