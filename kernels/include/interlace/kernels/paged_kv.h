// The paged KV layout the GPU backend is built for (vLLM's PagedAttention):
// a softmax layer's keys and values live in pools of fixed-size blocks, each
// [block_size, kv_heads, head_dim] in the KV dtype, and a sequence holds a
// table of block indices: its position p is row p % block_size of block
// table[p / block_size]. Sequences that share a prefix share its blocks, so a
// prefix-cache hit or a group's fork copies a table, never the rows.
//
// This file is the host side, used and tested on the CPU (issue 24):
// - KvBlockAllocator: the free list and reference counts of a pool's blocks.
//   It holds no rows: the pool's storage is host memory for the CPU and
//   device memory (cuda::DeviceBuffer) for the GPU, indexed the same way.
// - BlockTable: one sequence's blocks, grown as it is written, forked (shared
//   blocks, copy-on-write of a shared block before a write into it) and cut
//   back (speculative decoding's rollback, an aborted turn).
// - paged_attention_decode: the reference of decode attention through block
//   tables, which the CUDA paged kernel is checked against.
// The model (model::SequenceState) still keeps each sequence's KV contiguous
// on the CPU; moving it onto these tables is part of running the forward on
// the device, not done yet.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "interlace/kernels/backend.h"

namespace interlace::kernels {

class KvBlockAllocator {
 public:
  explicit KvBlockAllocator(int64_t blocks);
  // A free block with one reference; ResourceExhausted (saying how many
  // blocks the pool has) when none is free.
  absl::StatusOr<int32_t> allocate();
  void retain(int32_t block);   // one more reference (a sharer)
  void release(int32_t block);  // one fewer; the block is free at zero
  int32_t references(int32_t block) const { return refs_.at(size_t(block)); }
  int64_t blocks() const { return int64_t(refs_.size()); }
  int64_t free_blocks() const { return int64_t(free_.size()); }

 private:
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

// What a copy-on-write needs done to the pool's rows: copy block `from` into
// block `to` (all rows, keys and values of every layer sharing the table).
struct BlockCopy {
  int32_t from = -1, to = -1;
};

class BlockTable {
 public:
  explicit BlockTable(int64_t block_size) : block_size_(block_size) {}
  int64_t block_size() const { return block_size_; }
  int64_t length() const { return length_; }
  const std::vector<int32_t>& blocks() const { return blocks_; }
  // Block and row of position p.
  int32_t block_of(int64_t p) const { return blocks_[size_t(p / block_size_)]; }

  // Makes positions [length, new_length) writable: allocates the blocks they
  // need and, when the block holding `length` is shared with another table,
  // replaces it by a private copy (returned: the caller copies the rows).
  // On ResourceExhausted nothing changed.
  absl::StatusOr<std::vector<BlockCopy>> extend(KvBlockAllocator& pool, int64_t new_length);
  // Another table holding the same positions: every block gains a reference.
  BlockTable fork(KvBlockAllocator& pool) const;
  // Keeps positions [0, length), releasing the blocks no longer needed.
  void truncate(KvBlockAllocator& pool, int64_t length);
  void clear(KvBlockAllocator& pool) { truncate(pool, 0); }

 private:
  int64_t block_size_;
  int64_t length_ = 0;
  std::vector<int32_t> blocks_;
};

// One sequence's keys and values in a pool: k_pool and v_pool are
// [blocks, block_size, kv_heads, head_dim] in the AttentionShape's kv_dtype.
struct PagedKvView {
  const void* k_pool = nullptr;
  const void* v_pool = nullptr;
  const int32_t* block_table = nullptr;  // [ceil(length / block_size)]
  int64_t block_size = 0;
  int64_t length = 0;
};

// Decode attention through block tables, defined as attention_decode over the
// rows gathered in position order (the reference: plain loops, double sums).
void paged_attention_decode(const AttentionShape& s, const float* q, std::span<const PagedKvView> kv, float* out);

}  // namespace interlace::kernels
