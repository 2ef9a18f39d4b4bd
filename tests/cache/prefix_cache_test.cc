// The prefix and state cache: a hit gives the log-probs recomputation gives
// (fp32 states: to kernel rounding, bitwise under strict kernels; bf16 states:
// within a stated bound), for full and hybrid models; versions never mix;
// eviction keeps within its pools and never breaks what is restored; a
// sampling group prefills its prompt once; agent turns hit their history.
#include "interlace/cache/prefix_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <random>

#include "interlace/cache/prefix_hash.h"
#include "interlace/rollout/engine.h"
#include "model/test_configs.h"

namespace interlace::cache {
namespace {

std::shared_ptr<model::Model> make_model(const nlohmann::json& json, const std::string& precision) {
  const model::ModelConfig c = testing::parse_or_die(json);
  return std::shared_ptr<model::Model>(
      std::move(*model::Model::from_tensors(c, model::random_weights(c, 17, 0.3f), *model::parse_precision(precision))));
}

std::vector<int32_t> tokens(int n, int salt, int64_t vocab) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 31 + salt * 17 + i * i) % vocab));
  return t;
}

rollout::RequestOutput generate(rollout::Engine& e, const std::vector<int32_t>& prompt, int n) {
  rollout::Request r;
  r.prompt = prompt;
  r.sampling.temperature = 0;
  r.sampling.max_new_tokens = n;
  const int64_t id = e.submit(r);
  e.run();
  for (auto& o : e.take_finished())
    if (o.id == id) return o;
  ADD_FAILURE() << "request lost";
  return {};
}

// Runs `prompts` together in one engine (with `cache`, or none), request i
// sampled with seed i at `temperature`; outputs in submission order, and the
// engine's counters.
std::pair<std::vector<rollout::RequestOutput>, rollout::EngineStats> run_together(
    const std::shared_ptr<model::Model>& m, PrefixCache* cache, const std::vector<std::vector<int32_t>>& prompts,
    float temperature, int max_new_tokens) {
  rollout::Engine e(m, 0, {.max_running = 8, .prefill_chunk = 64});
  if (cache) e.set_cache(cache);
  for (size_t i = 0; i < prompts.size(); ++i) {
    rollout::Request r;
    r.prompt = prompts[i];
    r.sampling.seed = i;
    r.sampling.temperature = temperature;
    r.sampling.max_new_tokens = max_new_tokens;
    e.submit(r);
  }
  e.run();
  auto out = e.take_finished();
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return {out, e.stats()};
}

struct Case {
  std::string name;
  nlohmann::json json;
  std::string precision;
  core::DType state = core::DType::kF32;
  double bound;  // max |dlogp| allowed between hit and recompute
};
class CacheHit : public ::testing::TestWithParam<Case> {};

