#include "interlace/serving/prefix_index.h"

#include <algorithm>

#include "interlace/cache/prefix_hash.h"

namespace interlace::serving {

PrefixIndex::PrefixIndex(size_t workers, size_t max_entries_per_worker)
    : max_entries_(max_entries_per_worker), counts_(workers, 0), newest_version_(workers, 0) {}

void PrefixIndex::add_worker() {
  counts_.push_back(0);
  newest_version_.push_back(0);
}

std::vector<int64_t> PrefixIndex::match(std::span<const int32_t> tokens) const {
  std::vector<int64_t> out(counts_.size(), 0);
  uint64_t h = cache::kEmptyPrefixHash;
  for (size_t i = 0; i < tokens.size(); ++i) {
    h = cache::extend_prefix_hash(h, tokens[i]);
    const int64_t length = int64_t(i + 1);
    // The length must agree too: a hash collision of two different lengths matches nothing.
    if (auto it = cached_.find(h); it != cached_.end())
      for (const Holder& x : it->second)
        if (x.length == length && x.version == newest_version_[x.worker]) out[x.worker] = length;
    if (auto it = in_flight_.find(h); it != in_flight_.end())
      for (const Sent& x : it->second)
        if (x.length == length) out[x.worker] = length;
  }
  return out;
}

bool PrefixIndex::apply(size_t worker, const cache::UsablePrefix& p, bool stored) {
  const uint32_t w = uint32_t(worker);
  if (!stored) {
    auto it = cached_.find(p.hash);
    if (it == cached_.end()) return true;
    const size_t before = it->second.size();
    std::erase_if(it->second, [&](const Holder& x) { return x.worker == w && x.length == p.length && x.version == p.version; });
    counts_[worker] -= before - it->second.size();
    if (it->second.empty()) cached_.erase(it);
    if (counts_[worker] == 0) newest_version_[worker] = 0;  // all gone (a version going back clears everything)
    return true;
  }
  // The newest version stored counts: a request begun under older weights may still store under them.
  newest_version_[worker] = std::max(newest_version_[worker], p.version);
  auto& holders = cached_[p.hash];
  for (const Holder& x : holders)
    if (x.worker == w && x.length == p.length && x.version == p.version) return true;  // already held
  if (counts_[worker] >= max_entries_) {
    if (holders.empty()) cached_.erase(p.hash);
    return false;
  }
  holders.push_back({w, p.length, p.version});
  ++counts_[worker];
  return true;
}

void PrefixIndex::clear_worker(size_t worker) {
  for (auto it = cached_.begin(); it != cached_.end();) {
    std::erase_if(it->second, [&](const Holder& x) { return x.worker == worker; });
    it = it->second.empty() ? cached_.erase(it) : std::next(it);
  }
  counts_[worker] = 0;
  newest_version_[worker] = 0;
}

void PrefixIndex::add_in_flight(size_t worker, std::span<const int32_t> prompt) {
  auto& sent = in_flight_[cache::prefix_hash(prompt)];
  for (Sent& x : sent)
    if (x.worker == worker && x.length == int64_t(prompt.size())) {
      ++x.requests;
      return;
    }
  sent.push_back({uint32_t(worker), int64_t(prompt.size()), 1});
}

void PrefixIndex::remove_in_flight(size_t worker, std::span<const int32_t> prompt) {
  auto it = in_flight_.find(cache::prefix_hash(prompt));
  if (it == in_flight_.end()) return;
  auto& sent = it->second;
  auto x = std::find_if(sent.begin(), sent.end(),
                        [&](const Sent& y) { return y.worker == worker && y.length == int64_t(prompt.size()); });
  if (x != sent.end() && --x->requests == 0) sent.erase(x);
  if (sent.empty()) in_flight_.erase(it);
}

size_t PrefixIndex::entries() const {
  size_t n = 0;
  for (size_t c : counts_) n += c;
  return n;
}

}  // namespace interlace::serving
