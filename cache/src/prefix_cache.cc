#include "interlace/cache/prefix_cache.h"

#include <algorithm>
#include <cstring>
#include <unistd.h>
#include <limits>

#include "absl/strings/str_cat.h"
#include "interlace/cache/prefix_hash.h"
#include "interlace/core/status.h"

namespace interlace::cache {

using model::LayerKind;
using model::SequenceState;

struct PrefixCache::StateEntry {
  Node* owner = nullptr;                             // the node it lives on
  uint64_t serial = 0;                               // creation order
  std::vector<int32_t> tail;                         // tokens after the node's blocks
  std::vector<std::vector<uint8_t>> tail_k, tail_v;  // per softmax layer: the tail's KV rows
  std::vector<SequenceState::Lightning> lightning;   // per lightning layer
  std::vector<float> next_logits;                    // the logits after these tokens (prompt ends only), or empty
  int64_t length = 0;
  uint64_t hash = 0;  // of the tokens before it (prefix_hash.h)
  int64_t last_used = 0;
  size_t kv_bytes = 0, state_bytes = 0;
};

struct PrefixCache::Node {
  Node* parent = nullptr;
  std::vector<int32_t> block;
  std::map<std::vector<int32_t>, std::unique_ptr<Node>> children;
  std::vector<std::vector<uint8_t>> k, v;  // per softmax layer: block_size rows
  std::vector<std::unique_ptr<StateEntry>> states;
  int64_t depth = 0;  // blocks from the root
  uint64_t hash = kEmptyPrefixHash;  // of every token up to the block's end
  int64_t version = 0;               // of the tree it is in
  int64_t last_used = 0;
  uint64_t serial = 0;  // creation order
  bool pinned = false;  // on the path of an insert in progress
};

struct PrefixCache::Tree {
  Node root;
};

int64_t default_cache_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  const int64_t memory = pages > 0 && page > 0 ? int64_t(pages) * int64_t(page) : int64_t{8} << 30;
  return std::clamp<int64_t>(memory / 8, int64_t{64} << 20, int64_t{8} << 30);
}

PrefixCache::PrefixCache(const model::Model& model, CacheConfig config)
    : model_config_(model.config()),
      config_(config),
      max_bytes_(config.max_bytes > 0 ? config.max_bytes : default_cache_bytes()),
      kv_row_bytes_(model.kv_row_bytes()) {
  INTERLACE_CHECK(config_.block_size > 0 && config_.max_kv_blocks >= 0 && config_.max_states >= 0 &&
                      config_.max_bytes >= 0,
                  "CacheConfig: sizes must not be negative (and block_size positive)");
  const model::ModelConfig& c = model_config_;
  const double H = double(c.hidden_size), D = double(c.head_dim), Hq = double(c.num_attention_heads),
               Hk = double(c.num_key_value_heads), I = double(c.intermediate_size);
  const double mlp = c.is_moe() ? double(c.num_experts_per_tok) * 3 * H * I + H * double(c.num_local_experts)
                                : 3 * H * I;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const bool lightning = c.layer_types[l] == LayerKind::kLinearAttention;
    (lightning ? lightning_layers_ : softmax_layers_).push_back(l);
    // q, k, v (and the lightning gate) in, o out: multiply-adds per token, x2 for FLOPs.
    const double attention = lightning ? H * 3 * Hq * D + H * Hq * D + Hq * D * H : H * (Hq + 2 * Hk) * D + Hq * D * H;
    dense_flops_per_token_ += 2 * (attention + mlp);
    if (lightning) dense_flops_per_token_ += 4 * Hq * D * D;  // the state: k v^T added, q read through it
    if (lightning) state_bytes_each_ += 2 * Hq * D * D * sizeof(float);  // base and delta
  }
  has_lightning_ = !lightning_layers_.empty();
  has_softmax_ = !softmax_layers_.empty();
}

PrefixCache::~PrefixCache() = default;

void PrefixCache::drop_tree(std::map<int64_t, std::unique_ptr<Tree>>::iterator it) {
  Tree& t = *it->second;
  const int64_t blocks = counters_.kv_blocks, states = counters_.states;
  while (!t.root.children.empty()) drop_node(t.root.children.begin()->second.get());
  drop_states(t.root);  // prompts shorter than a block are checkpointed on the root
  counters_.dropped_old_version += (blocks - counters_.kv_blocks) + (states - counters_.states);
  trees_.erase(it);
}