// Turn 1 generates from a prompt; turn 2's prompt is turn 1's history plus a
// reply, as in an agent episode: it must hit the checkpoint taken when turn 1
// ended and continue exactly as a cold prefill of the whole history does.
TEST_P(CacheHit, SameLogprobsAsRecomputation) {
  const Case& k = GetParam();
  auto m = make_model(k.json, k.precision);
  CacheConfig cc;
  cc.block_size = 4;
  cc.state_dtype = k.state;
  PrefixCache cache(*m, cc);
  rollout::Engine warm(m, 0, {.prefill_chunk = 16});
  warm.set_cache(&cache);
  std::vector<int32_t> prompt = tokens(37, 1, m->vocab_size());  // not a multiple of the block size
  const auto first = generate(warm, prompt, 6);
  EXPECT_EQ(first.cached_tokens, 0);
  std::vector<int32_t> next = prompt;
  next.insert(next.end(), first.tokens.begin(), first.tokens.end());
  for (int32_t t : tokens(9, 2, m->vocab_size())) next.push_back(t);
  const auto hit = generate(warm, next, 12);
  // Turn 1's prompt and all but the last of its 6 answer tokens (that one was
  // sampled and never fed back): the checkpoint taken when generation ended.
  EXPECT_EQ(hit.cached_tokens, 37 + 6 - 1) << "turn 2 restores turn 1's history";
  rollout::Engine cold(m, 0, {.prefill_chunk = 16});
  const auto ref = generate(cold, next, 12);
  EXPECT_EQ(ref.cached_tokens, 0);
  double worst = 0;
  for (size_t i = 0; i < ref.raw_logprobs.size() && i < hit.raw_logprobs.size(); ++i) {
    if (hit.tokens[i] != ref.tokens[i]) break;  // bf16 states may change a greedy choice; compare up to there
    worst = std::max(worst, std::fabs(double(hit.raw_logprobs[i]) - ref.raw_logprobs[i]));
    if (k.precision == "strict" && k.state == core::DType::kF32) {
      EXPECT_EQ(std::memcmp(&hit.raw_logprobs[i], &ref.raw_logprobs[i], sizeof(float)), 0) << i;
    }
  }
  if (k.state == core::DType::kF32) {
    EXPECT_EQ(hit.tokens, ref.tokens);
  }
  EXPECT_LE(worst, k.bound) << k.name;
  std::fprintf(stderr, "%s: cache hit vs recompute, max |dlogp| %.3g over %zu tokens\n", k.name.c_str(), worst,
               ref.tokens.size());
  const CacheCounters& c = cache.counters();
  EXPECT_EQ(c.hit_tokens, 37 + 6 - 1);
  EXPECT_GT(c.query_tokens, c.hit_tokens);
  if (k.json == testing::minimax_json()) {
    EXPECT_GT(c.state_bytes, 0);
  }
  EXPECT_GT(c.kv_bytes, 0);
}

INSTANTIATE_TEST_SUITE_P(
    FullAndHybrid, CacheHit,
    ::testing::Values(Case{"qwen3_fp32", testing::qwen3_json(), "fp32", core::DType::kF32, 2e-5},
                      Case{"minimax_fp32", testing::minimax_json(), "fp32", core::DType::kF32, 2e-5},
                      Case{"qwen3_strict", testing::qwen3_json(), "strict", core::DType::kF32, 0.0},
                      Case{"minimax_strict", testing::minimax_json(), "strict", core::DType::kF32, 0.0},
                      Case{"minimax_bf16_state", testing::minimax_json(), "fp32", core::DType::kBF16, 0.05}),
    [](const auto& info) { return info.param.name; });

TEST(PrefixCache, VersionsNeverMix) {
  auto m = make_model(testing::minimax_json(), "fp32");
  PrefixCache cache(*m, {.block_size = 4});
  const auto p = tokens(20, 3, m->vocab_size());
  model::SequenceState s = m->new_sequence();
  std::vector<float> logits;
  m->prefill(s, p, logits);
  cache.insert(p, 7, s);
  model::SequenceState a = m->new_sequence(), b = m->new_sequence();
  std::vector<int32_t> longer = p;
  longer.push_back(1);
  EXPECT_EQ(cache.lookup(longer, 8, a), 0);
  EXPECT_EQ(a.length, 0);
  EXPECT_EQ(cache.lookup(longer, 7, b), 20);
  // Old versions are dropped once newer ones arrive (versions_kept = 2).
  model::SequenceState s2 = m->new_sequence();
  m->prefill(s2, p, logits);
  cache.insert(p, 8, s2);
  cache.insert(p, 9, s2);
  model::SequenceState c = m->new_sequence();
  EXPECT_EQ(cache.lookup(longer, 7, c), 0);
}

