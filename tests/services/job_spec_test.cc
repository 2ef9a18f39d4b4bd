// Job specs: defaults, the algorithm's choices, and errors that name the key.
#include "interlace/rl/job_spec.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace interlace::rl {
namespace {

std::string error_of(const std::string& yaml) {
  auto j = parse_job_spec(yaml, "job.yaml");
  return j.ok() ? "" : std::string(j.status().message());
}

// The README's first command runs this spec: it must load, and its model
// config must be where it points (paths resolve against the spec's folder).
TEST(JobSpec, TheExampleJobLoads) {
  auto j = load_job_spec(INTERLACE_SOURCE_DIR "/examples/calculator/job.yaml");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_TRUE(std::filesystem::exists(j->model_init)) << j->model_init;
  EXPECT_TRUE(j->sft);
  EXPECT_GT(j->eval_prompts, 0);
}

TEST(JobSpec, ReadsKeysAndKeepsDefaults) {
  auto j = parse_job_spec(R"(
name: calc
env: calculator
model: {init: examples/models/tiny-hybrid.json, seed: 3}
sft: {steps: 50, schedule: constant}
algorithm: {name: cispo, eps_high: 4.0, steps: 7, group_size: 4, rollout_correction: tis}
staleness: {mode: sync, eta: 2, policy: downweight}
eval: {samples: 2}
)",
                          "job.yaml");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->objective.loss, learner::PolicyLoss::kCispo);
  EXPECT_EQ(j->objective.eps_high, 4.0);
  EXPECT_EQ(j->objective.correction, learner::RolloutCorrection::kTis);
  EXPECT_EQ(j->steps, 7);
  EXPECT_EQ(j->group_size, 4);
  EXPECT_EQ(j->groups_per_step, 8);  // default
  EXPECT_TRUE(j->sft);
  EXPECT_EQ(j->sft_steps, 50);
  EXPECT_EQ(job_spec_json(*j)["sft"]["schedule"], "constant");
  EXPECT_EQ(job_spec_json(*parse_job_spec("model: {init: x.json}\nsft: {}", "job.yaml"))["sft"]["schedule"], "cosine");
  EXPECT_EQ(j->mode, StalenessMode::kSync);
  EXPECT_EQ(j->stale_policy, StalePolicy::kDownweight);
  EXPECT_EQ(job_spec_json(*j)["staleness"]["mode"], "sync");
  EXPECT_EQ(job_spec_json(*j)["staleness"]["policy"], "downweight");
  EXPECT_EQ(j->eta, 2);
  EXPECT_EQ(j->model_seed, 3u);
  const auto resolved = job_spec_json(*j)["algorithm"];
  EXPECT_EQ(resolved["steps"], 7);
  EXPECT_EQ(resolved["loss"], "cispo");
  EXPECT_EQ(resolved["rollout_correction"], "tis");
  EXPECT_EQ(resolved["aggregation"], "token-mean");
  EXPECT_EQ(j->eval_samples, 2);
  EXPECT_EQ(job_spec_json(*j)["eval"]["prompts"], 32);  // default
  EXPECT_EQ(j->weights_transport, WeightsTransport::kZeroMq);  // default
  EXPECT_EQ(job_spec_json(*j)["weights"]["transport"], "zeromq");
}

TEST(JobSpec, ErrorsNameTheKeyAndWhatIsAllowed) {
  const std::string model = "model: {init: x.json}\n";
  EXPECT_NE(error_of(model + "algorithm: {nmae: grpo}").find("job.yaml:2: algorithm.nmae: unknown key; allowed here:"),
            std::string::npos)
      << error_of(model + "algorithm: {nmae: grpo}");
  EXPECT_NE(error_of(model + "algorithm: {name: dpo}").find("algorithm.name: 'dpo' is not allowed; choose one of: grpo, cispo"),
            std::string::npos);
  EXPECT_NE(error_of(model + "rollout: {temperature: hot}").find("rollout.temperature: 'hot' is not allowed; expected a finite number"),
            std::string::npos);
  EXPECT_NE(error_of(model + "staleness: {eta: -1}").find("staleness.eta"), std::string::npos);
  EXPECT_NE(error_of(model + "env: chess").find("env: "), std::string::npos);
  EXPECT_NE(error_of(model + "rollout: {precision: fp7}").find("rollout.precision"), std::string::npos);
  EXPECT_NE(error_of(model + "rollout: {speculate: \"eagle:k=2\"}").find("rollout.speculate"), std::string::npos);
  EXPECT_NE(error_of(model + "sft: {schedule: linear}").find("sft.schedule: 'linear' is not allowed; choose one of: constant"),
            std::string::npos);
  EXPECT_NE(error_of(model + "sft: 3").find("sft: expected a mapping"), std::string::npos);
  EXPECT_NE(error_of("name: x\n").find("exactly one of 'path'"), std::string::npos);
  EXPECT_NE(error_of(model + "name: [unclosed").find("not valid YAML"), std::string::npos);
  EXPECT_NE(error_of(model + "colour: blue").find("colour: unknown key"), std::string::npos);
  EXPECT_NE(error_of(model + "weights: {transport: udp}").find("weights.transport: 'udp' is not allowed; choose one of: "
                                                                "zeromq, nccl"),
            std::string::npos);
#ifdef INTERLACE_HAVE_NCCL
  auto nccl = parse_job_spec(model + "weights: {transport: nccl}", "job.yaml");
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  EXPECT_EQ(nccl->weights_transport, WeightsTransport::kNccl);
#else
  EXPECT_NE(error_of(model + "weights: {transport: nccl}").find("'nccl' needs a build with CUDA and NCCL"),
            std::string::npos);
#endif
}

// NaN compares false with everything, so a range check written as
// `x < lo || x > hi` let `lr: .nan` through (the job then published all-NaN
// weights). Every spelling of NaN and infinity YAML has is refused, naming the key.
TEST(JobSpec, RefusesNanAndInfinity) {
  const std::string model = "model: {init: x.json}\n";
  for (const char* value : {".nan", ".NaN", ".NAN", ".inf", "-.inf", ".Inf"}) {
    for (const char* key : {"algorithm: {lr: ", "sft: {lr: ", "rollout: {temperature: ", "algorithm: {eps_high: ",
                            "staleness: {weight: ", "algorithm: {kl_coef: "}) {
      const std::string e = error_of(model + key + value + "}");
      EXPECT_NE(e.find("is not allowed; expected a finite number"), std::string::npos) << key << value << ": " << e;
    }
  }
}

// The job name becomes a directory and a file prefix: '..' once wrote a run's
// files into the working directory.
TEST(JobSpec, JobNamesAreASafeSet) {
  const std::string model = "model: {init: x.json}\n";
  for (const char* bad : {"..", ".", ".hidden", "a/b", "a b", "'x\\y'", "caf\u00e9", "\"\"",
                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
    const std::string e = error_of(model + "name: " + bad);
    EXPECT_NE(e.find("is not allowed; use 1-64 letters, digits"), std::string::npos) << bad << ": " << e;
  }
  for (const char* good : {"calc", "calculator-grpo_v2.1", "A"}) EXPECT_EQ(error_of(model + "name: " + good), "") << good;
}

}  // namespace
}  // namespace interlace::rl