void PrefixCache::clear() {
  while (!trees_.empty()) drop_tree(trees_.begin());
}

PrefixCache::Tree& PrefixCache::tree(int64_t version) {
  auto it = trees_.find(version);
  if (it != trees_.end()) return *it->second;
  // A version older than one held: the weights went back (a restarted learner
  // republishes its checkpoint). What the trees hold may not be what these
  // weights compute, and the new tree would be the one dropped below.
  if (!trees_.empty() && version < trees_.rbegin()->first) clear();
  auto t = std::make_unique<Tree>();
  t->root.version = version;
  Tree& ref = *t;
  trees_[version] = std::move(t);
  // Keep the newest versions only: a request under an old version is rare, and
  // the memory is better spent on the current one.
  while (static_cast<int64_t>(trees_.size()) > config_.versions_kept) drop_tree(trees_.begin());
  return ref;
}

namespace {
size_t entry_state_bytes(const std::vector<SequenceState::Lightning>& l) {
  size_t b = 0;
  for (const auto& s : l) b += (s.base.size() + s.delta.size()) * sizeof(float);
  return b;
}
}  // namespace

void PrefixCache::announce(const Node& node, bool stored) const {
  if (listener_ && !has_lightning_) listener_({node.hash, node.depth * config_.block_size, node.version}, stored);
}

void PrefixCache::announce(const StateEntry& state, bool stored) const {
  if (listener_) listener_({state.hash, state.length, state.owner->version}, stored);
}

std::vector<UsablePrefix> PrefixCache::usable_prefixes() const {
  std::vector<UsablePrefix> out;
  std::vector<const Node*> stack;
  for (const auto& [v, t] : trees_) stack.push_back(&t->root);
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    if (n->parent && !has_lightning_) out.push_back({n->hash, n->depth * config_.block_size, n->version});
    for (const auto& s : n->states) out.push_back({s->hash, s->length, n->version});
    for (const auto& [b, c] : n->children) stack.push_back(c.get());
  }
  return out;
}

void PrefixCache::drop_states(Node& node) {
  for (const auto& s : node.states) {
    announce(*s, false);
    counters_.kv_bytes -= static_cast<int64_t>(s->kv_bytes);
    counters_.state_bytes -= static_cast<int64_t>(s->state_bytes);
    --counters_.states;
    states_.erase(s->serial);
  }
  node.states.clear();
}

void PrefixCache::drop_node(Node* node) {
  while (!node->children.empty()) drop_node(node->children.begin()->second.get());
  announce(*node, false);
  drop_states(*node);
  counters_.kv_bytes -= block_bytes();
  --counters_.kv_blocks;
  forget_leaf(node);
  Node* parent = node->parent;
  parent->children.erase(node->block);  // destroys node
  if (parent->parent && parent->children.empty()) evictable_leaves_.emplace(parent->last_used, parent->serial, parent);
}

void PrefixCache::touch(Node* node, int64_t now) {
  if (node->last_used == now) return;
  const bool leaf = node->parent && node->children.empty();
  if (leaf) evictable_leaves_.erase({node->last_used, node->serial, node});
  node->last_used = now;
  if (leaf) evictable_leaves_.emplace(now, node->serial, node);
}

void PrefixCache::add_child_of(Node* parent) { forget_leaf(parent); }

void PrefixCache::forget_leaf(Node* node) { evictable_leaves_.erase({node->last_used, node->serial, node}); }

int64_t PrefixCache::block_bytes() const {
  return static_cast<int64_t>(2 * softmax_layers_.size() * config_.block_size * kv_row_bytes_);
}

bool PrefixCache::has_room_for(int64_t tokens) const {
  const int64_t blocks = (tokens + config_.block_size - 1) / config_.block_size;
  const double bytes = double(blocks * block_bytes()) + state_bytes_each_;
  return (config_.max_states == 0 || counters_.states < config_.max_states) &&
         (config_.max_kv_blocks == 0 || counters_.kv_blocks + blocks <= config_.max_kv_blocks) &&
         double(counters_.bytes()) + bytes <= double(max_bytes_);
}

