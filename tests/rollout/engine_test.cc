// The generation engine: continuous batching with chunked prefill gives the
// same tokens as generating one request at a time (greedy), for full and hybrid
// models; sampling by seed; the two log-probs; stop conditions; abort; weight
// swaps between steps with per-token versions.
#include "interlace/rollout/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "model/test_configs.h"
#include "support/random.h"

namespace interlace::rollout {
namespace {

using testing::random_model;

std::vector<Request> requests(int64_t vocab) {
  std::vector<Request> out;
  for (int i = 0; i < 7; ++i) {
    Request r;
    for (int t = 0; t < 3 + 9 * i; ++t) r.prompt.push_back(static_cast<int32_t>((t * 13 + i * 7) % vocab));
    r.sampling.temperature = 0;
    r.sampling.max_new_tokens = 10 + 3 * i;
    out.push_back(r);
  }
  return out;
}

std::map<int64_t, RequestOutput> by_id(std::vector<RequestOutput> v) {
  std::map<int64_t, RequestOutput> m;
  for (auto& o : v) m[o.id] = std::move(o);
  return m;
}

struct Case {
  std::string name;
  nlohmann::json json;
  std::string precision;
};
class Batching : public ::testing::TestWithParam<Case> {};

TEST_P(Batching, ContinuousBatchingEqualsOneAtATimeGreedy) {
  // Fixed seeds: with the fast fp32 kernels batched and single GEMMs round
  // differently (~1e-6), which a fresh random model could turn into a greedy tie.
  auto m = random_model(GetParam().json, 5, GetParam().precision);
  const auto reqs = requests(m->vocab_size());
  // Small slots and chunks: requests join and leave mid-run, prompts take several steps.
  Engine batched(m, 0, {.max_running = 3, .prefill_chunk = 8, .max_step_tokens = 16});
  for (const auto& r : reqs) batched.submit(r);
  batched.run();
  auto together = by_id(batched.take_finished());
  ASSERT_EQ(together.size(), reqs.size());
  EXPECT_GT(batched.stats().steps, 20);
  for (size_t i = 0; i < reqs.size(); ++i) {
    Engine alone(m, 0);
    alone.submit(reqs[i]);
    alone.run();
    auto one = alone.take_finished();
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].tokens, together[int64_t(i)].tokens) << "request " << i;
    EXPECT_EQ(together[int64_t(i)].finish, FinishReason::kLength);
    EXPECT_EQ(together[int64_t(i)].tokens.size(), size_t(reqs[i].sampling.max_new_tokens));
  }
  // Raw log-probs are the model's: under strict kernels, bitwise what scoring
  // prompt + output gives.
  if (GetParam().precision == "strict") {
    for (size_t i = 0; i < reqs.size(); ++i) {
      const RequestOutput& o = together[int64_t(i)];
      std::vector<int32_t> all = reqs[i].prompt;
      all.insert(all.end(), o.tokens.begin(), o.tokens.end());
      const std::vector<float> lp = m->score(all, model::ScorePath::kDecode);
      for (size_t t = 0; t < o.tokens.size(); ++t) {
        const float want = lp[reqs[i].prompt.size() + t];
        EXPECT_EQ(std::memcmp(&o.raw_logprobs[t], &want, sizeof(float)), 0) << "request " << i << " token " << t;
        EXPECT_EQ(o.sampled_logprobs[t], 0.0f);  // greedy: a point mass
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(FullAndHybrid, Batching,
                         ::testing::Values(Case{"llama_fp32", testing::llama_json(), "fp32"},
                                           Case{"minimax_fp32", testing::minimax_json(), "fp32"},
                                           Case{"qwen3_strict", testing::qwen3_json(), "strict"},
                                           Case{"minimax_strict", testing::minimax_json(), "strict"}),
                         [](const auto& info) { return info.param.name; });

TEST(Sampling, SeedTemperatureTopKTopPAndBothLogprobs) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, -1.0f, 3.0f};
  // Raw: log softmax over all 5.
  double z = 0;
  for (float l : logits) z += std::exp(double(l));
  SamplingParams p;
  p.temperature = 0.5f;
  p.top_k = 2;  // tokens 4 (3.0) and 0 (2.0); weights e^(2*3), e^(2*2)
  std::mt19937_64 rng(1);
  int seen[5] = {0};
  for (int i = 0; i < 2000; ++i) {
    TokenSample s = sample(logits, p, 0, rng);
    ++seen[s.token];
    const double q4 = 1.0 / (1.0 + std::exp(-2.0));
    EXPECT_NEAR(s.sampled_logprob, std::log(s.token == 4 ? q4 : 1 - q4), 1e-5);
    EXPECT_NEAR(s.raw_logprob, double(logits[s.token]) - std::log(z), 1e-5);
  }
  EXPECT_EQ(seen[1] + seen[2] + seen[3], 0);
  EXPECT_NEAR(seen[4] / 2000.0, 1.0 / (1.0 + std::exp(-2.0)), 0.04);
  // top-p 0.5 at temperature 1: token 4 alone has 0.61 of the mass.
  p = {};
  p.top_p = 0.5f;
  for (int i = 0; i < 50; ++i) {
    TokenSample s = sample(logits, p, 0, rng);
    EXPECT_EQ(s.token, 4);
    EXPECT_FLOAT_EQ(s.sampled_logprob, 0.0f);
  }
  // vocab_limit hides padded ids; greedy picks the best allowed one.
  p = {};
  p.temperature = 0;
  EXPECT_EQ(sample(logits, p, 4, rng).token, 0);
  // Same seed, same draws.
  p = {};
  std::mt19937_64 a(9), b(9);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample(logits, p, 0, a).token, sample(logits, p, 0, b).token);
}

// top_logprobs: the k most likely allowed tokens (ties: the lower id) with
// their raw log-probs, against a float64 log-softmax over the whole
// vocabulary; the sampled token's entry is its raw_logprob exactly. In the
// engine, greedy decoding's first alternative is the token it emitted.
TEST(Sampling, TopLogprobsAreTheMostLikelyTokensWithTheirRawLogprobs) {
  std::mt19937_64 rng(std::random_device{}());
  const int64_t V = 300, limit = 256, k = 7;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> logits(V);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (float& l : logits) l = normal(rng);
    logits[size_t(rng() % 10)] = logits[size_t(10 + rng() % 10)];  // a tie, which the lower id must win
    logits[size_t(limit + rng() % (V - limit))] = 100.0f;          // a padded id above every other: never listed
    SamplingParams p;
    TokenSample s = sample(logits, p, limit, rng);
    double z = 0;
    for (float l : logits) z += std::exp(double(l) - 100.0);
    const double log_z = std::log(z) + 100.0;
    s.raw_logprob = float(double(logits[size_t(s.token)]) - log_z);  // as the engine's kernel gives it
    model::fill_top_logprobs(logits, limit, k, s);
    std::vector<int32_t> ids(static_cast<size_t>(limit));
    std::iota(ids.begin(), ids.end(), 0);
    std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
    ASSERT_EQ(s.top.size(), size_t(k));
    for (int64_t i = 0; i < k; ++i) {
      EXPECT_EQ(s.top[size_t(i)].first, ids[size_t(i)]) << "rank " << i;
      // fp32 rounding of logits of ~10 and log Z: a few ulps at 16 (2e-6 each).
      EXPECT_NEAR(s.top[size_t(i)].second, double(logits[size_t(ids[size_t(i)])]) - log_z, 1e-5) << "rank " << i;
      if (s.top[size_t(i)].first == s.token) EXPECT_EQ(s.top[size_t(i)].second, s.raw_logprob);
    }
  }
  auto m = random_model(testing::llama_json(), 3, "fp32");
  Engine e(m, 0);
  std::vector<TokenSample> seen;
  e.set_token_hook([&](int64_t, const TokenSample& t, int64_t) { seen.push_back(t); });
  Request r;
  r.prompt = {1, 2, 3, 4};
  r.sampling.temperature = 0;
  r.sampling.max_new_tokens = 12;
  r.sampling.top_logprobs = 4;
  e.submit(r);
  r.sampling.top_logprobs = 0;
  e.submit(r);
  e.run();
  ASSERT_EQ(seen.size(), 24u);
  int with = 0;
  for (const TokenSample& t : seen) {
    if (t.top.empty()) continue;
    ++with;
    ASSERT_EQ(t.top.size(), 4u);
    EXPECT_EQ(t.top[0].first, t.token);
    EXPECT_EQ(t.top[0].second, t.raw_logprob);
    for (size_t i = 1; i < 4; ++i) EXPECT_LE(t.top[i].second, t.top[i - 1].second);
  }
  EXPECT_EQ(with, 12) << "only the request that asked gets alternatives";
}

