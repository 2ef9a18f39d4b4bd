// What a prefix-cache insert costs when the pool is full and every new block
// evicts one, at 10K and 100K cached KV blocks. Before the evictable-leaf set
// an eviction walked every node of every tree, so the cost grew with the pool;
// it should now be flat in the pool size. Run e.g.
//   build/bench/cache_bench --benchmark_format=json
#include <benchmark/benchmark.h>

#include <random>

#include "nlohmann/json.hpp"

#include "interlace/cache/prefix_cache.h"
#include "interlace/model/config.h"
#include "interlace/model/model.h"
#include "interlace/model/weights.h"

namespace {

using namespace interlace;

// A two-layer hybrid small enough that 100K blocks fit in ~200 MB: one
// lightning layer (states) and one softmax layer (KV, 64 bytes a row).
std::unique_ptr<model::Model> small_hybrid() {
  auto config = model::parse_config(
      nlohmann::json{{"architectures", {"MiniMaxForCausalLM"}}, {"model_type", "minimax"}, {"vocab_size", 272},
                     {"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2},
                     {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"head_dim", 16},
                     {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
                     {"num_local_experts", 2}, {"num_experts_per_tok", 1}, {"block_size", 64},
                     {"layer_types", {"linear_attention", "full_attention"}}, {"bos_token_id", 256},
                     {"eos_token_id", 256}},
      "cache_bench");
  if (!config.ok()) std::abort();
  auto m = model::Model::from_tensors(*config, model::random_weights(*config, 1), model::PrecisionProfile{});
  if (!m.ok()) std::abort();
  return std::move(*m);
}

// A sequence of `blocks` random blocks plus a 3-token tail (so a state
// checkpoint is saved too), and a state that has "processed" it.
struct Sequence {
  std::vector<int32_t> tokens;
  model::SequenceState state;
};

Sequence random_sequence(const model::Model& m, std::mt19937_64& rng, int64_t blocks) {
  Sequence s;
  std::uniform_int_distribution<int32_t> tok(0, 255);
  s.tokens.resize(static_cast<size_t>(blocks * 16 + 3));
  for (auto& t : s.tokens) t = tok(rng);
  s.state = m.new_sequence();
  s.state.length = static_cast<int64_t>(s.tokens.size());
  for (auto& kv : s.state.kv) {  // the cache reads only the softmax layers' entries
    kv.k.assign(s.tokens.size() * m.kv_row_bytes(), 1);
    kv.v.assign(s.tokens.size() * m.kv_row_bytes(), 2);
  }
  return s;
}

void BM_InsertEvictingFullPool(benchmark::State& bench) {
  static const std::unique_ptr<model::Model> m = small_hybrid();
  const int64_t pool = bench.range(0), blocks_per_sequence = 4;
  cache::PrefixCache cache(*m, {.max_kv_blocks = pool, .max_states = 1024});
  std::mt19937_64 rng(7);
  // Fill the pool (not timed): distinct sequences, so every block is a new node.
  Sequence s = random_sequence(*m, rng, blocks_per_sequence);
  while (cache.counters().kv_blocks < pool) {
    for (auto& t : s.tokens) t = static_cast<int32_t>(rng() % 256);
    cache.insert(s.tokens, 0, s.state);
  }
  const int64_t evictions_before = cache.counters().kv_evictions;
  for (auto _ : bench) {
    s.tokens[0] = static_cast<int32_t>(rng() % 256);  // a new first block: new nodes all the way down
    s.tokens[1] = static_cast<int32_t>(rng() % 256);
    s.tokens[2] = static_cast<int32_t>(rng() % 256);
    cache.insert(s.tokens, 0, s.state);
  }
  bench.counters["kv_blocks"] = double(cache.counters().kv_blocks);
  bench.counters["evictions_per_insert"] =
      double(cache.counters().kv_evictions - evictions_before) / double(std::max<int64_t>(1, bench.iterations()));
  bench.SetItemsProcessed(bench.iterations());
}
BENCHMARK(BM_InsertEvictingFullPool)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