bool PrefixCache::make_room(int64_t bytes, bool block) {
  if (bytes > max_bytes_) return false;  // would never fit: keep what is there
  for (;;) {
    const bool over_count = block ? config_.max_kv_blocks > 0 && counters_.kv_blocks >= config_.max_kv_blocks
                                  : config_.max_states > 0 && counters_.states >= config_.max_states;
    const bool over_bytes = counters_.bytes() + bytes > max_bytes_;
    if (!over_count && !over_bytes) return true;
    // A count cap frees an entry of its own kind; the byte budget the entry
    // worth the least, of either kind.
    const int64_t evicted = over_count ? (block ? evict_kv_block() : evict_state()) : evict_cheapest();
    if (evicted == 0) return false;
    (over_count ? counters_.evicted_for_count : counters_.evicted_for_bytes) += evicted;
  }
}

double PrefixCache::prefill_flops(int64_t from, int64_t to) const {
  const double n = double(to - from);
  // Attention of positions from..to-1 over their prefixes: sum of (p + 1).
  const double prefix_sum = (double(to) * double(to + 1) - double(from) * double(from + 1)) / 2;
  const double per_layer = 4.0 * double(model_config_.num_attention_heads) * double(model_config_.head_dim);
  double attention = 0;
  for (int64_t l : softmax_layers_) {
    const int64_t w = model_config_.window_for_layer(l);
    attention += per_layer * (w > 0 ? std::min(prefix_sum, n * double(w)) : prefix_sum);
  }
  return n * dense_flops_per_token_ + attention;
}

double PrefixCache::state_flops_per_byte(const StateEntry& s) const {
  return prefill_flops(0, s.length) / double(std::max<size_t>(1, s.kv_bytes + s.state_bytes));
}

double PrefixCache::leaf_flops_per_byte(const Node& leaf) const {
  const int64_t B = config_.block_size;
  // Full attention: the block's own tokens, restorable from KV alone. A hybrid
  // restores only where a state is, so the block is worth the states on it.
  double flops = has_lightning_ ? 0.0 : prefill_flops((leaf.depth - 1) * B, leaf.depth * B);
  size_t bytes = static_cast<size_t>(block_bytes());
  for (const auto& st : leaf.states) {
    flops = std::max(flops, prefill_flops(0, st->length));
    bytes += st->kv_bytes + st->state_bytes;
  }
  return flops / double(std::max<size_t>(1, bytes));
}

int64_t PrefixCache::evict_kv_block() {
  // The least recently used leaf of any tree (not pinned by the insert running
  // now: at most the insert's path, so this skips few).
  for (const auto& [last_used, serial, node] : evictable_leaves_)
    if (!node->pinned) return remove_leaf(node);
  return 0;
}

double PrefixCache::score(int64_t last_used, double flops_per_byte, double most) const {
  const double recency = clock_ > 0 ? double(last_used) / double(clock_) : 0.0;
  return config_.recency_weight * recency + (most > 0 ? flops_per_byte / most : 0.0);
}

int64_t PrefixCache::remove_state(StateEntry* victim) {
  Node* owner = victim->owner;
  announce(*victim, false);
  states_.erase(victim->serial);
  ++counters_.state_evictions;
  counters_.kv_bytes -= static_cast<int64_t>(victim->kv_bytes);
  counters_.state_bytes -= static_cast<int64_t>(victim->state_bytes);
  --counters_.states;
  owner->states.erase(std::find_if(owner->states.begin(), owner->states.end(),
                                   [victim](const auto& p) { return p.get() == victim; }));
  // On a hybrid model a leaf block without a state restores nothing: it goes
  // with its last state (and so may its parent, the same way).
  int64_t removed = 1;
  for (Node* n = owner; has_lightning_ && n->parent && n->children.empty() && n->states.empty() && !n->pinned;) {
    Node* parent = n->parent;
    ++counters_.kv_evictions;
    ++removed;
    drop_node(n);
    n = parent;
  }
  return removed;
}

int64_t PrefixCache::remove_leaf(Node* leaf) {
  const int64_t states = static_cast<int64_t>(leaf->states.size());  // they go with it
  counters_.kv_evictions += 1;
  counters_.state_evictions += states;
  drop_node(leaf);
  return 1 + states;
}

