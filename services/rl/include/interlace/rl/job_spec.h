// A job spec: everything `interlace run JOB.yaml` needs to run an RL job on
// one machine. Parsed from YAML; an unknown key or a bad value is an error
// that names the key (as a path, e.g. `algorithm.loss`) and says what is
// allowed. Every key has a default, so a spec names only what it changes.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "interlace/learner/objectives.h"
#include "interlace/learner/optimizer.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

// Parsed once from the spec's strings; the services compare these, not strings.
enum class StalenessMode { kSync, kAsync };
enum class StalePolicy { kDrop, kDownweight };
enum class WeightsTransport { kZeroMq, kNccl };
const char* staleness_mode_name(StalenessMode m);
const char* stale_policy_name(StalePolicy p);
const char* weights_transport_name(WeightsTransport t);

struct JobSpec {
  std::string name = "job";
  uint64_t seed = 0;
  // model: a directory, or a config JSON to initialise randomly (with seed);
  // relative paths are relative to the spec file's directory.
  std::string model_dir, model_init;
  uint64_t model_seed = 0;
  std::string env = "calculator";
  // sft: warm-up on the environment's demonstrations before RL.
  bool sft = false;
  int64_t sft_demos = 512, sft_steps = 100, sft_batch_size = 16, sft_warmup_steps = 10;
  double sft_lr = 3e-3;
  // After the warm-up steps: "cosine" (to 0 at sft_steps) or "constant".
  std::string sft_schedule = "cosine";
  // The held-out greedy reward the warmed-up model should reach for the RL
  // part to work from (0: not checked); below it the run says so plainly.
  double sft_expect_greedy_reward = 0;
  // Checked warm-up (0: off): every check_every steps the model plays
  // eval_prompts validation tasks greedily (training-distribution tasks with
  // a seed of their own, not the held-out ones), and the warm-up stops once it
  // solves expect_greedy_reward of them; `steps` is then the most it may take
  // (the cosine schedule spans it). Copying is learnt in a sharp transition
  // whose step is a draw: this gives a late draw the steps it needs and an
  // early one no more than it needs (issue 17).
  int64_t sft_check_every = 0;
  // algorithm
  std::string algorithm = "grpo";  // grpo | cispo | gspo | ppo
  learner::ObjectiveConfig objective;
  learner::AdvantageConfig advantage;
  learner::OptimizerConfig optimizer;
  int64_t steps = 20, groups_per_step = 8, group_size = 8;
  // rollout: `workers` processes started with the job; 0: workers that connect
  // by themselves (docs/wire-protocol.md) do all the rollout.
  int64_t workers = 1, max_running = 64;
  // On the control plane's worker pool (`serve learner --redis`): `workers`
  // is what the job asks for, and the learner starts once this many are given.
  int64_t min_workers = 1;
  // The learner scores log-probs at this temperature too (softmax(logits / t)).
  float temperature = 1.0f, top_p = 1.0f;
  int64_t top_k = 0, max_turns = 4, max_turn_tokens = 128, max_episode_tokens = 2048;
  std::string rollout_precision = "fp32", learner_precision = "fp32";
  std::string speculate = "off";  // rollout: speculative decoding (rollout::parse_speculate)
  bool cache = true;
  // The cache's pools: KV blocks (16 tokens of every softmax layer each) and
  // lightning-state checkpoints, per worker.
  // Each worker's prefix cache: a byte budget (0: 1/8 of the machine's memory,
  // 64 MiB..8 GiB) and optional caps on blocks and states (0: none).
  int64_t cache_bytes = 0, cache_blocks = 0, cache_states = 0;
  // staleness: sync = generate a batch, then train; async = generation goes on
  // while training, at most eta versions behind.
  StalenessMode mode = StalenessMode::kAsync;
  int64_t eta = 1;
  StalePolicy stale_policy = StalePolicy::kDrop;
  double stale_weight = 0.5;          // downweight: advantage x stale_weight^(lag - eta)
  int64_t checkpoint_every = 0;       // 0: only the final model
  // After a checkpoint, a spool larger than this is rewritten with only the
  // trajectories not trained yet (0: after every checkpoint).
  int64_t spool_compact_bytes = int64_t{64} << 20;
  int64_t eval_prompts = 32;          // held-out tasks evaluated before and after; 0 skips
  // Besides one greedy episode per task: this many episodes per task sampled at
  // the rollout temperature (the policy RL optimises); 0 skips.
  int64_t eval_samples = 4;
  // transport
  // How weights reach the workers: zeromq (checksummed chunks; always there) or
  // nccl (a broadcast per worker from the learner's GPU, in builds with CUDA and
  // NCCL; a worker falls back to zeromq for an update NCCL fails to bring).
  WeightsTransport weights_transport = WeightsTransport::kZeroMq;
  int64_t max_in_flight = 64;     // trajectories a worker may have unacknowledged
  double resend_after_s = 15.0;   // a worker resends what is not acknowledged by then (longer than a step)
  double task_timeout_s = 120.0;  // a group not finished by then is issued again
  // watchdog: no step in factor x the median step time (at least min_seconds;
  // before the first step factor x min_seconds) is reported as a stall (log,
  // interlace_learner_stalled, interlace_learner_stalls_total); with exit the
  // learner also exits with 3 (the supervisor restarts it).
  double watchdog_factor = 10, watchdog_min_s = 60;
  bool watchdog_exit = false;
};

absl::StatusOr<JobSpec> parse_job_spec(const std::string& yaml_text, const std::string& source);
absl::StatusOr<JobSpec> load_job_spec(const std::string& path);
// The resolved spec (every key, defaults included), written into the run directory.
nlohmann::json job_spec_json(const JobSpec& spec);

}  // namespace interlace::rl
