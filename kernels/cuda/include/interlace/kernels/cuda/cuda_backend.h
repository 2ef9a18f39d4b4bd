// kernels::Backend on an NVIDIA GPU: every pointer an op takes is a DEVICE
// pointer (cudaMalloc'd, e.g. by DeviceBuffer), every op is queued on the
// backend's stream and returns without waiting; synchronize() waits for the
// queued work and reports the first CUDA error seen since the last call.
//
// NEVER RUN ON A GPU: written and compiled with nvcc on machines without one
// (issue 24). The gpu-labelled tests (tests/kernels/cuda_backend_test.cc,
// run by scripts/device-check.sh) check every op against the reference
// backend on a device; until they have passed there, treat this as untested.
//
// What it is, and what it is not yet:
// - linear: cuBLAS SGEMM (fp32 in and out, fp32 accumulation, no TF32).
// - attention_prefill/decode: one block per (query, head), keys in tiles with
//   an online softmax (GQA, causal, sliding window, f32 or bf16 keys/values);
//   correct first, not tuned (no tensor cores). attention_decode_paged: the
//   same over block tables (paged_kv.h).
// - lightning_prefill: the recurrence run token by token on the device (one
//   block per head), not yet the chunked form the CPU backend uses; the state is
//   left folded (delta 0, steps 0), as the reference backend leaves it.
// - lightning_decode: one step into delta per (sequence, head), then a fold of
//   base every block_size steps, the CPU backend's schedule.
// - The KvView, PagedKvView and LightningState tables an op takes on the host
//   travel as kernel parameters (up to 96 sequences a launch), never the data.
// - DeviceBuffer's copies and fills go to the legacy default stream, which the
//   backend's (blocking) stream waits for.
// - Not here: bf16 GEMMs, sampling, the backward ops, and the model forward
//   (model::Model keeps its weights and activations in host memory, so this
//   backend cannot be handed to it yet).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "interlace/kernels/backend.h"
#include "interlace/kernels/paged_kv.h"

namespace interlace::kernels::cuda {

// One cudaMalloc'd allocation, freed with the object.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Allocates `bytes` on the current device; on failure data() is null and
  // error() says why.
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }
  const std::string& error() const { return error_; }
  // Blocking copies; return an error string, empty on success.
  std::string upload(const void* host, size_t bytes, size_t offset = 0);
  std::string download(void* host, size_t bytes, size_t offset = 0) const;
  // Every byte set to `value` (0xFF makes every float a NaN: output poisoning).
  std::string fill(unsigned char value);

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  std::string error_;
};

class CudaBackend : public Backend {
 public:
  // The backend for device `ordinal`: null, with *error set, when there is no
  // such device or cuBLAS cannot start.
  static std::unique_ptr<CudaBackend> create(int ordinal, std::string* error);
  // Waits for every queued op; returns the first CUDA/cuBLAS error since the
  // last call (empty: none) and clears it.
  virtual std::string synchronize() = 0;
  // attention_decode through block tables (kernels/paged_kv.h): the pools and
  // the tables are device memory; the views themselves are read on the host.
  virtual void attention_decode_paged(const AttentionShape& s, const float* q, std::span<const PagedKvView> kv,
                                      float* out) = 0;
};

}  // namespace interlace::kernels::cuda
