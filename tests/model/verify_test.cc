// Verification chunks (speculative decoding): running the pending token and k
// drafts as one chunk gives the logits decoding them one at a time gives, and
// cutting the sequence back to any position inside the chunk leaves exactly
// the state decoding only the kept tokens leaves: KV rows, lightning states
// (across a fold of the blocked state, in fp32 and bf16 states) and the logits
// of every later token. Under the strict profile bit for bit; with the fast
// fp32 kernels, where a batched GEMM rounds differently from a single one,
// within 1e-4 (1e-2 with a bf16 state). Fresh random weights and tokens each run (seed printed).
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "interlace/model/model.h"
#include "interlace/model/model_init.h"
#include "model/test_configs.h"
#include "support/random.h"

namespace interlace::model {
namespace {

struct Case {
  std::string name;
  nlohmann::json json;
  std::string precision;
  // Outside strict: the fast kernels' batched and single GEMMs differ by ~1e-6,
  // which a bf16 state can round to a whole bf16 step (2^-8) in one element.
  double tolerance = 1e-4;
};

class Verify : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    seed_ = testing::fresh_seed();
    rng_.seed(seed_);
    const ModelConfig c = testing::parse_or_die(GetParam().json);
    auto m = Model::from_tensors(c, random_weights(c, seed_, 0.3f), *parse_precision(GetParam().precision));
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  bool strict() const { return model_->precision().strict; }
  std::vector<int32_t> tokens(int64_t n) {
    std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(model_->vocab_size()) - 1);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = d(rng_);
    return t;
  }
  // Logits after each token, decoding them one at a time.
  std::vector<float> decode_each(SequenceState& s, std::span<const int32_t> t) {
    std::vector<float> all, one;
    SequenceState* p = &s;
    for (size_t i = 0; i < t.size(); ++i) {
      model_->decode({&p, 1}, t.subspan(i, 1), one);
      all.insert(all.end(), one.begin(), one.end());
    }
    return all;
  }
  void expect_same(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    if (strict()) {
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << what << ": not bit for bit";
    } else {
      EXPECT_LT(testing::max_rel_error(got.data(), want.data(), got.size(), 1e-3), GetParam().tolerance) << what;
    }
  }
  void expect_same_state(const SequenceState& a, const SequenceState& b) {
    ASSERT_EQ(a.length, b.length);
    for (size_t l = 0; l < a.lightning.size(); ++l) {
      if (a.lightning[l].base.empty()) continue;
      EXPECT_EQ(a.lightning[l].steps, b.lightning[l].steps) << "layer " << l;
      expect_same(a.lightning[l].base, b.lightning[l].base, "lightning base, layer " + std::to_string(l));
      expect_same(a.lightning[l].delta, b.lightning[l].delta, "lightning delta, layer " + std::to_string(l));
    }
    // KV rows as fp32 (these profiles store keys and values in fp32).
    const size_t row = model_->kv_row_bytes() / sizeof(float);
    auto rows = [&](const std::vector<uint8_t>& bytes) {
      std::vector<float> f(a.length * row);
      std::memcpy(f.data(), bytes.data(), f.size() * sizeof(float));
      return f;
    };
    for (size_t l = 0; l < a.kv.size(); ++l) {
      if (a.kv[l].k.empty()) continue;
      expect_same(rows(a.kv[l].k), rows(b.kv[l].k), "keys, layer " + std::to_string(l));
      expect_same(rows(a.kv[l].v), rows(b.kv[l].v), "values, layer " + std::to_string(l));
    }
  }

  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<Model> model_;
};