TEST(PrefixCache, EvictionStaysWithinPoolsAndRestoresCorrectly) {
  auto m = make_model(testing::qwen3_json(), "strict");
  PrefixCache cache(*m, {.block_size = 4, .max_kv_blocks = 6, .max_states = 2});
  std::vector<float> logits;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 5; ++i) {
    prompts.push_back(tokens(14 + i, 10 + i, m->vocab_size()));
    model::SequenceState s = m->new_sequence();
    m->prefill(s, prompts.back(), logits);
    cache.insert(prompts.back(), 0, s);  // 3-4 blocks each: forces evictions
    EXPECT_LE(cache.counters().kv_blocks, 6);
    EXPECT_LE(cache.counters().states, 2);
  }
  EXPECT_GT(cache.counters().kv_evictions, 0);
  // An insert longer than the whole pool keeps its own path (never evicts what it is building).
  const auto huge = tokens(40, 99, m->vocab_size());
  model::SequenceState hs = m->new_sequence();
  m->prefill(hs, huge, logits);
  cache.insert(huge, 0, hs);
  EXPECT_LE(cache.counters().kv_blocks, 6);
  // Whatever survived restores exactly: continuing from a hit equals a cold run.
  for (const auto& p : prompts) {
    std::vector<int32_t> q = p;
    q.push_back(5);
    q.push_back(6);
    model::SequenceState s = m->new_sequence();
    const int64_t hit = cache.lookup(q, 0, s);
    std::vector<float> warm_logits, cold_logits;
    m->prefill(s, std::span<const int32_t>(q).subspan(hit), warm_logits);
    model::SequenceState cold = m->new_sequence();
    m->prefill(cold, q, cold_logits);
    EXPECT_EQ(warm_logits, cold_logits) << "hit of " << hit;
  }
}

// Random inserts and lookups over shared prefixes, three weights versions and
// pools small enough that most inserts evict: after every operation the
// evictable-leaf set, the state list and the counters agree with a walk of
// the trees (what an eviction used to compute by walking them).
TEST(PrefixCache, EvictionBookkeepingMatchesTheTrees) {
  auto m = make_model(testing::minimax_json(), "fp32");
  PrefixCache cache(*m, {.block_size = 4, .max_kv_blocks = 40, .max_states = 12});
  std::mt19937_64 rng(std::random_device{}());
  const uint64_t seed = rng();
  rng.seed(seed);
  std::vector<std::vector<int32_t>> stems;  // shared prefixes, as sampling groups and turns make
  for (int i = 0; i < 6; ++i) stems.push_back(tokens(4 * (1 + i % 3), 100 + i, m->vocab_size()));
  for (int op = 0; op < 600; ++op) {
    std::vector<int32_t> seq = stems[rng() % stems.size()];
    const int extra = static_cast<int>(rng() % 14);
    for (int i = 0; i < extra; ++i) seq.push_back(static_cast<int32_t>(rng() % m->vocab_size()));
    const int64_t version = static_cast<int64_t>(op / 250);  // 0, 1, 2: the oldest tree is dropped
    model::SequenceState s = m->new_sequence();
    if (rng() % 3 == 0) {
      (void)cache.lookup(seq, version, s);
    } else {
      s.length = static_cast<int64_t>(seq.size());
      for (auto& kv : s.kv) {
        kv.k.assign(seq.size() * m->kv_row_bytes(), 1);
        kv.v.assign(seq.size() * m->kv_row_bytes(), 2);
      }
      cache.insert(seq, version, s);
    }
    const absl::Status ok = cache.check_consistency();
    ASSERT_TRUE(ok.ok()) << "after operation " << op << " (seed " << seed << "): " << ok;
    ASSERT_LE(cache.counters().kv_blocks, 40);
    ASSERT_LE(cache.counters().states, 12);
  }
  EXPECT_GT(cache.counters().kv_evictions, 50);
  EXPECT_GT(cache.counters().state_evictions, 50);
}

// What the cache announces to a router (issue 21's cache events): the
// prefixes stored minus those dropped are exactly usable_prefixes() after
// every operation (evictions and dropped versions included); each hash is
// the hash of the tokens it covers; and a lookup restores every prefix
// announced as held. For a hybrid (states only) and full attention (blocks too).
class Announced : public ::testing::TestWithParam<const char*> {};

