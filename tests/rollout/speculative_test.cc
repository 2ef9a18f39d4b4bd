// Speculative decoding in the engine: with prompt-lookup drafts, a draft
// model, or drafts crafted to be rejected at a chosen position, the engine's
// output is token for token, log-prob for log-prob and version for version
// what it is without speculation: for Llama, Qwen3 (sliding window) and
// MiniMax (lightning layers, whose states are rolled back), k = 1..8, over
// multi-turn episodes that hit the prefix/state cache. Under strict kernels
// the raw log-probs equal the learner's scoring bit for bit. Sampling: the
// token sampled at a verified position follows the target's distribution
// (chi-square over thousands of seeds).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "interlace/cache/prefix_cache.h"
#include "interlace/model/model_init.h"
#include "interlace/rollout/engine.h"
#include "interlace/rollout/speculative.h"
#include "model/test_configs.h"
#include "support/random.h"

namespace interlace::rollout {
namespace {

using testing::random_model;

std::map<int64_t, RequestOutput> by_id(std::vector<RequestOutput> v) {
  std::map<int64_t, RequestOutput> m;
  for (auto& o : v) m[o.id] = std::move(o);
  return m;
}

// Four episodes of four turns, submitted together each turn (verifications
// share steps with prefills), each turn's prompt the whole history plus a new
// user message that repeats pieces of earlier ones (where prompt lookup finds
// drafts). Returns every turn's outputs and the engine's stats.
struct Episodes {
  std::vector<RequestOutput> outputs;
  std::vector<std::vector<int32_t>> prompts;  // each output's prompt
  EngineStats stats;
  int64_t cached = 0;
};
Episodes run_episodes(std::shared_ptr<model::Model> m, SpeculativeConfig spec, uint64_t seed, float temperature = 0) {
  cache::PrefixCache cache(*m, {.block_size = 4});
  Engine engine(m, 3, {.max_running = 4, .prefill_chunk = 16, .max_step_tokens = 48, .speculate = spec});
  engine.set_cache(&cache);
  std::mt19937_64 rng(seed);
  const int32_t V = static_cast<int32_t>(m->vocab_size());
  std::vector<std::vector<int32_t>> history(4);
  Episodes out;
  for (int turn = 0; turn < 4; ++turn) {
    std::map<int64_t, int> episode_of;
    std::map<int64_t, std::vector<int32_t>> prompt_of;
    for (int e = 0; e < 4; ++e) {
      auto& h = history[e];
      const int fresh = 3 + static_cast<int>(rng() % 6);
      for (int i = 0; i < fresh; ++i) h.push_back(static_cast<int32_t>(rng() % V));
      if (h.size() > 8)  // a copy of an earlier stretch, as a tool result quoting the conversation would
        for (int64_t i = 0, from = static_cast<int64_t>(rng() % (h.size() - 6)); i < 5; ++i) h.push_back(h[from + i]);
      Request r;
      r.prompt = h;
      r.sampling.temperature = temperature;
      r.sampling.seed = seed + e * 100 + turn;
      r.sampling.max_new_tokens = 6 + static_cast<int64_t>(rng() % 14);
      const int64_t id = engine.submit(r);
      episode_of[id] = e;
      prompt_of[id] = h;
    }
    engine.run();
    for (auto& [id, o] : by_id(engine.take_finished())) {
      auto& h = history[episode_of[id]];
      h.insert(h.end(), o.tokens.begin(), o.tokens.end());
      out.cached += o.cached_tokens;
      out.outputs.push_back(o);
      out.prompts.push_back(prompt_of[id]);
    }
  }
  out.stats = engine.stats();
  return out;
}

void expect_same_outputs(const Episodes& got, const Episodes& want, bool bitwise) {
  ASSERT_EQ(got.outputs.size(), want.outputs.size());
  for (size_t i = 0; i < got.outputs.size(); ++i) {
    const RequestOutput &g = got.outputs[i], &w = want.outputs[i];
    ASSERT_EQ(g.tokens, w.tokens) << "request " << i;
    EXPECT_EQ(g.finish, w.finish) << "request " << i;
    EXPECT_EQ(g.versions, w.versions) << "request " << i;
    ASSERT_EQ(g.raw_logprobs.size(), w.raw_logprobs.size());
    for (size_t t = 0; t < g.raw_logprobs.size(); ++t) {
      if (bitwise) {
        EXPECT_EQ(std::memcmp(&g.raw_logprobs[t], &w.raw_logprobs[t], sizeof(float)), 0) << "request " << i << " token " << t;
        EXPECT_EQ(std::memcmp(&g.sampled_logprobs[t], &w.sampled_logprobs[t], sizeof(float)), 0);
      } else {
        EXPECT_NEAR(g.raw_logprobs[t], w.raw_logprobs[t], 1e-4) << "request " << i << " token " << t;
      }
    }
  }
}

struct Case {
  std::string name;
  nlohmann::json json;
  std::string precision;
};
class Speculative : public ::testing::TestWithParam<Case> {};

TEST_P(Speculative, PromptLookupGivesTheSameTokensForEveryK) {
  // Fixed weight seeds outside strict: the fast kernels' batched GEMMs round
  // differently (~1e-6), which a random model could turn into a greedy tie.
  const bool strict = GetParam().precision == "strict";
  auto m = random_model(GetParam().json, 11, GetParam().precision);
  const uint64_t seed = strict ? testing::fresh_seed() : 7;
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  const Episodes plain = run_episodes(m, {}, seed);
  EXPECT_GT(plain.cached, 0) << "the episodes should hit the cache";
  int64_t drafted = 0, accepted = 0;
  for (int64_t k = 1; k <= 8; ++k) {
    SCOPED_TRACE("k=" + std::to_string(k));
    // One-token matches (not the default three): drafts on most steps, so both outcomes happen.
    const Episodes spec = run_episodes(m, {.method = SpeculativeConfig::Method::kNgram, .k = k, .ngram_min = 1}, seed);
    expect_same_outputs(spec, plain, strict);
    EXPECT_EQ(spec.cached, plain.cached);
    EXPECT_GT(spec.stats.spec_verifications, 0);
    EXPECT_LT(spec.stats.steps, plain.stats.steps + 1);
    drafted += spec.stats.spec_drafted;
    accepted += spec.stats.spec_accepted;
  }
  // Both outcomes happened: some drafts accepted, some rejected.
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, drafted);
}

TEST_P(Speculative, ADraftModelGivesTheSameTokensAndItselfAsDraftIsAlwaysAccepted) {
  const bool strict = GetParam().precision == "strict";
  auto m = random_model(GetParam().json, 11, GetParam().precision);
  const uint64_t seed = strict ? testing::fresh_seed() : 7;
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  const Episodes plain = run_episodes(m, {}, seed);
  // Another architecture, same vocabulary: its guesses are mostly wrong.
  auto other = random_model(testing::llama_json(), 99, GetParam().precision);
  const Episodes drafted = run_episodes(m, {.method = SpeculativeConfig::Method::kModel, .k = 3, .draft_model = other}, seed);
  expect_same_outputs(drafted, plain, strict);
  EXPECT_GT(drafted.stats.spec_drafted, drafted.stats.spec_accepted);
  if (strict) {
    // The model as its own draft: its greedy guesses are the target's greedy
    // tokens, so every draft is accepted (bit for bit kernels make it certain).
    const Episodes self = run_episodes(m, {.method = SpeculativeConfig::Method::kModel, .k = 5, .draft_model = m}, seed);
    expect_same_outputs(self, plain, true);
    EXPECT_GT(self.stats.spec_drafted, 0);
    EXPECT_EQ(self.stats.spec_accepted, self.stats.spec_drafted);
    EXPECT_LT(self.stats.steps, plain.stats.steps);
  }
}

INSTANTIATE_TEST_SUITE_P(FullAndHybrid, Speculative,
                         ::testing::Values(Case{"llama_strict", testing::llama_json(), "strict"},
                                           Case{"qwen3_strict", testing::qwen3_json(), "strict"},
                                           Case{"minimax_strict", testing::minimax_json(), "strict"},
                                           Case{"minimax_fp32", testing::minimax_json(), "fp32"}),
                         [](const auto& info) { return info.param.name; });

// The greedy continuation without speculation, to craft drafts from.
std::vector<int32_t> greedy(std::shared_ptr<model::Model> m, const Request& r) {
  Engine e(m, 0);
  e.submit(r);
  e.run();
  return e.take_finished().at(0).tokens;
}

TEST(SpeculativeDrafts, RejectionFirstLastNoneAndAStopInsideAnAcceptedDraft) {
  auto m = random_model(testing::minimax_json(), 3, "strict");
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Request r;
  for (int i = 0; i < 13; ++i) r.prompt.push_back(static_cast<int32_t>(rng() % 64));
  r.sampling.temperature = 0;
  r.sampling.max_new_tokens = 24;
  const std::vector<int32_t> truth = greedy(m, r);
  ASSERT_EQ(truth.size(), 24u);
  const int64_t P = static_cast<int64_t>(r.prompt.size());
  // Drafts are the true continuation with position `wrong` (0-based among the
  // k drafts) replaced; wrong = -1: all correct.
  auto run = [&](int64_t k, int64_t wrong, const Request& req) {
    SpeculativeConfig spec{.method = SpeculativeConfig::Method::kCallback, .k = k};
    spec.draft_fn = [&, wrong](std::span<const int32_t> history, int64_t room) {
      const int64_t done = static_cast<int64_t>(history.size()) - P;  // tokens generated, the pending one included
      std::vector<int32_t> d;
      for (int64_t i = 0; i < room && done + i < static_cast<int64_t>(truth.size()); ++i) {
        int32_t t = truth[done + i];
        if (i == wrong) t = (t + 1) % 64;
        d.push_back(t);
      }
      return d;
    };
    Engine e(m, 0, {.speculate = spec});
    e.submit(req);
    e.run();
    auto out = e.take_finished().at(0);
    return std::make_pair(out, e.stats());
  };
  for (int64_t k : {1, 4, 8}) {
    for (int64_t wrong : {int64_t{-1}, int64_t{0}, k - 1}) {
      SCOPED_TRACE("k=" + std::to_string(k) + ", wrong draft at " + std::to_string(wrong));
      const auto [out, stats] = run(k, wrong, r);
      EXPECT_EQ(out.tokens, truth);
      EXPECT_GT(stats.spec_verifications, 0);
      if (wrong < 0) {
        EXPECT_EQ(stats.spec_accepted, stats.spec_drafted);
      } else if (wrong == 0) {
        EXPECT_EQ(stats.spec_accepted, 0);  // every verification rejects its first draft
      } else {
        // A verification with k drafts accepts the k-1 before the wrong one;
        // near the end, with fewer drafts than k, the wrong one is not among them.
        EXPECT_GE(stats.spec_accepted * k, stats.spec_drafted * (k - 1));
        EXPECT_LT(stats.spec_accepted, stats.spec_drafted);
      }
    }
  }
  // A stop token the true continuation reaches for the first time at a
  // position p >= 1 (the latest such, up to 9): it is sampled at a
  // verification row, equal to its draft, with more drafts after it. The
  // output ends there, as without speculation.
  int64_t first = 0;
  for (int64_t p = 1; p < 10; ++p)
    if (std::find(truth.begin(), truth.begin() + p, truth[p]) == truth.begin() + p) first = p;
  ASSERT_GT(first, 0) << "the greedy continuation repeats one token";
  Request stop = r;
  stop.sampling.stop_token_ids = {truth[first]};
  const auto [out, stats] = run(8, -1, stop);
  EXPECT_EQ(out.tokens, std::vector<int32_t>(truth.begin(), truth.begin() + first + 1));
  EXPECT_EQ(out.finish, FinishReason::kStopToken);
  EXPECT_EQ(out.tokens, greedy(m, stop));
  // The sequence's state was cut back: the episode's next turn, served from the
  // checkpoint this one left, continues exactly as without speculation.
  EXPECT_GT(stats.spec_accepted, 0);
}

// Drafts from a run without speculation (the continuation each prompt got),
// each draft token replaced by a random one with probability `wrong`: under
// sampling, acceptances and rejections both happen for sure.
SpeculativeConfig oracle_drafts(const std::vector<std::vector<int32_t>>& prompts,
                                const std::vector<RequestOutput>& outputs, double wrong, uint64_t seed, int64_t k) {
  SpeculativeConfig spec{.method = SpeculativeConfig::Method::kCallback, .k = k};
  auto rng = std::make_shared<std::mt19937_64>(seed);
  spec.draft_fn = [&prompts, &outputs, wrong, rng](std::span<const int32_t> history, int64_t room) {
    // The longest prompt the history starts with is this request's.
    int64_t best = -1;
    for (size_t i = 0; i < prompts.size(); ++i)
      if (prompts[i].size() <= history.size() && std::equal(prompts[i].begin(), prompts[i].end(), history.begin()) &&
          (best < 0 || prompts[i].size() > prompts[best].size()))
        best = static_cast<int64_t>(i);
    std::vector<int32_t> d;
    if (best < 0) return d;
    const auto& truth = outputs[best].tokens;
    const size_t done = history.size() - prompts[best].size();
    for (int64_t i = 0; i < room && done + i < truth.size(); ++i)
      d.push_back(std::uniform_real_distribution<double>(0, 1)(*rng) < wrong ? static_cast<int32_t>((*rng)() % 64)
                                                                              : truth[done + i]);
    return d;
  };
  return spec;
}

TEST(SpeculativeDrafts, TheStateLeftInTheCacheAfterRejectionsIsTheDecodedOne) {
  // Ten turns at temperature 0.8, drafts right about half the time; every
  // turn's prompt is served from the previous turn's checkpoint. A state left
  // past a rejected draft would change the next turn's tokens or log-probs.
  auto m = random_model(testing::minimax_json(), 5, "strict");
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::vector<std::vector<int32_t>> prompts;
  auto run = [&](SpeculativeConfig s) {
    cache::PrefixCache cache(*m, {.block_size = 4});
    Engine e(m, 0, {.speculate = s});
    e.set_cache(&cache);
    std::mt19937_64 rng(seed);
    std::vector<int32_t> h;
    std::vector<RequestOutput> outs;
    prompts.clear();
    for (int turn = 0; turn < 10; ++turn) {
      for (int i = 0; i < 4; ++i) h.push_back(static_cast<int32_t>(rng() % 64));
      Request r;
      r.prompt = h;
      r.sampling.temperature = 0.8f;
      r.sampling.seed = seed + turn;
      r.sampling.max_new_tokens = 12;
      prompts.push_back(h);
      e.submit(r);
      e.run();
      outs.push_back(e.take_finished().at(0));
      h.insert(h.end(), outs.back().tokens.begin(), outs.back().tokens.end());
    }
    return std::make_pair(outs, e.stats());
  };
  const auto [plain, plain_stats] = run({});
  const auto [drafted, stats] = run(oracle_drafts(prompts, plain, 0.5, seed + 1, 6));
  ASSERT_EQ(plain.size(), drafted.size());
  int64_t cached = 0;
  for (size_t t = 0; t < plain.size(); ++t) {
    EXPECT_EQ(drafted[t].tokens, plain[t].tokens) << "turn " << t;
    EXPECT_EQ(drafted[t].cached_tokens, plain[t].cached_tokens) << "turn " << t;
    EXPECT_EQ(std::memcmp(drafted[t].raw_logprobs.data(), plain[t].raw_logprobs.data(),
                          plain[t].raw_logprobs.size() * sizeof(float)), 0) << "turn " << t;
    cached += plain[t].cached_tokens;
  }
  EXPECT_GT(cached, 0);
  EXPECT_GT(stats.spec_accepted, 0);
  EXPECT_LT(stats.spec_accepted, stats.spec_drafted);
}

TEST(SpeculativeDrafts, RawLogprobsAreTheLearnersBitForBitUnderStrict) {
  auto m = random_model(testing::qwen3_json(), 21, "strict");
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  const Episodes plain = run_episodes(m, {}, seed, /*temperature=*/1.0f);
  const Episodes spec = run_episodes(m, oracle_drafts(plain.prompts, plain.outputs, 0.3, seed + 1, 4), seed, 1.0f);
  expect_same_outputs(spec, plain, true);
  EXPECT_GT(spec.stats.spec_accepted, 0);
  EXPECT_LT(spec.stats.spec_accepted, spec.stats.spec_drafted);
  // Every request's prompt + output scored as the learner scores a trajectory
  // (one forward over the whole sequence, the training path).
  for (size_t i = 0; i < spec.outputs.size(); ++i) {
    const RequestOutput& o = spec.outputs[i];
    std::vector<int32_t> all = spec.prompts[i];
    all.insert(all.end(), o.tokens.begin(), o.tokens.end());
    const std::vector<float> lp = m->score(all, model::ScorePath::kPrefill);
    const size_t P = spec.prompts[i].size();
    for (size_t t = 0; t < o.tokens.size(); ++t)
      EXPECT_EQ(std::memcmp(&o.raw_logprobs[t], &lp[P + t], sizeof(float)), 0) << "request " << i << " token " << t;
  }
}

TEST(SpeculativeSampling, AVerifiedPositionFollowsTheTargetDistribution) {
  // The token after the first one is sampled at a verification chunk's first
  // row, against a draft (the target's own most likely token, so both
  // acceptance and rejection happen often). Over many seeds its counts must
  // match the sum of the target's conditional distributions (chi-square).
  auto m = random_model(testing::minimax_json(), 8, "strict");
  const int64_t limit = 12;  // sample among 12 ids: enough counts per cell
  const std::vector<int32_t> prompt = {5, 9, 2, 33, 17, 5, 9};
  SpeculativeConfig spec{.method = SpeculativeConfig::Method::kCallback, .k = 2};
  spec.draft_fn = [&](std::span<const int32_t> history, int64_t) {
    model::SequenceState s = m->new_sequence();
    std::vector<float> logits;
    m->prefill(s, history, logits);
    const int32_t best = static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + limit) - logits.begin());
    return std::vector<int32_t>{best, best};
  };
  std::vector<double> observed(limit, 0), expected(limit, 0);
  const int runs = 3000;
  const uint64_t base = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(base));
  Engine e(m, 0, {.max_running = 32, .vocab_limit = limit, .speculate = spec});
  for (int i = 0; i < runs; ++i) {
    Request r;
    r.prompt = prompt;
    r.sampling.temperature = 1.0f;
    r.sampling.seed = base + i;
    r.sampling.max_new_tokens = 3;  // the second token is sampled at a verification row
    e.submit(r);
  }
  e.run();
  const auto outs = e.take_finished();
  ASSERT_EQ(outs.size(), size_t(runs));
  for (const auto& o : outs) {
    ASSERT_EQ(o.tokens.size(), 3u);
    observed[o.tokens[1]] += 1;
    // The target's distribution of the second token given the first, in float64.
    model::SequenceState s = m->new_sequence();
    std::vector<float> logits;
    std::vector<int32_t> h = prompt;
    h.push_back(o.tokens[0]);
    m->prefill(s, h, logits);
    double mx = -1e30, sum = 0;
    for (int64_t t = 0; t < limit; ++t) mx = std::max(mx, double(logits[t]));
    for (int64_t t = 0; t < limit; ++t) sum += std::exp(double(logits[t]) - mx);
    for (int64_t t = 0; t < limit; ++t) expected[t] += std::exp(double(logits[t]) - mx) / sum;
  }
  EXPECT_GT(e.stats().spec_accepted, runs / 20);
  EXPECT_LT(e.stats().spec_accepted, e.stats().spec_drafted);
  // Chi-square over cells with an expected count of at least 5 (the rest pooled).
  double chi2 = 0, pool_o = 0, pool_e = 0;
  int cells = 0;
  for (int64_t t = 0; t < limit; ++t) {
    if (expected[t] >= 5) {
      chi2 += (observed[t] - expected[t]) * (observed[t] - expected[t]) / expected[t];
      ++cells;
    } else {
      pool_o += observed[t];
      pool_e += expected[t];
    }
  }
  if (pool_e > 0) {
    chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
    ++cells;
  }
  // The 99.9th percentile of chi-square with cells - 1 degrees of freedom.
  const double kCritical[] = {10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26};
  ASSERT_GE(cells, 4);
  EXPECT_LT(chi2, kCritical[cells - 2]) << cells << " cells";
}

