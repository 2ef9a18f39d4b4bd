// A strided n-dimensional array over owning or viewing storage.
//
// Owning storage is 64-byte aligned heap memory; viewing storage points into
// memory someone else keeps alive (a memory-mapped file, say), and holds a
// shared_ptr to whatever owns it so the view can never dangle.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "interlace/core/dtype.h"

namespace interlace::core {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_string(const Shape& shape);

class Storage {
 public:
  // Allocates `bytes` of zeroed, 64-byte aligned memory.
  static std::shared_ptr<Storage> allocate(size_t bytes);
  // Wraps memory kept alive by `owner` (may be null for static memory).
  static std::shared_ptr<Storage> wrap(void* data, size_t bytes, std::shared_ptr<void> owner);

  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  bool owning() const { return owning_; }

 private:
  Storage() = default;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool owning_ = false;
  std::shared_ptr<void> owner_;
};

class Tensor {
 public:
  Tensor() = default;
  // A new zero-filled contiguous tensor.
  static Tensor zeros(Shape shape, DType dtype = DType::kF32);
  // A contiguous tensor viewing `data`, kept alive by `owner`.
  static Tensor view(void* data, Shape shape, DType dtype, std::shared_ptr<void> owner);
  // A contiguous fp32 tensor holding a copy of `values`.
  static Tensor from_vector(const std::vector<float>& values, Shape shape);

  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }  // in elements
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool defined() const { return storage_ != nullptr; }
  bool is_contiguous() const;
  bool is_view() const { return storage_ && !storage_->owning(); }

  void* raw() const;
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  float* f32() const;  // checks dtype == f32
  std::span<float> span_f32() const { return {f32(), static_cast<size_t>(numel())}; }

  // Same storage, new shape (must be contiguous and have the same numel).
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of the first dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // A contiguous fp32 copy (converting from the stored dtype); shares storage
  // when the tensor already is contiguous fp32.
  Tensor to_f32() const;
  // A contiguous copy in `dtype` (rounded to nearest even).
  Tensor to_dtype(DType dtype) const;
  Tensor clone() const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::kF32;
};

}  // namespace interlace::core