int64_t PrefixCache::evict_state() {
  // The score's recency term is relative to the clock, so the order changes
  // as time passes: scanned over the states held.
  double most = 0;
  for (const auto& [serial, s] : states_) most = std::max(most, state_flops_per_byte(*s));
  StateEntry* victim = nullptr;
  double worst = std::numeric_limits<double>::infinity();
  for (const auto& [serial, s] : states_) {
    if (s->owner->pinned) continue;
    if (const double sc = score(s->last_used, state_flops_per_byte(*s), most); sc < worst) worst = sc, victim = s;
  }
  return victim ? remove_state(victim) : 0;
}

int64_t PrefixCache::evict_cheapest() {
  Node* leaf = nullptr;
  for (const auto& [last_used, serial, node] : evictable_leaves_)
    if (!node->pinned) {
      leaf = node;
      break;
    }
  double most = leaf ? leaf_flops_per_byte(*leaf) : 0.0;
  for (const auto& [serial, s] : states_) most = std::max(most, state_flops_per_byte(*s));
  StateEntry* victim = nullptr;
  double state_worst = std::numeric_limits<double>::infinity();
  for (const auto& [serial, s] : states_) {
    if (s->owner->pinned) continue;
    if (const double sc = score(s->last_used, state_flops_per_byte(*s), most); sc < state_worst)
      state_worst = sc, victim = s;
  }
  if (leaf && (!victim || score(leaf->last_used, leaf_flops_per_byte(*leaf), most) <= state_worst))
    return remove_leaf(leaf);
  return victim ? remove_state(victim) : 0;
}

absl::Status PrefixCache::check_consistency() const {
  std::set<std::tuple<int64_t, uint64_t, Node*>> leaves;
  std::map<uint64_t, StateEntry*> states;
  int64_t blocks = 0;
  std::vector<Node*> stack;
  for (const auto& [v, t] : trees_) stack.push_back(&t->root);
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (n->parent) ++blocks;
    if (n->parent && n->children.empty()) leaves.emplace(n->last_used, n->serial, n);
    for (const auto& s : n->states) {
      if (s->owner != n) return absl::InternalError("a state's owner is not the node holding it");
      states.emplace(s->serial, s.get());
    }
    for (const auto& [b, c] : n->children) stack.push_back(c.get());
  }
  if (leaves != evictable_leaves_)
    return absl::InternalError(absl::StrCat("the evictable set holds ", evictable_leaves_.size(), " entries; the trees have ",
                                            leaves.size(), " leaves (or their last uses differ)"));
  if (states != states_) return absl::InternalError("the state list differs from the states in the trees");
  if (blocks != counters_.kv_blocks || static_cast<int64_t>(states.size()) != counters_.states)
    return absl::InternalError(absl::StrCat("counters say ", counters_.kv_blocks, " blocks and ", counters_.states,
                                            " states; the trees hold ", blocks, " and ", states.size()));
  return absl::OkStatus();
}

std::vector<PrefixCache::Node*> PrefixCache::block_path(const Tree& t, std::span<const int32_t> tokens,
                                                         int64_t limit) const {
  const int64_t B = config_.block_size;
  std::vector<Node*> path = {const_cast<Node*>(&t.root)};
  for (;;) {
    Node* n = path.back();
    const int64_t from = n->depth * B;
    if (from + B > limit) break;
    auto c = n->children.find(std::vector<int32_t>(tokens.begin() + from, tokens.begin() + from + B));
    if (c == n->children.end()) break;
    path.push_back(c->second.get());
  }
  return path;
}

int64_t PrefixCache::shared_prefix(std::span<const int32_t> tokens, int64_t version) const {
  auto it = trees_.find(version);
  if (it == trees_.end()) return 0;
  const std::vector<Node*> path = block_path(*it->second, tokens, static_cast<int64_t>(tokens.size()));
  const Node& n = *path.back();
  const int64_t base = n.depth * config_.block_size;
  const auto rest = tokens.subspan(static_cast<size_t>(base));
  auto common = [&](const std::vector<int32_t>& v) {
    return static_cast<int64_t>(std::mismatch(v.begin(), v.end(), rest.begin(), rest.end()).first - v.begin());
  };
  int64_t longest = 0;
  for (const auto& [block, child] : n.children) longest = std::max(longest, common(block));
  for (const auto& s : n.states) longest = std::max(longest, common(s->tail));
  return base + longest;
}

