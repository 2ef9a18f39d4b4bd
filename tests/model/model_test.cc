// The forward pass against a float64 reference written from the Hugging Face
// definitions, decode against prefill, batched against one-at-a-time, and
// loading from disk.
#include "interlace/model/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "interlace/core/file_util.h"
#include "interlace/model/model_init.h"
#include "interlace/model/safetensors.h"
#include "reference_model.h"
#include "support/random.h"
#include "test_configs.h"

namespace interlace::model {
namespace {

using interlace::testing::fresh_seed;

struct Arch {
  std::string name;
  nlohmann::json json;
  MoeNaming naming = MoeNaming::kPacked;
};

std::vector<Arch> archs() {
  return {{"llama", testing::llama_json()},
          {"qwen3", testing::qwen3_json()},
          {"minimax-packed", testing::minimax_json(), MoeNaming::kPacked},
          {"minimax-per-expert", testing::minimax_json(), MoeNaming::kPerExpert},
          {"minimax-qk-norm", testing::minimax_qk_norm_json()}};
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

PrecisionProfile fp32() { return *parse_precision("fp32"); }

// Log-probabilities past the first (which is undefined, NaN).
std::vector<float> lp(Model& m, const std::vector<int32_t>& tokens) {
  std::vector<float> v = m.score(tokens, ScorePath::kPrefill);
  return {v.begin() + 1, v.end()};
}

class ModelVsReference : public ::testing::TestWithParam<Arch> {};

// Weights large enough (std 0.25) that the distribution is far from uniform, so a
// wrong layer semantic moves log-probabilities by far more than the tolerance.
TEST_P(ModelVsReference, PrefillAndDecodeMatchFloat64Reference) {
  const Arch& arch = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  ModelConfig config = testing::parse_or_die(arch.json);
  NamedTensors w = random_weights(config, seed, 0.25f, arch.naming);
  auto m = Model::from_tensors(config, w, fp32());
  ASSERT_TRUE(m.ok()) << m.status();
  const auto tokens = random_tokens(rng, 41, config.vocab_size);
  const std::vector<double> ref = testing::reference_logprobs(config, w, tokens);
  const std::vector<float> pre = (*m)->score(tokens, ScorePath::kPrefill);
  const std::vector<float> dec = (*m)->score(tokens, ScorePath::kDecode);
  double mean = 0, var = 0, worst_pre = 0, worst_dec = 0;
  for (size_t i = 1; i < tokens.size(); ++i) mean += ref[i] / (tokens.size() - 1);
  for (size_t i = 1; i < tokens.size(); ++i) {
    var += (ref[i] - mean) * (ref[i] - mean) / (tokens.size() - 1);
    worst_pre = std::max(worst_pre, std::fabs(pre[i] - ref[i]));
    worst_dec = std::max(worst_dec, std::fabs(dec[i] - ref[i]));
  }
  // The test can fail: the log-probs are far from uniform (std well above the tolerance).
  EXPECT_GT(std::sqrt(var), 0.3) << "weights too small for a meaningful comparison";
  EXPECT_LT(worst_pre, 1e-4) << arch.name << " prefill vs float64 reference";
  EXPECT_LT(worst_dec, 1e-4) << arch.name << " decode vs float64 reference";
  std::fprintf(stderr, "%s: logprob std %.2f, max |prefill - ref| %.2e, max |decode - ref| %.2e\n",
               arch.name.c_str(), std::sqrt(var), worst_pre, worst_dec);
}

INSTANTIATE_TEST_SUITE_P(Architectures, ModelVsReference, ::testing::ValuesIn(archs()),
                         [](const auto& info) {
                           std::string n = info.param.name;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// Decode of a batch of sequences with different lengths equals decoding each alone,
// and the per-token logits of decode equal those of prefill.
TEST(Model, BatchedRaggedDecodeEqualsSingleAndPrefill) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (const auto& j : {testing::minimax_json(), testing::qwen3_json()}) {
    ModelConfig config = testing::parse_or_die(j);
    auto m = Model::from_tensors(config, random_weights(config, seed, 0.25f), fp32());
    ASSERT_TRUE(m.ok());
    Model& model = **m;
    const std::vector<int64_t> prompt_lens = {3, 17, 30};
    std::vector<std::vector<int32_t>> prompts, conts;
    for (int64_t n : prompt_lens) {
      prompts.push_back(random_tokens(rng, n, config.vocab_size));
      conts.push_back(random_tokens(rng, 12, config.vocab_size));
    }
    // Batched.
    std::vector<SequenceState> seqs;
    std::vector<float> logits;
    for (auto& p : prompts) {
      seqs.push_back(model.new_sequence());
      model.prefill(seqs.back(), p, logits);
    }
    std::vector<SequenceState*> ptrs;
    for (auto& s : seqs) ptrs.push_back(&s);
    std::vector<std::vector<float>> batched;
    for (int step = 0; step < 12; ++step) {
      std::vector<int32_t> toks;
      for (auto& c : conts) toks.push_back(c[step]);
      model.decode(ptrs, toks, logits);
      batched.push_back(logits);
    }
    // One at a time, and a single prefill of the whole sequence.
    const int64_t V = config.vocab_size;
    for (size_t b = 0; b < prompts.size(); ++b) {
      SequenceState s = model.new_sequence();
      model.prefill(s, prompts[b], logits);
      SequenceState* sp = &s;
      std::vector<int32_t> whole = prompts[b];
      whole.insert(whole.end(), conts[b].begin(), conts[b].end());
      std::vector<float> all;
      SequenceState s2 = model.new_sequence();
      model.prefill(s2, whole, all, /*all_logits=*/true);
      for (int step = 0; step < 12; ++step) {
        model.decode({&sp, 1}, {&conts[b][step], 1}, logits);
        const float* bl = batched[step].data() + b * V;
        const float* pl = all.data() + (prompts[b].size() + step) * V;
        for (int64_t v = 0; v < V; ++v) {
          // Different batch sizes take different GEMM kernels: fp32 rounding differs.
          ASSERT_NEAR(bl[v], logits[v], 1e-4f) << "seq " << b << " step " << step;
          ASSERT_NEAR(pl[v], logits[v], 1e-4f) << "seq " << b << " step " << step;
        }
      }
    }
  }
}

// Prefill split into chunks (continuing the same sequence) equals one prefill.
TEST(Model, ChunkedPrefillEqualsWhole) {
  const uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  ModelConfig config = testing::parse_or_die(testing::minimax_json());
  auto m = Model::from_tensors(config, random_weights(config, seed, 0.25f), fp32());
  auto tokens = random_tokens(rng, 50, config.vocab_size);
  std::vector<float> whole, part, tail;
  SequenceState a = (*m)->new_sequence(), b = (*m)->new_sequence();
  (*m)->prefill(a, tokens, whole, true);
  (*m)->prefill(b, std::span(tokens).first(21), part, true);
  (*m)->prefill(b, std::span(tokens).subspan(21), tail, true);
  ASSERT_EQ(b.length, 50);
  for (size_t i = 0; i < tail.size(); ++i) ASSERT_NEAR(tail[i], whole[21 * 64 + i], 1e-4f) << i;
}

class ModelDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("interlace_model_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write_config(const nlohmann::json& j) {
    const std::string path = (dir_ / "config.json").string();
    EXPECT_TRUE(core::write_file(path, j.dump()).ok());
    return path;
  }
  std::filesystem::path dir_;
};

TEST_F(ModelDir, InitThenLoadGivesTheSameModel) {
  for (const auto& j : {testing::minimax_json(), testing::llama_json()}) {
    std::filesystem::path cfg = dir_ / "src.json";
    ASSERT_TRUE(core::write_file(cfg.string(), j.dump()).ok());
    const std::string out = (dir_ / "model").string();
    ASSERT_TRUE(init_model_dir({.config_path = cfg.string(), .out_dir = out, .seed = 5}).ok());
    auto loaded = Model::load(out, fp32());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ModelConfig config = testing::parse_or_die(j);
    auto direct = Model::from_tensors(config, random_weights(config, 5, 0.02f), fp32());
    std::vector<int32_t> tokens = {1, 5, 9, 33, 2, 7, 63};
    EXPECT_EQ(lp(**loaded, tokens), lp(**direct, tokens));
    // A bf16 checkpoint loads too, and equals the bf16-rounded weights.
    ASSERT_TRUE(init_model_dir({.config_path = cfg.string(), .out_dir = out, .seed = 5,
                                .dtype = core::DType::kBF16}).ok());
    auto ckpt = Checkpoint::open(out);
    ASSERT_TRUE(ckpt.ok());
    EXPECT_EQ(ckpt->info("model.embed_tokens.weight").dtype, core::DType::kBF16);
    NamedTensors rounded_w = random_weights(config, 5, 0.02f);
    for (auto& [name, t] : rounded_w) t = t.to_dtype(core::DType::kBF16).to_f32();
    auto from_bf16 = Model::load(out, fp32());
    auto rounded = Model::from_tensors(config, rounded_w, fp32());
    ASSERT_TRUE(from_bf16.ok());
    EXPECT_EQ(lp(**from_bf16, tokens), lp(**rounded, tokens));
  }
}

TEST_F(ModelDir, ShardedCheckpointLoads) {
  ModelConfig config = testing::parse_or_die(testing::minimax_json());
  NamedTensors w = random_weights(config, 9, 0.1f);
  std::vector<std::pair<std::string, core::Tensor>> ordered;
  for (const WeightSpec& s : weight_specs(config)) ordered.emplace_back(s.name, w.at(s.name));
  ASSERT_TRUE(write_checkpoint(dir_.string(), ordered, 16 * 1024).ok());
  EXPECT_TRUE(std::filesystem::exists(dir_ / "model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "model.safetensors"));
  write_config(testing::minimax_json());
  auto loaded = Model::load(dir_.string(), fp32());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto direct = Model::from_tensors(config, w, fp32());
  std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6};
  EXPECT_EQ(lp(**loaded, tokens), lp(**direct, tokens));
}

TEST_F(ModelDir, MissingAndMisshapedTensorsAreNamed) {
  ModelConfig config = testing::parse_or_die(testing::llama_json());
  NamedTensors w = random_weights(config, 1);
  write_config(testing::llama_json());
  std::vector<std::pair<std::string, core::Tensor>> ordered;
  for (const WeightSpec& s : weight_specs(config))
    if (s.name != "model.layers.1.mlp.up_proj.weight") ordered.emplace_back(s.name, w.at(s.name));
  ASSERT_TRUE(write_checkpoint(dir_.string(), ordered).ok());
  auto missing = Model::load(dir_.string(), fp32());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("model.layers.1.mlp.up_proj.weight"), std::string::npos)
      << missing.status();
  ordered.emplace_back("model.layers.1.mlp.up_proj.weight", core::Tensor::zeros({48, 31}));
  ASSERT_TRUE(write_checkpoint(dir_.string(), ordered).ok());
  auto shaped = Model::load(dir_.string(), fp32());
  ASSERT_FALSE(shaped.ok());
  const std::string msg(shaped.status().message());
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[48, 31]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[48, 32]"), std::string::npos) << msg;
}

TEST(Model, FromTensorsChecksShapes) {
  ModelConfig config = testing::parse_or_die(testing::minimax_json());
  NamedTensors w = random_weights(config, 3);
  w["model.layers.2.mlp.experts.down_proj"] = core::Tensor::zeros({4, 32, 23});
  auto m = Model::from_tensors(config, w, fp32());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("model.layers.2.mlp.experts.down_proj"), std::string::npos) << m.status();
}

TEST(Model, Bf16ProfileDiffersBoundedlyFromFp32) {
  ModelConfig config = testing::parse_or_die(testing::minimax_json());
  NamedTensors w = random_weights(config, 3, 0.25f);
  auto a = Model::from_tensors(config, w, fp32());
  auto b = Model::from_tensors(config, w, *parse_precision("bf16"));
  std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  auto la = (*a)->score(tokens, ScorePath::kPrefill), lb = (*b)->score(tokens, ScorePath::kPrefill);
  double worst = 0;
  for (size_t i = 1; i < tokens.size(); ++i) worst = std::max(worst, double(std::fabs(la[i] - lb[i])));
  EXPECT_GT(worst, 1e-4);  // rounding happened
  EXPECT_LT(worst, 0.5);   // and is only rounding
}

}  // namespace
}  // namespace interlace::model