TEST(SpeculativeConfigParse, SpecsAndErrors) {
  auto c = parse_speculate("ngram:k=6,max=3,min=2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->method, SpeculativeConfig::Method::kNgram);
  EXPECT_EQ(c->k, 6);
  EXPECT_EQ(c->ngram_max, 3);
  EXPECT_EQ(c->ngram_min, 2);
  c = parse_speculate("model:/models/draft,k=3");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->draft_path, "/models/draft");
  EXPECT_EQ(c->k, 3);
  EXPECT_FALSE(parse_speculate("off")->enabled());
  EXPECT_EQ(parse_speculate("ngram")->k, 4);
  for (const char* bad : {"ngram:k=0", "ngram:k=x", "ngram:kk=2", "model:", "model:k=3", "eagle:k=2", "ngram:max=1,min=2"}) {
    auto b = parse_speculate(bad);
    ASSERT_FALSE(b.ok()) << bad;
    EXPECT_NE(std::string(b.status().message()).find("ngram[:k=N"), std::string::npos) << b.status();
  }
  // Prompt lookup: the latest earlier occurrence of the longest suffix.
  const std::vector<int32_t> h = {1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3};
  EXPECT_EQ(ngram_drafts(h, 2, 4, 1), (std::vector<int32_t>{7, 5}));
  EXPECT_EQ(ngram_drafts(h, 8, 4, 1), (std::vector<int32_t>{7, 5, 1, 2, 3}));
  EXPECT_TRUE(ngram_drafts(std::vector<int32_t>{4, 5, 6}, 4, 4, 1).empty());
}

}  // namespace
}  // namespace interlace::rollout