TEST(Engine, StopTokenStopStringLengthAndSeededSampling) {
  auto m = random_model(testing::llama_json(), 3, "fp32");
  Engine e(m, 0);
  Request r;
  r.prompt = {1, 2, 3, 4};
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 42;
  r.sampling.max_new_tokens = 40;
  const int64_t a = e.submit(r), b = e.submit(r);
  r.sampling.seed = 43;
  const int64_t c = e.submit(r);
  e.run();
  auto out = by_id(e.take_finished());
  EXPECT_EQ(out[a].tokens, out[b].tokens);
  EXPECT_NE(out[a].tokens, out[c].tokens);
  // Stop on the 5th token of that output: it is included and ends the request.
  r.sampling.seed = 42;
  r.sampling.stop_token_ids = {out[a].tokens[4]};
  const int64_t d = e.submit(r);
  e.run();
  auto stopped = by_id(e.take_finished());
  const auto& sd = stopped[d];
  EXPECT_EQ(sd.finish, FinishReason::kStopToken);
  const auto first = std::find(out[a].tokens.begin(), out[a].tokens.end(), out[a].tokens[4]);
  EXPECT_EQ(sd.tokens.size(), size_t(first - out[a].tokens.begin()) + 1);
  // Stop strings match across token boundaries.
  model::ByteTokenizer tok;
  Engine es(m, 0, {}, &tok);
  Request s;
  s.prompt = {1, 2, 3};
  s.sampling.temperature = 0;
  s.sampling.max_new_tokens = 30;
  const int64_t g = es.submit(s);
  es.run();
  auto greedy = by_id(es.take_finished())[g];
  ASSERT_GE(greedy.tokens.size(), 8u);
  const std::string text = tok.decode(std::span(greedy.tokens).subspan(5, 2));
  s.sampling.stop_strings = {text};
  es.submit(s);
  es.run();
  auto by_string = es.take_finished();
  ASSERT_EQ(by_string.size(), 1u);
  EXPECT_EQ(by_string[0].finish, FinishReason::kStopString);
  EXPECT_LE(by_string[0].tokens.size(), 7u);
  EXPECT_NE(tok.decode(by_string[0].tokens).find(text), std::string::npos);
}