TEST_P(Announced, PrefixesAreWhatTheCacheHoldsAndRestores) {
  auto m = make_model(std::string(GetParam()) == "hybrid" ? testing::minimax_json() : testing::qwen3_json(), "fp32");
  PrefixCache cache(*m, {.block_size = 4, .max_kv_blocks = 40, .max_states = 12});
  std::mt19937_64 rng(std::random_device{}());
  const uint64_t seed = rng();
  rng.seed(seed);
  std::vector<int32_t> seq;  // what the insert running now was given
  std::map<std::tuple<uint64_t, int64_t, int64_t>, std::vector<int32_t>> held;  // (hash, length, version) -> tokens
  int64_t stored = 0, dropped = 0;
  cache.set_listener([&](const UsablePrefix& p, bool is_stored) {
    const auto key = std::make_tuple(p.hash, p.length, p.version);
    if (is_stored) {
      ++stored;
      ASSERT_LE(p.length, int64_t(seq.size()));
      const std::vector<int32_t> covered(seq.begin(), seq.begin() + p.length);
      EXPECT_EQ(p.hash, prefix_hash(covered)) << "length " << p.length << " (seed " << seed << ")";
      EXPECT_TRUE(held.emplace(key, covered).second) << "announced twice (seed " << seed << ")";
    } else {
      ++dropped;
      EXPECT_EQ(held.erase(key), 1u) << "dropped without being stored (seed " << seed << ")";
    }
  });
  std::vector<std::vector<int32_t>> stems = {{}};  // the empty stem: prompts shorter than a block, checkpointed on a root
  for (int i = 0; i < 6; ++i) stems.push_back(tokens(4 * (1 + i % 3), 100 + i, m->vocab_size()));
  for (int op = 0; op < 400; ++op) {
    seq = stems[rng() % stems.size()];
    const int extra = static_cast<int>(rng() % 14);
    for (int i = 0; i < extra; ++i) seq.push_back(static_cast<int32_t>(rng() % m->vocab_size()));
    model::SequenceState s = m->new_sequence();
    s.length = static_cast<int64_t>(seq.size());
    for (auto& kv : s.kv) {
      kv.k.assign(seq.size() * m->kv_row_bytes(), 1);
      kv.v.assign(seq.size() * m->kv_row_bytes(), 2);
    }
    if (seq.empty()) continue;
    cache.insert(seq, op / 150, s);  // versions 0, 1, 2: the oldest tree is dropped
    const absl::Status consistent = cache.check_consistency();
    ASSERT_TRUE(consistent.ok()) << "after insert " << op << " (seed " << seed << "): " << consistent;
    std::vector<UsablePrefix> now = cache.usable_prefixes();
    std::set<std::tuple<uint64_t, int64_t, int64_t>> listed;
    for (const auto& p : now) listed.emplace(p.hash, p.length, p.version);
    ASSERT_EQ(listed.size(), now.size()) << "usable_prefixes lists one twice";
    std::set<std::tuple<uint64_t, int64_t, int64_t>> announced;
    for (const auto& [key, t] : held) announced.insert(key);
    ASSERT_EQ(listed, announced) << "after insert " << op << " (seed " << seed << ")";
  }
  EXPECT_GT(dropped, 50);
  EXPECT_EQ(stored - dropped, int64_t(held.size()));
  for (const auto& [key, t] : held) {
    std::vector<int32_t> query = t;
    query.push_back(1);
    model::SequenceState s = m->new_sequence();
    EXPECT_GE(cache.lookup(query, std::get<2>(key), s), std::get<1>(key)) << "an announced prefix did not restore";
  }
}

INSTANTIATE_TEST_SUITE_P(PrefixCache, Announced, ::testing::Values("hybrid", "full"));

