#include "interlace/core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "interlace/core/status.h"

namespace interlace::core {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const Shape& shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

static Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes) {
  auto s = std::shared_ptr<Storage>(new Storage());
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  s->data_ = std::aligned_alloc(64, rounded);
  INTERLACE_CHECK(s->data_ != nullptr, "out of memory");
  std::memset(s->data_, 0, rounded);
  s->bytes_ = bytes;
  s->owning_ = true;
  return s;
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t bytes, std::shared_ptr<void> owner) {
  auto s = std::shared_ptr<Storage>(new Storage());
  s->data_ = data;
  s->bytes_ = bytes;
  s->owning_ = false;
  s->owner_ = std::move(owner);
  return s;
}

Storage::~Storage() {
  if (owning_) std::free(data_);
}

Tensor Tensor::zeros(Shape shape, DType dtype) {
  Tensor t;
  t.storage_ = Storage::allocate(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
  t.strides_ = contiguous_strides(shape);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::view(void* data, Shape shape, DType dtype, std::shared_ptr<void> owner) {
  Tensor t;
  size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  t.storage_ = Storage::wrap(data, bytes, std::move(owner));
  t.strides_ = contiguous_strides(shape);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, Shape shape) {
  INTERLACE_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()),
                  "from_vector: shape does not match the number of values");
  Tensor t = zeros(std::move(shape), DType::kF32);
  std::memcpy(t.raw(), values.data(), values.size() * 4);
  return t;
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

void* Tensor::raw() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->data()) + offset_bytes_;
}

float* Tensor::f32() const {
  INTERLACE_CHECK(dtype_ == DType::kF32, "tensor is not f32");
  return data<float>();
}

Tensor Tensor::reshape(Shape shape) const {
  INTERLACE_CHECK(is_contiguous(), "reshape of a non-contiguous tensor");
  INTERLACE_CHECK(shape_numel(shape) == numel(), "reshape changes the number of elements");
  Tensor t = *this;
  t.strides_ = contiguous_strides(shape);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  INTERLACE_CHECK(rank() >= 1 && begin >= 0 && begin <= end && end <= shape_[0],
                  "slice_rows out of range");
  Tensor t = *this;
  t.offset_bytes_ += static_cast<size_t>(begin * strides_[0]) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

// Copies a possibly strided tensor into contiguous memory of the same dtype.
static void copy_contiguous(const Tensor& src, void* dst) {
  size_t es = dtype_size(src.dtype());
  if (src.is_contiguous()) {
    std::memcpy(dst, src.raw(), src.nbytes());
    return;
  }
  const int r = src.rank();
  std::vector<int64_t> idx(r, 0);
  const char* base = static_cast<const char*>(src.raw());
  char* out = static_cast<char*>(dst);
  for (int64_t n = 0; n < src.numel(); ++n) {
    int64_t off = 0;
    for (int d = 0; d < r; ++d) off += idx[d] * src.strides()[d];
    std::memcpy(out + n * es, base + off * es, es);
    for (int d = r - 1; d >= 0; --d) {
      if (++idx[d] < src.shape()[d]) break;
      idx[d] = 0;
    }
  }
}

Tensor Tensor::clone() const {
  Tensor t = zeros(shape_, dtype_);
  copy_contiguous(*this, t.raw());
  return t;
}

Tensor Tensor::to_f32() const {
  if (dtype_ == DType::kF32 && is_contiguous()) return *this;
  Tensor src = is_contiguous() ? *this : clone();
  Tensor t = zeros(shape_, DType::kF32);
  convert_to_f32(dtype_, src.raw(), t.f32(), static_cast<size_t>(numel()));
  return t;
}

Tensor Tensor::to_dtype(DType dtype) const {
  Tensor f = to_f32();
  Tensor t = zeros(shape_, dtype);
  convert_from_f32(dtype, f.f32(), t.raw(), static_cast<size_t>(numel()));
  return t;
}

}  // namespace interlace::core
