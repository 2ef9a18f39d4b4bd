// SFT: data validation, the batch loss normalisation against the float64
// reference model, memorisation with AdamW for full and hybrid models, and
// exact resumption from a checkpoint.
#include "interlace/learner/sft.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "interlace/learner/checkpoint.h"
#include "interlace/learner/optimizer.h"
#include "interlace/learner/sft_trainer.h"
#include "model/reference_model.h"
#include "model/test_configs.h"
#include "support/random.h"

namespace interlace::learner {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("interlace_sft_" + std::to_string(::getpid()) + "_" +
                                                 std::to_string(counter_++))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
    return (path_ / name).string();
  }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

std::string error_of(const std::string& path, int64_t vocab = 64) {
  auto r = read_sft_file(path, vocab);
  return r.ok() ? "ok" : std::string(r.status().message());
}

TEST(SftData, BadLinesAreRejectedNamingFileLineAndEntry) {
  TempDir d;
  const std::string good = "{\"tokens\":[1,2,3],\"loss_mask\":[0,1,1]}\n";
  EXPECT_EQ(error_of(d.file("ok.jsonl", good + "\n" + good)), "ok");
  std::string e = error_of(d.file("oov.jsonl", good + "{\"tokens\":[1,64,3],\"loss_mask\":[0,1,1]}\n"));
  EXPECT_NE(e.find("oov.jsonl:2"), std::string::npos) << e;
  EXPECT_NE(e.find("tokens[1] = 64"), std::string::npos) << e;
  e = error_of(d.file("len.jsonl", good + good + "{\"tokens\":[1,2,3],\"loss_mask\":[0,1]}\n"));
  EXPECT_NE(e.find("len.jsonl:3"), std::string::npos) << e;
  EXPECT_NE(e.find("loss_mask has 2 entries but tokens has 3"), std::string::npos) << e;
  e = error_of(d.file("empty.jsonl", "\n\n"));
  EXPECT_NE(e.find("empty"), std::string::npos) << e;
  e = error_of(d.file("nomask.jsonl", "{\"tokens\":[1,2,3]}\n"));
  EXPECT_NE(e.find("nomask.jsonl:1"), std::string::npos) << e;
  e = error_of(d.file("two.jsonl", "{\"tokens\":[1,2,3],\"loss_mask\":[0,2,1]}\n"));
  EXPECT_NE(e.find("loss_mask[1] must be 0 or 1"), std::string::npos) << e;
  e = error_of(d.file("nothing.jsonl", "{\"tokens\":[1,2,3],\"loss_mask\":[1,0,0]}\n"));
  EXPECT_NE(e.find("nothing to train on"), std::string::npos) << e;
  e = error_of(d.file("json.jsonl", good + "{tokens: oops\n"));
  EXPECT_NE(e.find("json.jsonl:2: not a JSON object"), std::string::npos) << e;
  EXPECT_NE(error_of((d.path() / "missing.jsonl").string()).find("cannot open"), std::string::npos);
}

std::vector<SftExample> random_examples(std::mt19937_64& rng, int n, int64_t len, int64_t vocab) {
  std::vector<SftExample> out(n);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(vocab - 1));
  std::bernoulli_distribution coin(0.6);
  for (auto& ex : out) {
    const int64_t T = len - (&ex - out.data()) * 3;  // different lengths
    for (int64_t t = 0; t < T; ++t) {
      ex.tokens.push_back(tok(rng));
      ex.loss_mask.push_back(coin(rng) ? 1 : 0);
    }
  }
  return out;
}

TEST(SftLoss, IsSummedMaskedNllOverMaskedTokenCountOfTheWholeBatch) {
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const model::ModelConfig config = testing::parse_or_die(testing::minimax_json());
  const model::NamedTensors w = model::random_weights(config, seed, 0.2f);
  TrainingModel tm(config, w);
  const std::vector<SftExample> data = random_examples(rng, 3, 20, config.vocab_size);
  double nll = 0;
  int64_t count = 0;
  for (const SftExample& ex : data) {
    const std::vector<double> lp = testing::reference_logprobs(config, w, ex.tokens);
    for (size_t t = 1; t < ex.tokens.size(); ++t)
      if (ex.loss_mask[t]) {
        nll -= lp[t];
        ++count;
      }
  }
  std::vector<const SftExample*> batch;
  for (const auto& ex : data) batch.push_back(&ex);
  model::NamedTensors grads = tm.zero_grads();
  const SftBatchStats s = sft_accumulate(tm, batch, grads);
  EXPECT_EQ(s.trained_tokens, count);
  EXPECT_NEAR(s.loss, nll / double(count), 1e-5);
  // Position 0 is never trained, whatever its mask says.
  std::vector<SftExample> first = {data[0]};
  first[0].loss_mask[0] = 1 - first[0].loss_mask[0];
  EXPECT_EQ(first[0].trained_tokens(), data[0].trained_tokens());
}

class Memorisation : public ::testing::TestWithParam<std::string> {};

TEST_P(Memorisation, AdamWDrivesTheLossDown) {
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const model::ModelConfig config = testing::parse_or_die(GetParam() == "hybrid" ? testing::minimax_json()
                                                                                 : testing::qwen3_json());
  TrainingModel tm(config, model::random_weights(config, seed, 0.02f));
  std::vector<SftExample> data = random_examples(rng, 4, 24, config.vocab_size);
  std::vector<const SftExample*> batch;
  for (const auto& ex : data) batch.push_back(&ex);
  OptimizerConfig oc;
  oc.lr = 1e-2;
  Optimizer opt(oc, tm.weights());
  double first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    model::NamedTensors grads = tm.zero_grads();
    const SftBatchStats s = sft_accumulate(tm, batch, grads);
    ASSERT_TRUE(opt.step(tm.weights(), grads, step).applied);
    tm.weights_changed();
    if (step == 0) first = s.loss;
    last = s.loss;
  }
  // Random tokens over a vocabulary of 64: the loss starts near ln 64 = 4.16.
  EXPECT_NEAR(first, std::log(64.0), 0.3);
  EXPECT_LT(last, 0.25 * first) << "first " << first << " last " << last;
}