int64_t PrefixCache::lookup(std::span<const int32_t> tokens, int64_t version, SequenceState& state,
                            std::vector<float>* next_logits) {
  ++counters_.lookups;
  counters_.query_tokens += static_cast<int64_t>(tokens.size());
  INTERLACE_CHECK(state.length == 0, "PrefixCache::lookup needs a fresh SequenceState");
  auto it = trees_.find(version);
  if (it == trees_.end() || tokens.size() < 2) return 0;
  const int64_t B = config_.block_size, size = static_cast<int64_t>(tokens.size());
  // All of `tokens` only from a checkpoint that kept the logits after it.
  const int64_t limit = next_logits ? size : size - 1;
  const std::vector<Node*> path = block_path(*it->second, tokens, limit);
  // The deepest usable point: a checkpoint whose tail matches, or (full-attention
  // models only: KV alone restores them) a block boundary.
  int64_t best = 0;
  Node* best_node = nullptr;
  StateEntry* best_entry = nullptr;
  for (Node* n : path) {
    const int64_t base = n->depth * B;
    if (!has_lightning_ && base > best && base < size) {  // the last token runs unless its logits were kept
      best = base;
      best_node = n;
      best_entry = nullptr;
    }
    for (auto& s : n->states) {
      if (s->length > limit || s->length <= best) continue;
      if (s->length == size && s->next_logits.empty()) continue;
      if (!std::equal(s->tail.begin(), s->tail.end(), tokens.begin() + base)) continue;
      best = s->length;
      best_node = n;
      best_entry = s.get();
    }
  }
  if (best == 0) return 0;
  // Restore: KV rows block by block along the path, then the checkpoint's tail and states.
  const int64_t depth = best_node->depth;
  for (size_t i = 0; i < softmax_layers_.size(); ++i) {
    SequenceState::Kv& kv = state.kv[softmax_layers_[i]];
    kv.k.resize(static_cast<size_t>(best) * kv_row_bytes_);
    kv.v.resize(kv.k.size());
    const size_t layer_block_bytes = static_cast<size_t>(B) * kv_row_bytes_;
    for (int64_t d = 1; d <= depth; ++d) {
      std::memcpy(kv.k.data() + (d - 1) * layer_block_bytes, path[d]->k[i].data(), layer_block_bytes);
      std::memcpy(kv.v.data() + (d - 1) * layer_block_bytes, path[d]->v[i].data(), layer_block_bytes);
    }
    if (best_entry && !best_entry->tail.empty()) {
      std::memcpy(kv.k.data() + depth * layer_block_bytes, best_entry->tail_k[i].data(), best_entry->tail_k[i].size());
      std::memcpy(kv.v.data() + depth * layer_block_bytes, best_entry->tail_v[i].data(), best_entry->tail_v[i].size());
    }
  }
  if (best_entry)
    for (size_t i = 0; i < lightning_layers_.size(); ++i) state.lightning[lightning_layers_[i]] = best_entry->lightning[i];
  if (best == size) *next_logits = best_entry->next_logits;
  state.length = best;
  ++clock_;
  for (int64_t d = 0; d <= depth; ++d) touch(path[d], clock_);
  if (best_entry) best_entry->last_used = clock_;
  counters_.hit_tokens += best;
  return best;
}