// A prompt shorter than a block is checkpointed on its tree's root: when that
// version's tree goes (an old version, or clear()), its state goes too,
// counted and announced, and nothing keeps pointing at it.
TEST(PrefixCache, ARootsCheckpointGoesWithItsTree) {
  auto m = make_model(testing::minimax_json(), "fp32");
  PrefixCache cache(*m, {.block_size = 4, .versions_kept = 2});
  int64_t dropped = 0;
  cache.set_listener([&](const UsablePrefix&, bool stored) { dropped += !stored; });
  auto insert = [&](const std::vector<int32_t>& t, int64_t version) {
    model::SequenceState s = m->new_sequence();
    s.length = int64_t(t.size());
    for (auto& kv : s.kv) {
      kv.k.assign(t.size() * m->kv_row_bytes(), 1);
      kv.v.assign(t.size() * m->kv_row_bytes(), 2);
    }
    cache.insert(t, version, s);
  };
  insert({5, 6}, 0);  // two tokens: a state on the root of version 0's tree
  insert({7, 8, 9, 10, 11}, 1);
  EXPECT_EQ(cache.counters().states, 2);
  insert({12, 13, 14, 15, 16}, 2);  // version 0's tree is dropped
  EXPECT_EQ(cache.counters().states, 2);
  EXPECT_EQ(dropped, 1);
  const absl::Status ok = cache.check_consistency();
  EXPECT_TRUE(ok.ok()) << ok;
  cache.clear();
  EXPECT_EQ(cache.counters().states, 0);
  EXPECT_EQ(cache.counters().bytes(), 0);
  EXPECT_TRUE(cache.usable_prefixes().empty());
}

// A sampling group's later samples restore the whole prompt and sample their
// first token from the logits kept with its checkpoint: the prompt is
// prefilled once, and every sample is what it is without a cache (bitwise
// under strict kernels).
TEST(PrefixCache, SamplingGroupPrefillsItsPromptOnce) {
  auto m = make_model(testing::minimax_json(), "strict");
  const auto prompt = tokens(30, 5, m->vocab_size());
  const std::vector<std::vector<int32_t>> group(4, prompt);
  auto run_group = [&](PrefixCache* cache) { return run_together(m, cache, group, 1.0f, 5); };
  PrefixCache cache(*m, {.block_size = 4});
  const auto [out, stats] = run_group(&cache);
  ASSERT_EQ(out.size(), 4u);
  int hits = 0;
  for (const auto& o : out) hits += o.cached_tokens == 30;
  EXPECT_EQ(hits, 3);
  EXPECT_EQ(stats.prefill_tokens, 30);  // once, and nothing for the other samples
  const auto [cold, cold_stats] = run_group(nullptr);
  EXPECT_EQ(cold_stats.prefill_tokens, 4 * 30);
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].tokens, cold[i].tokens) << "sample " << i;
    EXPECT_EQ(out[i].raw_logprobs, cold[i].raw_logprobs) << "sample " << i;
  }
}

// Tasks behind one system prompt, submitted together: the first prompt stops
// where the others leave it and checkpoints there (a branch point, not on a
// block boundary), the others wait for it and restore it; the shared part is
// prefilled once, and every output is what it is without a cache.
TEST(PrefixCache, TasksBehindOneSystemPromptPrefillItOnce) {
  for (const auto& [name, json] : {std::pair{"hybrid", testing::minimax_json()}, std::pair{"full", testing::qwen3_json()}}) {
    auto m = make_model(json, "strict");
    const auto system = tokens(23, 9, m->vocab_size());
    std::vector<std::vector<int32_t>> prompts;
    int64_t own = 0;
    for (int task = 0; task < 4; ++task) {
      std::vector<int32_t> p = system;
      const auto question = tokens(5 + task, 40 + task, m->vocab_size());
      p.insert(p.end(), question.begin(), question.end());
      prompts.push_back(p);
      own += static_cast<int64_t>(question.size());
    }
    auto run_tasks = [&](PrefixCache* cache) { return run_together(m, cache, prompts, 0.0f, 3); };
    PrefixCache cache(*m, {.block_size = 4});
    const auto [out, stats] = run_tasks(&cache);
    ASSERT_EQ(out.size(), prompts.size()) << name;
    EXPECT_EQ(stats.prefill_tokens, static_cast<int64_t>(system.size()) + own) << name;
    for (size_t i = 1; i < out.size(); ++i) EXPECT_EQ(out[i].cached_tokens, static_cast<int64_t>(system.size())) << name;
    const auto [cold, cold_stats] = run_tasks(nullptr);
    for (size_t i = 0; i < out.size(); ++i) {
      EXPECT_EQ(out[i].tokens, cold[i].tokens) << name << " task " << i;
      EXPECT_EQ(out[i].raw_logprobs, cold[i].raw_logprobs) << name << " task " << i;
    }
  }
}