INSTANTIATE_TEST_SUITE_P(FullAndHybrid, Memorisation, ::testing::Values("full", "hybrid"));

TEST(BatchSampler, EveryEpochIsAPermutationAndStateReplays) {
  BatchSampler s(6, 3, 42);
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<int> seen(6, 0);
    for (int b = 0; b < 2; ++b) {
      const std::vector<int64_t> batch = s.next();
      EXPECT_TRUE(std::is_sorted(batch.begin(), batch.end()));
      for (int64_t j : batch) ++seen[j];
    }
    for (int c : seen) EXPECT_EQ(c, 1);
  }
  s.next();  // mid-epoch
  BatchSampler copy(6, 3, 0);
  ASSERT_TRUE(copy.restore(s.state()).ok());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(copy.next(), s.next());
  BatchSampler wrong(7, 3, 0);
  EXPECT_FALSE(wrong.restore(s.state()).ok());
  BatchSampler all(5, 0, 1);
  EXPECT_EQ(all.next().size(), 5u);
}

// The SFT loop (train_sft, what `interlace train sft` and the job's warm-up
// run): a run resumed from its step-2 checkpoint, or trained in two pieces
// (stop_at, then resume), ends with exactly the weights of the uninterrupted
// run, and every step is reported.
TEST(SftTrainer, ResumingTakesExactlyTheUninterruptedSteps) {
  const uint64_t seed = testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TempDir d;
  const model::ModelConfig config = testing::parse_or_die(testing::minimax_json());
  // A model directory to start from, and a data file.
  const std::string src = (d.path() / "src").string();
  fs::create_directories(src);
  d.file("src/config.json", testing::minimax_json().dump());
  TrainingModel init(config, model::random_weights(config, seed, 0.05f));
  ASSERT_TRUE(save_model(src, init, "").ok());
  std::string jsonl;
  for (const SftExample& e : random_examples(rng, 5, 16, config.vocab_size))
    jsonl += nlohmann::json{{"tokens", e.tokens}, {"loss_mask", e.loss_mask}}.dump() + "\n";
  const std::string data = d.file("data.jsonl", jsonl);

  SftOptions o;
  o.model = src;
  o.data = data;
  o.out = (d.path() / "straight").string();
  o.steps = 5;
  o.batch_size = 2;
  o.seed = seed;
  o.checkpoint_every = 2;
  o.optimizer.warmup_steps = 2;
  o.optimizer.weight_decay = 0.01;
  std::vector<int64_t> reported;
  SftCallbacks report;
  report.stepped = [&](const SftProgress& p) {
    reported.push_back(p.step);
    EXPECT_TRUE(std::isfinite(p.loss));
    EXPECT_GT(p.tokens, 0);
  };
  auto straight = train_sft(o, report);
  ASSERT_TRUE(straight.ok()) << straight.status();
  EXPECT_EQ(reported, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(straight->steps, 5);
  const std::string ckpt = (d.path() / "straight" / "checkpoints" / "step-2").string();
  EXPECT_TRUE(fs::exists(fs::path(ckpt) / "config.json"));
  EXPECT_FALSE(fs::exists(ckpt + ".partial"));

  SftOptions again = o;
  again.resume = ckpt;
  again.out = (d.path() / "resumed").string();
  int64_t resumed_at = -1;
  SftCallbacks started;
  started.started = [&](const SftStarted& s) { resumed_at = s.resumed_at; };
  auto resumed = train_sft(again, started);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed_at, 2);
  EXPECT_EQ(resumed->final_loss, straight->final_loss);
  auto a = load_training_model(o.out), b = load_training_model(again.out);
  ASSERT_TRUE(a.ok() && b.ok());
  for (const auto& [name, t] : (*a)->weights()) {
    const core::Tensor& r = (*b)->weights().at(name);
    ASSERT_EQ(t.numel(), r.numel());
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.f32()[i], r.f32()[i]) << name << "[" << i << "]";
  }
  // In pieces, as `interlace run`'s checked warm-up trains: stop after step 3
  // (a checkpoint there, though 3 is no multiple of 2), resume to the end.
  SftOptions piece = o;
  piece.out = (d.path() / "pieces").string();
  piece.stop_at = 3;
  auto first = train_sft(piece);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->steps, 3);
  piece.stop_at = 0;
  piece.resume = (d.path() / "pieces" / "checkpoints" / "step-3").string();
  auto rest = train_sft(piece);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->final_loss, straight->final_loss);
  auto c = load_training_model(piece.out);
  ASSERT_TRUE(c.ok());
  for (const auto& [name, t] : (*a)->weights())
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.f32()[i], (*c)->weights().at(name).f32()[i]) << name;
  // A checkpoint refuses an optimizer of another kind.
  OptimizerConfig sgd;
  sgd.kind = OptimizerKind::kSgd;
  Optimizer other(sgd, (*a)->weights());
  EXPECT_FALSE(load_checkpoint(ckpt, other).ok());
  // Bad data is an error naming the file, not a crash.
  SftOptions bad = o;
  bad.data = d.file("bad.jsonl", "not json\n");
  auto refused = train_sft(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(std::string(refused.status().message()).find("bad.jsonl:1"), std::string::npos) << refused.status();
}

}  // namespace
}  // namespace interlace::learner