TEST_P(Verify, ChunkLogitsAreTheDecodesLogitsAndRollbackLeavesTheDecodedState) {
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed_));
  const int64_t V = model_->vocab_size();
  for (int trial = 0; trial < 6; ++trial) {
    // Prompts of 3..20 tokens and chunks of 1..9 (k = 0..8 drafts): with the
    // MiniMax config's block of 8 the state folds inside some chunks.
    const auto prompt = tokens(3 + rng_() % 18);
    const auto chunk = tokens(1 + rng_() % 9);
    const auto after = tokens(4);
    const int64_t n = static_cast<int64_t>(chunk.size()), P = static_cast<int64_t>(prompt.size());
    std::vector<float> logits;

    SequenceState decoded = model_->new_sequence();
    model_->prefill(decoded, prompt, logits);
    const std::vector<float> want = decode_each(decoded, chunk);

    // The chunk in one step, mixed with another sequence decoding and a third prefilling.
    SequenceState verified = model_->new_sequence(), other = model_->new_sequence(), third = model_->new_sequence();
    model_->prefill(verified, prompt, logits);
    model_->prefill(other, tokens(5), logits);
    const auto other_token = tokens(1), third_prompt = tokens(6);
    std::vector<Model::Chunk> step = {{&other, other_token}, {&verified, chunk, true}, {&third, third_prompt}};
    model_->step(step, logits);
    ASSERT_EQ(static_cast<int64_t>(logits.size()), (n + 2) * V);
    expect_same(std::vector<float>(logits.begin() + V, logits.begin() + (n + 1) * V), want,
                "trial " + std::to_string(trial) + ": verification logits");
    EXPECT_EQ(verified.length, P + n);

    // Cut back to every position of the chunk: the state decoding the kept
    // tokens leaves, and the same logits for the tokens after.
    for (int64_t keep = 0; keep <= n; ++keep) {
      SequenceState cut = model_->new_sequence(), ref = model_->new_sequence();
      model_->prefill(cut, prompt, logits);
      model_->prefill(ref, prompt, logits);
      model_->step(std::vector<Model::Chunk>{{&cut, chunk, true}}, logits);
      model_->rollback_verified(cut, P + keep);
      decode_each(ref, std::span<const int32_t>(chunk).first(keep));
      SCOPED_TRACE("trial " + std::to_string(trial) + ", kept " + std::to_string(keep) + " of " + std::to_string(n));
      expect_same_state(cut, ref);
      expect_same(decode_each(cut, after), decode_each(ref, after), "logits after the cut");
    }
  }
}

TEST_P(Verify, MarkAndRestoreGoBackToTheMarkedPosition) {
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed_));
  const auto prompt = tokens(11), ahead = tokens(6), after = tokens(3);
  std::vector<float> logits;
  SequenceState s = model_->new_sequence(), ref = model_->new_sequence();
  model_->prefill(s, prompt, logits);
  model_->prefill(ref, prompt, logits);
  const SequenceMark m = model_->mark(s);
  decode_each(s, ahead);
  model_->restore(s, m);
  expect_same_state(s, ref);
  expect_same(decode_each(s, after), decode_each(ref, after), "logits after restoring");
}

TEST(VerifyErrors, RollbackWithoutAVerificationChunkIsRefused) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenMP has threads running
  const ModelConfig c = testing::parse_or_die(testing::minimax_json());
  auto m = Model::from_tensors(c, random_weights(c, 1, 0.3f), *parse_precision("fp32"));
  ASSERT_TRUE(m.ok());
  SequenceState s = (*m)->new_sequence();
  std::vector<float> logits;
  const std::vector<int32_t> t = {1, 2, 3};
  (*m)->prefill(s, t, logits);
  EXPECT_DEATH((*m)->rollback_verified(s, 2), "not a verification chunk");
  (*m)->step(std::vector<Model::Chunk>{{&s, t, true}}, logits);
  EXPECT_DEATH((*m)->rollback_verified(s, 2), "outside the verification chunk");
  (*m)->rollback_verified(s, 4);
  EXPECT_EQ(s.length, 4);
}

INSTANTIATE_TEST_SUITE_P(
    FullAndHybrid, Verify,
    ::testing::Values(Case{"llama_strict", testing::llama_json(), "strict"},
                      Case{"qwen3_swa_strict", testing::qwen3_json(), "strict"},
                      Case{"minimax_strict", testing::minimax_json(), "strict"},
                      Case{"llama_fp32", testing::llama_json(), "fp32"},
                      Case{"minimax_fp32", testing::minimax_json(), "fp32"},
                      Case{"minimax_bf16_state", testing::minimax_json(),
                           "weights=f32,activations=f32,kv=f32,state=bf16,head=f32", 1e-2}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace interlace::model