TEST(Engine, AbortAndBadRequests) {
  auto m = random_model(testing::minimax_json(), 4, "fp32");
  Engine e(m, 0, {.max_running = 2});
  Request r;
  r.prompt = {5, 6, 7};
  r.sampling.max_new_tokens = 50;
  const int64_t a = e.submit(r), b = e.submit(r), c = e.submit(r);  // c waits for a slot
  for (int i = 0; i < 5; ++i) e.step();
  EXPECT_EQ(e.running(), 2);  // what the worker's heartbeat reports
  EXPECT_EQ(e.waiting(), 1);
  EXPECT_TRUE(e.abort(a));
  EXPECT_TRUE(e.abort(c));
  EXPECT_FALSE(e.abort(999));
  Request empty;
  const int64_t d = e.submit(empty);
  Request oov;
  oov.prompt = {1, 1000000};
  const int64_t f = e.submit(oov);
  e.run();
  auto out = by_id(e.take_finished());
  EXPECT_EQ(out[a].finish, FinishReason::kAborted);
  EXPECT_GT(out[a].tokens.size(), 0u);
  EXPECT_LT(out[a].tokens.size(), 50u);
  EXPECT_EQ(out[c].finish, FinishReason::kAborted);
  EXPECT_TRUE(out[c].tokens.empty());
  EXPECT_EQ(out[b].finish, FinishReason::kLength);
  EXPECT_EQ(out[d].finish, FinishReason::kAborted);
  EXPECT_EQ(out[f].finish, FinishReason::kAborted);
  EXPECT_TRUE(e.idle());
}

// Latency hooks: one time-to-first-token per request that produced a token,
// one inter-token gap per later token; a request queued behind the batch
// waits longer for its first token than one admitted at once.
TEST(Engine, LatencyHooksSeeEveryTokenOnce) {
  auto m = random_model(testing::minimax_json(), 4, "fp32");
  Engine e(m, 0, {.max_running = 1});
  std::vector<double> first, gaps;
  e.set_latency_hooks({.first_token = [&](double s) { first.push_back(s); },
                       .inter_token = [&](double s) { gaps.push_back(s); }});
  Request r;
  r.prompt = {5, 6, 7};
  r.sampling.max_new_tokens = 6;
  e.submit(r);
  e.submit(r);  // waits for the only slot
  Request empty;
  e.submit(empty);  // refused: no token, no latency
  e.run();
  size_t tokens = 0;
  for (const RequestOutput& o : e.take_finished()) tokens += o.tokens.size();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first.size() + gaps.size(), tokens);
  for (double s : first) EXPECT_GE(s, 0.0);
  for (double s : gaps) EXPECT_GE(s, 0.0);
  EXPECT_GT(first[1], first[0]) << "the queued request's first token came as soon as the first one's";
}

TEST(Engine, WeightSwapBetweenStepsRecordsVersionsPerToken) {
  auto v0 = random_model(testing::minimax_json(), 4, "strict");
  auto v1 = random_model(testing::minimax_json(), 5, "strict");
  Engine e(v0, 0);
  Request r;
  r.prompt = {5, 6, 7, 8};
  r.sampling.temperature = 0;
  r.sampling.max_new_tokens = 12;
  const int64_t id = e.submit(r);
  for (int i = 0; i < 4; ++i) e.step();  // 1 prefill step + 3 decodes: 4 tokens under v0
  e.update_weights(v1, 1);
  e.run();
  const RequestOutput o = e.take_finished().at(0);
  ASSERT_EQ(o.id, id);
  ASSERT_EQ(o.tokens.size(), 12u);
  for (size_t t = 0; t < 12; ++t) EXPECT_EQ(o.versions[t], t < 4 ? 0 : 1) << t;
  EXPECT_EQ(e.stats().weight_swaps, 1);
  EXPECT_EQ(e.version(), 1);
}

}  // namespace
}  // namespace interlace::rollout