void PrefixCache::insert(std::span<const int32_t> tokens, int64_t version, const SequenceState& state,
                         std::span<const float> next_logits) {
  const int64_t L = state.length, B = config_.block_size;
  INTERLACE_CHECK(static_cast<int64_t>(tokens.size()) >= L, "PrefixCache::insert: fewer tokens than the state holds");
  if (L == 0) return;
  ++counters_.inserts;
  Tree& t = tree(version);
  ++clock_;
  Node* n = &t.root;
  std::vector<Node*> pinned = {n};
  n->pinned = true;
  const size_t layer_block_bytes = static_cast<size_t>(B) * kv_row_bytes_;  // one layer's K (or V) of a block
  for (int64_t b = 0; (b + 1) * B <= L; ++b) {
    std::vector<int32_t> key(tokens.begin() + b * B, tokens.begin() + (b + 1) * B);
    auto c = n->children.find(key);
    if (c == n->children.end()) {
      if (!make_room(block_bytes(), true)) break;  // everything else pinned: stop here
      auto child = std::make_unique<Node>();
      child->parent = n;
      child->block = key;
      child->depth = b + 1;
      child->hash = prefix_hash(key, n->hash);
      child->version = version;
      for (int64_t layer : softmax_layers_) {
        const auto& kv = state.kv[layer];
        child->k.emplace_back(kv.k.begin() + b * layer_block_bytes, kv.k.begin() + (b + 1) * layer_block_bytes);
        child->v.emplace_back(kv.v.begin() + b * layer_block_bytes, kv.v.begin() + (b + 1) * layer_block_bytes);
      }
      ++counters_.kv_blocks;
      counters_.kv_bytes += block_bytes();
      add_child_of(n);
      child->last_used = clock_;
      child->serial = next_serial_++;
      evictable_leaves_.emplace(clock_, child->serial, child.get());
      c = n->children.emplace(std::move(key), std::move(child)).first;
      announce(*c->second, true);
    }
    n = c->second.get();
    touch(n, clock_);
    n->pinned = true;
    pinned.push_back(n);
  }
  const int64_t base = n->depth * B;
  // A checkpoint is needed unless KV alone restores this point (no lightning
  // layers and a block boundary).
  if (has_lightning_ || base != L) {
    const std::vector<int32_t> tail(tokens.begin() + base, tokens.begin() + L);
    auto same = std::find_if(n->states.begin(), n->states.end(), [&](const auto& s) { return s->tail == tail; });
    const int64_t logits_bytes = static_cast<int64_t>(next_logits.size() * sizeof(float));
    if (same != n->states.end()) {
      (*same)->last_used = clock_;
      // The same point checkpointed before without its logits (one token
      // short of a prompt's end is also where another prompt's end may be).
      if ((*same)->next_logits.empty() && !next_logits.empty() && counters_.bytes() + logits_bytes <= max_bytes_) {
        (*same)->next_logits.assign(next_logits.begin(), next_logits.end());
        (*same)->state_bytes += static_cast<size_t>(logits_bytes);
        counters_.state_bytes += logits_bytes;
      }
    } else {
      const int64_t tail_bytes = static_cast<int64_t>(2 * softmax_layers_.size() * (L - base) * kv_row_bytes_);
      if (make_room(tail_bytes + static_cast<int64_t>(state_bytes_each_) + logits_bytes, false)) {
        auto e = std::make_unique<StateEntry>();
        e->owner = n;
        e->serial = next_serial_++;
        e->tail = tail;
        e->length = L;
        e->hash = prefix_hash(tail, n->hash);
        e->last_used = clock_;
        for (int64_t layer : softmax_layers_) {
          const auto& kv = state.kv[layer];
          e->tail_k.emplace_back(kv.k.begin() + base * kv_row_bytes_, kv.k.begin() + L * kv_row_bytes_);
          e->tail_v.emplace_back(kv.v.begin() + base * kv_row_bytes_, kv.v.begin() + L * kv_row_bytes_);
          e->kv_bytes += 2 * (L - base) * kv_row_bytes_;
        }
        for (int64_t layer : lightning_layers_) {
          SequenceState::Lightning s = state.lightning[layer];
          core::round_array(config_.state_dtype, s.base.data(), s.base.size());
          core::round_array(config_.state_dtype, s.delta.data(), s.delta.size());
          e->lightning.push_back(std::move(s));
        }
        e->next_logits.assign(next_logits.begin(), next_logits.end());
        e->state_bytes = entry_state_bytes(e->lightning) + static_cast<size_t>(logits_bytes);
        counters_.kv_bytes += static_cast<int64_t>(e->kv_bytes);
        counters_.state_bytes += static_cast<int64_t>(e->state_bytes);
        ++counters_.states;
        states_.emplace(e->serial, e.get());
        announce(*e, true);
        n->states.push_back(std::move(e));
      }
    }
  }
  for (Node* p : pinned) p->pinned = false;
}

}  // namespace interlace::cache
