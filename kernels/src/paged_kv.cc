#include "interlace/kernels/paged_kv.h"

#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "interlace/core/status.h"

namespace interlace::kernels {

KvBlockAllocator::KvBlockAllocator(int64_t blocks) : refs_(size_t(blocks), 0), free_(size_t(blocks)) {
  // Block 0 on top of the stack: allocation starts at the pool's beginning.
  std::iota(free_.rbegin(), free_.rend(), 0);
}

absl::StatusOr<int32_t> KvBlockAllocator::allocate() {
  if (free_.empty())
    return absl::ResourceExhaustedError(absl::StrCat("KV block pool: all ", refs_.size(), " blocks are in use"));
  const int32_t b = free_.back();
  free_.pop_back();
  refs_[size_t(b)] = 1;
  return b;
}

void KvBlockAllocator::retain(int32_t block) {
  INTERLACE_CHECK(refs_.at(size_t(block)) > 0, "retain of a free KV block");
  ++refs_[size_t(block)];
}

void KvBlockAllocator::release(int32_t block) {
  INTERLACE_CHECK(refs_.at(size_t(block)) > 0, "release of a free KV block");
  if (--refs_[size_t(block)] == 0) free_.push_back(block);
}

absl::StatusOr<std::vector<BlockCopy>> BlockTable::extend(KvBlockAllocator& pool, int64_t new_length) {
  std::vector<BlockCopy> copies;
  if (new_length <= length_) return copies;
  const int64_t needed = (new_length + block_size_ - 1) / block_size_ - int64_t(blocks_.size());
  // The first position written lies inside the last block: if another table
  // shares it, this one writes into a private copy.
  const bool copy_last = length_ % block_size_ != 0 && pool.references(blocks_.back()) > 1;
  const int64_t wanted = needed + (copy_last ? 1 : 0);
  if (wanted > pool.free_blocks())
    return absl::ResourceExhaustedError(absl::StrCat("KV block pool: ", wanted, " more blocks needed for ", new_length,
                                                     " tokens, ", pool.free_blocks(), " free of ", pool.blocks()));
  if (copy_last) {
    const int32_t fresh = *pool.allocate();
    copies.push_back({blocks_.back(), fresh});
    pool.release(blocks_.back());
    blocks_.back() = fresh;
  }
  for (int64_t i = 0; i < needed; ++i) blocks_.push_back(*pool.allocate());
  length_ = new_length;
  return copies;
}

BlockTable BlockTable::fork(KvBlockAllocator& pool) const {
  for (int32_t b : blocks_) pool.retain(b);
  return *this;
}

void BlockTable::truncate(KvBlockAllocator& pool, int64_t length) {
  if (length >= length_) return;
  const size_t keep = size_t((length + block_size_ - 1) / block_size_);
  for (size_t i = keep; i < blocks_.size(); ++i) pool.release(blocks_[i]);
  blocks_.resize(keep);
  length_ = length;
}

void paged_attention_decode(const AttentionShape& s, const float* q, std::span<const PagedKvView> kv, float* out) {
  const size_t row = size_t(s.kv_heads * s.head_dim) * core::dtype_size(s.kv_dtype);
  std::vector<std::vector<uint8_t>> k(kv.size()), v(kv.size());
  std::vector<KvView> views(kv.size());
  for (size_t b = 0; b < kv.size(); ++b) {
    const PagedKvView& p = kv[b];
    k[b].resize(size_t(p.length) * row);
    v[b].resize(size_t(p.length) * row);
    for (int64_t pos = 0; pos < p.length; ++pos) {
      const size_t at = (size_t(p.block_table[pos / p.block_size]) * size_t(p.block_size) + size_t(pos % p.block_size)) * row;
      std::memcpy(k[b].data() + size_t(pos) * row, static_cast<const uint8_t*>(p.k_pool) + at, row);
      std::memcpy(v[b].data() + size_t(pos) * row, static_cast<const uint8_t*>(p.v_pool) + at, row);
    }
    views[b] = {k[b].data(), v[b].data(), p.length};
  }
  reference_backend().attention_decode(s, q, views, out);
}

}  // namespace interlace::kernels
