// The prefix and state cache: lets requests that share a prompt prefix (a
// sampling group, the next turn of an agent episode, a common system prompt)
// skip prefilling it.
//
// One radix tree per weights version, over blocks of `block_size` tokens. A
// node holds its block's keys and values for every softmax layer (its own
// buffers; at most max_kv_blocks nodes exist, counted across all trees: the
// "pool" is that limit, not preallocated memory). Lightning layers have no per-token cache, only a
// recurrent state, so states are saved as checkpoints at chosen positions (end
// of a prompt, a turn boundary, a group's branch point) — not only at block
// boundaries, so short prompts hit too: a checkpoint at position L lives on the
// node of L's last full block with the 0..block_size-1 tail tokens and their KV
// rows. A checkpoint at a prompt's end also keeps the logits after it, so a
// request with the same prompt (a sampling group's next sample) runs nothing
// before its first token. A lookup restores the KV blocks and the nearest
// usable checkpoint into a fresh SequenceState (copies: a running request
// never reads the pool, so eviction can never pull data from under it); only
// the rest is prefilled. shared_prefix() tells the engine where a prompt
// leaves a prefix the tree holds but cannot restore (a branch point), so that
// it checkpoints there.
//
// Size: one budget in bytes (max_bytes) for KV blocks and state checkpoints
// together, the memory their buffers take (nothing is preallocated); counts
// can be capped too, but the budget is what sizes the cache.
//
// Eviction, when an insert needs room: among the least recently used leaf
// block (a block with descendants is never evicted, or its descendants'
// prefixes would break; the leaves are kept in a set ordered by last use, so
// finding it is O(log n), as SGLang's radix cache does) and the states held,
// the entry with the lowest score = recency_weight x recency + the prefill
// FLOPs a hit on it saves per byte it holds, relative to the most among the
// candidates (the Marconi policy). The FLOPs are counted per layer kind:
// projections and MLP for every layer, attention over the prefix for softmax
// layers, the state update for lightning layers. On a hybrid model a block
// without a state on or below it restores nothing (a lookup needs a state for
// the lightning layers), so a leaf goes with its last state. A prefix
// computed under weights version v is only ever used by requests running
// under v; when the version goes back, everything is dropped (clear()).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <tuple>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "interlace/core/dtype.h"
#include "interlace/model/model.h"

namespace interlace::cache {

struct CacheConfig {
  int64_t block_size = 16;
  // Bytes the cache may hold (KV blocks and states together). 0: default_cache_bytes().
  int64_t max_bytes = 0;
  int64_t max_kv_blocks = 0;         // optional cap on KV blocks (block_size tokens of every softmax layer); 0: none
  int64_t max_states = 0;            // optional cap on lightning-state checkpoints; 0: none
  core::DType state_dtype = core::DType::kF32;  // states are stored rounded to this (fp32, bf16, fp16)
  double recency_weight = 1.0;       // Marconi: score = recency_weight * recency + relative FLOPs saved per byte
  int64_t versions_kept = 2;         // trees of older weights versions are dropped
};

// The byte budget when none is given: 1/8 of the machine's physical memory,
// between 64 MiB and 8 GiB. A rollout worker's cache is its largest
// allocation after the model, and a machine runs a learner and a few workers.
int64_t default_cache_bytes();

struct CacheCounters {
  int64_t lookups = 0, query_tokens = 0, hit_tokens = 0;
  int64_t inserts = 0, kv_evictions = 0, state_evictions = 0;
  // Why entries were evicted: the byte budget, a count cap (a leaf block's
  // states go with it and count once); and the blocks and states dropped with
  // the tree of a weights version no longer kept.
  int64_t evicted_for_bytes = 0, evicted_for_count = 0, dropped_old_version = 0;
  int64_t kv_blocks = 0, states = 0;
  int64_t kv_bytes = 0, state_bytes = 0;  // held, by layer kind (softmax KV, lightning state)
  int64_t bytes() const { return kv_bytes + state_bytes; }
};

// A prefix a lookup can restore, as the cache announces it to a router: the
// hash of its tokens (prefix_hash.h), its length and the weights version it
// was computed under. On a hybrid model these are the state checkpoints (KV
// blocks alone restore nothing there); on full attention, every block too.
struct UsablePrefix {
  uint64_t hash = 0;
  int64_t length = 0;
  int64_t version = 0;
  bool operator==(const UsablePrefix&) const = default;
};
// Called as each usable prefix is stored (true) or dropped (false): evicted,
// or gone with its weights version's tree.
using UsablePrefixListener = std::function<void(const UsablePrefix&, bool stored)>;

class PrefixCache {
 public:
  // Takes what it needs of `model` (its config, its KV row size); the model may
  // be freed afterwards, and models with the same config may use the cache.
  PrefixCache(const model::Model& model, CacheConfig config);
  ~PrefixCache();

