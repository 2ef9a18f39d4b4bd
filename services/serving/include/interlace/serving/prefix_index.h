// Which serving worker probably holds which prefix: the token sequences the
// gateway sent to each worker (prompts, and prompt + answer once a request
// ends, which is where the engine checkpoints), kept as hashes of their
// block-aligned prefixes (each hash covers every token before it, so equal
// hashes mean equal prefixes). A worker's entries go when it goes away, and
// the least recently used ones when a worker's share is full. This is the
// gateway's own record (as SGLang's cache-aware router keeps one), not the
// workers' caches: a worker may have evicted what the index still lists; the
// cached tokens each answer reports say how often that happens.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace interlace::serving {

class PrefixIndex {
 public:
  // Blocks of 4 tokens: a finer grain than the engine's KV blocks, so a short
  // prompt's shared part still counts (a hybrid's state is checkpointed at
  // turn boundaries, which need not fall on a KV block's edge).
  PrefixIndex(size_t workers, int64_t block_size = 4, size_t max_blocks_per_worker = size_t{1} << 20);
  // For each worker, the longest block-aligned prefix of TOKENS it holds, in tokens.
  std::vector<int64_t> match(std::span<const int32_t> tokens) const;
  void insert(size_t worker, std::span<const int32_t> tokens);
  void drop_worker(size_t worker);
  size_t blocks() const;  // entries over all workers

 private:
  std::vector<uint64_t> chain(std::span<const int32_t> tokens) const;
  int64_t block_size_;
  size_t max_blocks_;
  uint64_t tick_ = 0;
  std::vector<std::unordered_map<uint64_t, uint64_t>> workers_;  // prefix hash -> last use
};

}  // namespace interlace::serving