// An agent episode's next turn starts with the previous turn's prompt and
// answer: with room in the cache it prefills only what it has not computed,
// the answer's last token (sampled, never fed back) and the environment's
// reply, and continues exactly as a cold prefill of the whole history does
// (bitwise under strict kernels). Before generation was checkpointed, every
// turn prefilled the previous answer again.
TEST(PrefixCache, TheNextTurnPrefillsOnlyTheReply) {
  for (const auto& [name, json] : {std::pair{"hybrid", testing::minimax_json()}, std::pair{"full", testing::qwen3_json()}}) {
    auto m = make_model(json, "strict");
    PrefixCache cache(*m, {.block_size = 4});
    rollout::Engine warm(m, 0, {.max_running = 4, .prefill_chunk = 8});
    warm.set_cache(&cache);
    const auto prompt = tokens(21, 3, m->vocab_size());
    const rollout::RequestOutput turn1 = generate(warm, prompt, 9);
    ASSERT_EQ(turn1.tokens.size(), 9u);
    EXPECT_EQ(warm.stats().generation_checkpoints, 1) << name;
    std::vector<int32_t> history = prompt;
    history.insert(history.end(), turn1.tokens.begin(), turn1.tokens.end());
    const auto reply = tokens(6, 77, m->vocab_size());
    history.insert(history.end(), reply.begin(), reply.end());
    const int64_t before = warm.stats().prefill_tokens;
    const rollout::RequestOutput turn2 = generate(warm, history, 4);
    EXPECT_EQ(warm.stats().prefill_tokens - before, 1 + static_cast<int64_t>(reply.size())) << name;
    EXPECT_EQ(turn2.cached_tokens, static_cast<int64_t>(prompt.size() + turn1.tokens.size()) - 1) << name;
    rollout::Engine cold(m, 0, {.max_running = 4, .prefill_chunk = 8});
    const rollout::RequestOutput recomputed = generate(cold, history, 4);
    EXPECT_EQ(turn2.tokens, recomputed.tokens) << name;
    EXPECT_EQ(turn2.raw_logprobs, recomputed.raw_logprobs) << name << ": a restore must equal recomputation";
  }
}

// The cache keeps what it needs of the model it was made from: a worker makes
// its cache from its first model and frees that model at the first weight
// swap, and the cache goes on evicting (scoring states by the model's shape).
// Under AddressSanitizer this read freed memory when the cache held a
// reference to the model's config.
TEST(PrefixCache, OutlivesTheModelItWasMadeFrom) {
  auto first = make_model(testing::minimax_json(), "fp32");
  auto cache = std::make_unique<PrefixCache>(*first, CacheConfig{.block_size = 4, .max_states = 2});
  std::vector<float> logits;
  for (int i = 0; i < 2; ++i) {
    const auto p = tokens(9 + i, 40 + i, first->vocab_size());
    model::SequenceState s = first->new_sequence();
    first->prefill(s, p, logits);
    cache->insert(p, 0, s);
  }
  first.reset();
  const model::ModelConfig c = testing::parse_or_die(testing::minimax_json());
  auto second = std::shared_ptr<model::Model>(std::move(
      *model::Model::from_tensors(c, model::random_weights(c, 23, 0.3f), *model::parse_precision("fp32"))));
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(tokens(11 + i, 60 + i, second->vocab_size()));
    model::SequenceState s = second->new_sequence();
    second->prefill(s, prompts.back(), logits);
    cache->insert(prompts.back(), 1, s);  // the pool holds 2 states: each insert evicts
    EXPECT_LE(cache->counters().states, 2);
  }
  EXPECT_GE(cache->counters().state_evictions, 4);
  // The newest prompt survived, and continuing from it equals a cold run.
  std::vector<int32_t> q = prompts.back();
  q.push_back(3);
  model::SequenceState warm = second->new_sequence();
  const int64_t hit = cache->lookup(q, 1, warm);
  EXPECT_EQ(hit, static_cast<int64_t>(prompts.back().size()));
  std::vector<float> warm_logits, cold_logits;
  second->prefill(warm, std::span<const int32_t>(q).subspan(hit), warm_logits);
  model::SequenceState cold = second->new_sequence();
  second->prefill(cold, q, cold_logits);
  ASSERT_EQ(warm_logits.size(), cold_logits.size());
  for (size_t i = 0; i < warm_logits.size(); ++i) EXPECT_NEAR(warm_logits[i], cold_logits[i], 1e-4) << i;
}

