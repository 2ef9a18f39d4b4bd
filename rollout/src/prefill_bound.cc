#include "interlace/rollout/prefill_bound.h"

#include <unordered_map>
#include <vector>

namespace interlace::rollout {

int64_t prefill_lower_bound(std::span<const Trajectory> episodes) {
  // A trie of every token sequence seen: a token extends the trie (is new at
  // its prefix) at most once; it counts if it is not generated.
  std::vector<std::unordered_map<int32_t, int32_t>> children(1);
  int64_t bound = 0;
  for (const Trajectory& t : episodes) {
    int32_t node = 0;
    for (size_t i = 0; i < t.tokens.size(); ++i) {
      const auto [it, added] = children[node].try_emplace(t.tokens[i], static_cast<int32_t>(children.size()));
      const int32_t next = it->second;  // read before emplace_back moves the maps
      if (added) {
        children.emplace_back();
        bound += i >= t.loss_mask.size() || t.loss_mask[i] == 0;
      }
      node = next;
    }
  }
  return bound;
}

}  // namespace interlace::rollout
