#include "interlace/serving/prefix_index.h"

#include <algorithm>

namespace interlace::serving {
namespace {

uint64_t mix(uint64_t h, uint64_t x) {  // splitmix64 of the running hash and the next value
  uint64_t z = h ^ (x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

PrefixIndex::PrefixIndex(size_t workers, int64_t block_size, size_t max_blocks_per_worker)
    : block_size_(block_size), max_blocks_(max_blocks_per_worker), workers_(workers) {}

std::vector<uint64_t> PrefixIndex::chain(std::span<const int32_t> tokens) const {
  std::vector<uint64_t> out;
  uint64_t h = 0x6a09e667f3bcc909ULL;
  for (size_t i = 0; i + size_t(block_size_) <= tokens.size(); i += size_t(block_size_)) {
    for (size_t k = i; k < i + size_t(block_size_); ++k) h = mix(h, uint32_t(tokens[k]));
    out.push_back(h);
  }
  return out;
}

std::vector<int64_t> PrefixIndex::match(std::span<const int32_t> tokens) const {
  const std::vector<uint64_t> hashes = chain(tokens);
  std::vector<int64_t> out(workers_.size(), 0);
  for (size_t w = 0; w < workers_.size(); ++w) {
    // Prefixes nest: the first block hash a worker lacks ends its match.
    size_t k = 0;
    while (k < hashes.size() && workers_[w].contains(hashes[k])) ++k;
    out[w] = int64_t(k) * block_size_;
  }
  return out;
}

void PrefixIndex::insert(size_t worker, std::span<const int32_t> tokens) {
  auto& entries = workers_[worker];
  ++tick_;
  for (uint64_t h : chain(tokens)) entries[h] = tick_;
  if (entries.size() <= max_blocks_) return;
  // Over the share: drop the least recently used quarter in one go.
  std::vector<uint64_t> ticks;
  ticks.reserve(entries.size());
  for (const auto& [h, t] : entries) ticks.push_back(t);
  auto nth = ticks.begin() + long(entries.size() / 4);
  std::nth_element(ticks.begin(), nth, ticks.end());
  const uint64_t cut = *nth;
  std::erase_if(entries, [cut](const auto& e) { return e.second < cut; });
}

void PrefixIndex::drop_worker(size_t worker) { workers_[worker].clear(); }

size_t PrefixIndex::blocks() const {
  size_t n = 0;
  for (const auto& w : workers_) n += w.size();
  return n;
}

}  // namespace interlace::serving