// As the rollout worker does it: the engine swaps weights several times, each
// old model freed once the engine lets go of it, while a small state pool
// keeps evicting. Every request finishes under the version it was given, and
// the cache scores and evicts without touching a freed model.
TEST(PrefixCache, EvictsWhileTheEngineSwapsWeights) {
  const model::ModelConfig c = testing::parse_or_die(testing::minimax_json());
  auto model_at = [&](uint64_t seed) {
    return std::shared_ptr<model::Model>(std::move(
        *model::Model::from_tensors(c, model::random_weights(c, seed, 0.3f), *model::parse_precision("fp32"))));
  };
  auto first = model_at(1);
  PrefixCache cache(*first, {.block_size = 4, .max_kv_blocks = 8, .max_states = 2});
  rollout::Engine e(std::move(first), 0, {.max_running = 4, .prefill_chunk = 8});
  e.set_cache(&cache);
  for (int64_t version = 0; version < 5; ++version) {
    if (version > 0) e.update_weights(model_at(100 + version), version);  // the engine holds the only reference
    for (int r = 0; r < 3; ++r) {
      const auto out = generate(e, tokens(10 + r, int(version) * 7 + r, c.vocab_size), 3);
      ASSERT_EQ(out.versions.size(), 3u);
      for (int64_t v : out.versions) EXPECT_EQ(v, version);
    }
  }
  EXPECT_EQ(e.stats().weight_swaps, 4);
  EXPECT_GT(cache.counters().state_evictions, 0);
  EXPECT_LE(cache.counters().states, 2);
}