  // Restores the longest usable cached prefix of `tokens` computed under
  // `version` into `state` (a fresh SequenceState); returns its length (0:
  // miss). At most tokens.size()-1 tokens (the last one must run to give
  // logits), unless `next_logits` is given and a checkpoint of all of `tokens`
  // kept the logits that followed it: then all of them, and `next_logits`
  // receives those logits (a sampling group's later samples run nothing).
  int64_t lookup(std::span<const int32_t> tokens, int64_t version, model::SequenceState& state,
                 std::vector<float>* next_logits = nullptr);
  // Saves `state`, which has processed `tokens` (state.length of them), under
  // `version`: its full blocks' KV and a checkpoint at state.length, with the
  // logits the model gave after it when `next_logits` is not empty.
  void insert(std::span<const int32_t> tokens, int64_t version, const model::SequenceState& state,
              std::span<const float> next_logits = {});
  // How many leading tokens of `tokens` the tree of `version` holds, restorable
  // or not: whole blocks, then the longest common start with a child block or a
  // checkpoint's tail. Where this passes what lookup restores, `tokens` leaves
  // a prefix another request computed: a branch point (a shared system prompt
  // and two questions), where a checkpoint lets every later request branch
  // without prefilling the shared part again (on a hybrid, blocks alone
  // restore nothing).
  int64_t shared_prefix(std::span<const int32_t> tokens, int64_t version) const;

  // Whether `tokens` more tokens (as new blocks and one state) would fit
  // without evicting anything: for checkpoints that are worth keeping only if
  // they cost nothing (the end of a generation, which the next turn may use).
  bool has_room_for(int64_t tokens) const;

  // Drops everything (counted as dropped_old_version). The engine calls it when
  // its weights version does not increase: the same version number may then
  // name other weights (a learner restarted from a checkpoint trains it again).
  void clear();

  // Announces every usable prefix stored or dropped from now on (one listener; empty: none).
  void set_listener(UsablePrefixListener listener) { listener_ = std::move(listener); }
  // Every usable prefix held now: what the listener's calls add up to.
  std::vector<UsablePrefix> usable_prefixes() const;

  const CacheCounters& counters() const { return counters_; }
  // Walks every tree and checks the bookkeeping against it: the evictable set
  // holds exactly the non-root leaves with their last use, the state list
  // exactly the states, the counters the blocks and states held. For tests.
  absl::Status check_consistency() const;
  const CacheConfig& config() const { return config_; }
  int64_t max_bytes() const { return max_bytes_; }  // the byte budget in force

 private:
  struct Node;
  struct Tree;
  struct StateEntry;
  Tree& tree(int64_t version);
  // The root and the nodes of the whole blocks of `tokens[0, limit)` the tree holds.
  std::vector<Node*> block_path(const Tree& t, std::span<const int32_t> tokens, int64_t limit) const;
  void drop_tree(std::map<int64_t, std::unique_ptr<Tree>>::iterator it);
  // Frees room for a new block (`block`) or state of `bytes`: evicts until the
  // byte budget and the count caps allow it; false when only pinned entries are left.
  bool make_room(int64_t bytes, bool block);
  // Each returns the entries (blocks and states) it removed; 0: nothing evictable.
  int64_t evict_kv_block();
  int64_t evict_cheapest();
  // Prefill FLOPs of positions [from, to) of a sequence (see the header comment).
  double prefill_flops(int64_t from, int64_t to) const;
  // FLOPs a hit saves per byte held, for a leaf block and for a state.
  double leaf_flops_per_byte(const Node& leaf) const;
  double state_flops_per_byte(const StateEntry& s) const;
  int64_t block_bytes() const;
  // Sets a node's last use, keeping the evictable-leaf set ordered.
  void touch(Node* node, int64_t now);
  void add_child_of(Node* parent);     // parent stops being a leaf
  void forget_leaf(Node* node);
  int64_t evict_state();
  int64_t remove_state(StateEntry* victim);  // and, on a hybrid, the blocks it leaves useless
  int64_t remove_leaf(Node* leaf);           // and the states on it
  double score(int64_t last_used, double flops_per_byte, double most) const;
  void drop_node(Node* node);
  void drop_states(Node& node);  // the checkpoints on NODE, counted and announced
  void announce(const Node& node, bool stored) const;  // a block, where blocks are usable prefixes
  void announce(const StateEntry& state, bool stored) const;

  // A copy, not a reference: the cache outlives the model it was made from (a
  // worker swaps in new weights and frees the old model while the cache lives on).
  const model::ModelConfig model_config_;
  CacheConfig config_;
  int64_t max_bytes_;
  size_t kv_row_bytes_;
  double dense_flops_per_token_ = 0;  // projections and MLPs of every layer
  double state_bytes_each_ = 0;       // one checkpoint's lightning states
  bool has_lightning_ = false, has_softmax_ = false;
  std::vector<int64_t> softmax_layers_, lightning_layers_;
  int64_t clock_ = 0;
  std::map<int64_t, std::unique_ptr<Tree>> trees_;
  // Every non-root node without children, by (last use, creation serial,
  // node): the front is the next KV eviction (pinned ones are skipped). The
  // serial breaks ties the same way on every run (not by address).
  std::set<std::tuple<int64_t, uint64_t, Node*>> evictable_leaves_;
  std::map<uint64_t, StateEntry*> states_;  // every state checkpoint held, by creation serial
  uint64_t next_serial_ = 0;
  CacheCounters counters_;
  UsablePrefixListener listener_;
};

}  // namespace interlace::cache
