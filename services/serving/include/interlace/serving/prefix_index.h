// Which serving worker can restore which prefix of a prompt. Two sources:
// - the workers' cache events (CacheEvents): the usable prefixes each
//   worker's cache stored and dropped, by the hash of their tokens
//   (cache/prefix_hash.h): state checkpoints on a hybrid model, KV blocks
//   too on full attention. Only the newest version a worker stored counts:
//   its older tree serves no new request.
// - requests in flight: a prompt sent to a worker will be checkpointed there
//   when prefilled, so its sampling group's other samples and a burst of
//   requests with the same prompt follow it before any event says so.
// A worker's share is capped; past it new entries are refused (counted).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "interlace/cache/prefix_cache.h"

namespace interlace::serving {

class PrefixIndex {
 public:
  explicit PrefixIndex(size_t workers, size_t max_entries_per_worker = size_t{1} << 20);
  void add_worker();  // one more, numbered after the others
  // For each worker, the longest prefix of TOKENS it holds (or will, from a request in flight), in tokens.
  std::vector<int64_t> match(std::span<const int32_t> tokens) const;
  // A worker's cache stored or dropped PREFIX. False: a store refused, the worker's share being full.
  bool apply(size_t worker, const cache::UsablePrefix& prefix, bool stored);
  void clear_worker(size_t worker);  // its cache events' entries (lost events, a restart); in-flight ones stay
  void add_in_flight(size_t worker, std::span<const int32_t> prompt);
  void remove_in_flight(size_t worker, std::span<const int32_t> prompt);
  size_t entries() const;  // from cache events, over all workers

 private:
  struct Holder {  // a worker's cache holds the prefix
    uint32_t worker;
    int64_t length;
    int64_t version;
  };
  struct Sent {  // requests in flight to a worker with this prompt
    uint32_t worker;
    int64_t length;
    int64_t requests;
  };
  size_t max_entries_;
  std::unordered_map<uint64_t, std::vector<Holder>> cached_;  // prefix hash -> holders
  std::unordered_map<uint64_t, std::vector<Sent>> in_flight_;  // prompt hash -> requests sent
  std::vector<size_t> counts_;           // entries per worker
  std::vector<int64_t> newest_version_;  // per worker: the newest version it stored (0 once it holds nothing)
};

}  // namespace interlace::serving