namespace budget {

model::SequenceState prefilled(model::Model& m, const std::vector<int32_t>& t) {
  std::vector<float> logits;
  model::SequenceState s = m.new_sequence();
  m.prefill(s, t, logits);
  return s;
}

// Bytes a cache holds after inserting just `t`.
int64_t bytes_of(model::Model& m, const std::vector<int32_t>& t) {
  PrefixCache alone(m, {.block_size = 4, .max_bytes = int64_t{1} << 40});
  alone.insert(t, 0, prefilled(m, t));
  return alone.counters().bytes();
}

// Whether a lookup of t + one token restores all of t.
bool restorable(PrefixCache& cache, model::Model& m, std::vector<int32_t> t) {
  const int64_t n = static_cast<int64_t>(t.size());
  t.push_back(1);
  model::SequenceState s = m.new_sequence();
  return cache.lookup(t, 0, s) == n;
}

// Random inserts under a random byte budget: the cache never holds more than
// the budget after an insert, evictions are counted as the budget's, and the
// bookkeeping matches the trees.
TEST(PrefixCacheBudget, NeverHoldsMoreThanItsBudgetAndCountsWhy) {
  auto m = make_model(testing::minimax_json(), "fp32");
  std::mt19937_64 rng(std::random_device{}());
  const int64_t one = bytes_of(*m, tokens(24, 1, m->vocab_size()));
  const int64_t budget = one * (2 + int64_t(rng() % 4));
  PrefixCache cache(*m, {.block_size = 4, .max_bytes = budget});
  EXPECT_EQ(cache.max_bytes(), budget);
  for (int i = 0; i < 30; ++i) {
    const auto t = tokens(8 + int(rng() % 40), int(rng() % 9), m->vocab_size());
    cache.insert(t, 0, prefilled(*m, t));
    ASSERT_LE(cache.counters().bytes(), budget) << "after insert " << i;
    ASSERT_TRUE(cache.check_consistency().ok()) << cache.check_consistency();
  }
  EXPECT_GT(cache.counters().evicted_for_bytes, 0);
  EXPECT_EQ(cache.counters().evicted_for_count, 0);
  EXPECT_EQ(cache.counters().evicted_for_bytes, cache.counters().kv_evictions + cache.counters().state_evictions);
}

// The case where LRU and the FLOPs rule disagree. A long prefix A is cached
// first, a short one B after it; C then needs room. LRU evicts A (the oldest).
// The FLOPs rule evicts B: restoring A saves ~10x the prefill FLOPs per byte
// held (a state costs the same bytes whatever its length), which outweighs
// A's older use.
TEST(PrefixCacheBudget, EvictsWhatSavesTheFewestFlopsPerByteWhereLruWouldEvictTheLongPrefix) {
  auto m = make_model(testing::minimax_json(), "fp32");
  const int64_t V = m->vocab_size();
  const auto a = tokens(202, 1, V), b = tokens(22, 2, V), c = tokens(22, 3, V);
  ASSERT_NE(a[0], b[0]);
  ASSERT_NE(b[0], c[0]);
  const int64_t budget = bytes_of(*m, a) + bytes_of(*m, b) + bytes_of(*m, c) - 1;
  for (const double recency_weight : {1.0, 1e9}) {
    PrefixCache cache(*m, {.block_size = 4, .max_bytes = budget, .recency_weight = recency_weight});
    for (const auto* t : {&a, &b, &c}) cache.insert(*t, 0, prefilled(*m, *t));
    // The first victim makes room (with its blocks, useless on a hybrid once its state goes).
    EXPECT_GT(cache.counters().evicted_for_bytes, 0);
    EXPECT_EQ(cache.counters().evicted_for_bytes, cache.counters().kv_evictions + cache.counters().state_evictions);
    EXPECT_LE(cache.counters().bytes(), budget);
    EXPECT_TRUE(cache.check_consistency().ok()) << cache.check_consistency();
    EXPECT_TRUE(restorable(cache, *m, c));
    if (recency_weight == 1.0) {
      EXPECT_TRUE(restorable(cache, *m, a)) << "the FLOPs rule keeps the long prefix";
      EXPECT_FALSE(restorable(cache, *m, b));
    } else {
      EXPECT_FALSE(restorable(cache, *m, a)) << "recency alone (LRU) evicts the oldest";
      EXPECT_TRUE(restorable(cache, *m, b));
    }
  }
}

// A weights version lower than one the cache holds means the weights went back
// (a restarted learner republishes its checkpoint, then trains the next
// versions again, so a version number may name other weights): everything is
// dropped, counted, and the cache stays consistent.
TEST(PrefixCacheBudget, AVersionGoingBackDropsEverything) {
  auto m = make_model(testing::minimax_json(), "fp32");
  PrefixCache cache(*m, {.block_size = 4});
  const auto a = tokens(30, 1, m->vocab_size()), b = tokens(30, 2, m->vocab_size());
  cache.insert(a, 11, prefilled(*m, a));
  cache.insert(a, 12, prefilled(*m, a));
  const int64_t held = cache.counters().kv_blocks + cache.counters().states;
  ASSERT_GT(held, 0);
  cache.insert(b, 10, prefilled(*m, b));
  EXPECT_EQ(cache.counters().dropped_old_version, held);
  std::vector<int32_t> q = a;
  q.push_back(1);
  for (int64_t v : {11, 12}) {
    model::SequenceState s = m->new_sequence();
    EXPECT_EQ(cache.lookup(q, v, s), 0) << "version " << v << " was dropped";
  }
  q = b;
  q.push_back(1);
  model::SequenceState s = m->new_sequence();
  EXPECT_EQ(cache.lookup(q, 10, s), 30);
  EXPECT_TRUE(cache.check_consistency().ok()) << cache.check_consistency();
}

}  // namespace budget

}  // namespace
}  // namespace interlace::cache
