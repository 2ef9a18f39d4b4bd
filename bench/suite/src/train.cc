// interlace bench train: training tokens/s (forward + backward + AdamW step)
// of example models, and how much of each step is GEMM and at what rate,
// next to the machine's sgemm rate measured in the same run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "interlace/bench/bench_util.h"
#include "interlace/bench/suites.h"
#include "interlace/kernels/gemm.h"
#include "interlace/learner/optimizer.h"
#include "interlace/learner/sft.h"
#include "interlace/learner/training_model.h"
#include "interlace/model/config.h"
#include "interlace/model/weights.h"

namespace interlace::bench {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// The reference point: PyTorch eager on this machine class, 15M 7:1
// hybrid with 4 experts, batch 8 x 256 tokens (measured by the author
// with Debian's python3-torch; not re-measured here).
constexpr double kPytorchEagerTokensPerSecond = 620.0;


}  // namespace

int64_t parameter_count(const model::NamedTensors& w) {
  int64_t n = 0;
  for (const auto& [name, t] : w) n += t.numel();
  return n;
}

absl::Status run_bench_train(const Common& c, const TrainBenchArgs& a) {
  std::fprintf(stderr, "bench train: measuring sgemm...\n");
  const double sgemm_gflops = measure_sgemm_gflops();
  json results = json::array();
  for (const std::string& name : a.models) {
    auto config = model::load_config(find_example(name));
    if (!config.ok()) return config.status();
    const model::NamedTensors w = model::random_weights(*config, 1, 0.02f);
    learner::TrainingModel tm(*config, w);
    learner::OptimizerConfig oc;  // AdamW, clipping at 1
    learner::Optimizer opt(oc, tm.weights());
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(std::min<int64_t>(config->vocab_size, 256) - 1));
    std::vector<learner::SftExample> data(a.batch);
    for (auto& ex : data) {
      for (int64_t t = 0; t < a.seq_len; ++t) ex.tokens.push_back(tok(rng));
      ex.loss_mask.assign(a.seq_len, 1);
    }
    std::vector<const learner::SftExample*> batch;
    for (const auto& ex : data) batch.push_back(&ex);
    std::vector<double> step_s, gemm_s, gemm_flops, opt_s;
    for (int64_t s = 0; s <= a.steps; ++s) {  // step 0 warms up
      std::fprintf(stderr, "bench train: %s step %lld/%lld\n", name.c_str(), static_cast<long long>(s),
                   static_cast<long long>(a.steps));
      kernels::reset_gemm_counters();
      const auto t0 = Clock::now();
      model::NamedTensors grads = tm.zero_grads();
      learner::sft_accumulate(tm, batch, grads);
      const auto t1 = Clock::now();
      opt.step(tm.weights(), grads, s);
      tm.weights_changed();
      const auto t2 = Clock::now();
      if (s == 0) continue;
      const kernels::GemmCounters g = kernels::gemm_counters();
      step_s.push_back(std::chrono::duration<double>(t2 - t0).count());
      opt_s.push_back(std::chrono::duration<double>(t2 - t1).count());
      gemm_s.push_back(g.seconds);
      gemm_flops.push_back(g.flops);
    }
    // The median step, and that step's GEMM figures.
    std::vector<size_t> order(step_s.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return step_s[x] < step_s[y]; });
    const size_t m = order[order.size() / 2];
    const double tokens = double(a.batch * a.seq_len);
    const double gemm_rate = gemm_flops[m] / gemm_s[m] / 1e9;
    json r = {{"model", name},
              {"architecture", model::architecture_name(config->architecture)},
              {"parameters", parameter_count(w)},
              {"step_seconds", step_s[m]},
              {"tokens_per_second", tokens / step_s[m]},
              {"optimizer_seconds", opt_s[m]},
              {"gemm_seconds", gemm_s[m]},
              {"gemm_share", gemm_s[m] / step_s[m]},
              {"gemm_gflops", gemm_rate},
              {"gemm_fraction_of_sgemm", gemm_rate / sgemm_gflops}};
    if (name == "hybrid-15m.json") {
      r["pytorch_eager_reference_tokens_per_second"] = kPytorchEagerTokensPerSecond;
      r["speedup_vs_pytorch_eager_reference"] = tokens / step_s[m] / kPytorchEagerTokensPerSecond;
    }
    results.push_back(r);
  }
  json settings = {{"batch", a.batch}, {"seq_len", a.seq_len}, {"steps_timed", a.steps}, {"optimizer", "adamw"},
                   {"precision", "fp32"}, {"sgemm_gflops_1024", sgemm_gflops}};
  emit(c, "train", settings, results, [&] {
    std::printf("# batch %lld x %lld tokens, AdamW, fp32; sgemm 1024^3: %.0f GFLOP/s\n",
                static_cast<long long>(a.batch), static_cast<long long>(a.seq_len), sgemm_gflops);
    std::printf("%-20s %10s %10s %10s %9s %12s %9s\n", "model", "params", "step_s", "tok/s", "gemm%", "gemm_GFLOP/s",
                "of_sgemm");
    for (const json& r : results)
      std::printf("%-20s %9.1fM %10.3f %10.0f %8.0f%% %12.0f %8.0f%%\n", r["model"].get<std::string>().c_str(),
                  r["parameters"].get<int64_t>() / 1e6, r["step_seconds"].get<double>(),
                  r["tokens_per_second"].get<double>(), 100 * r["gemm_share"].get<double>(),
                  r["gemm_gflops"].get<double>(), 100 * r["gemm_fraction_of_sgemm"].get<double>());
  });
  return absl::OkStatus();
}

}  // namespace interlace::bench
