// interlace bench state-drift: how far log-probs drift when an episode's
// lightning states are stored in a low-precision dtype at every turn boundary
// (what the prefix cache does when its state dtype is bf16 or fp16), against
// states kept in fp32, over long episodes.
#include <cmath>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "interlace/bench/bench_util.h"
#include "interlace/bench/suites.h"
#include "interlace/core/dtype.h"
#include "interlace/model/config.h"
#include "interlace/model/model.h"
#include "interlace/model/state_drift.h"
#include "interlace/model/weights.h"

namespace interlace::bench {

using nlohmann::json;

absl::Status run_drift(const Common& c, const DriftArgs& a) {
  auto config = model::load_config(find_example(a.model));
  if (!config.ok()) return config.status();
  auto m = model::Model::from_tensors(*config, model::random_weights(*config, 3, 0.05f), model::PrecisionProfile{});
  if (!m.ok()) return m.status();
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int32_t> tok(0, 255);
  std::vector<int32_t> tokens(a.tokens);
  for (auto& t : tokens) t = tok(rng);
  json results = json::array();
  for (core::DType d : {core::DType::kBF16, core::DType::kF16}) {
    std::fprintf(stderr, "bench state-drift: %s states...\n", core::dtype_name(d));
    const model::StateDrift drift = model::measure_state_drift(**m, tokens, a.turn, d);
    results.push_back({{"state_dtype", core::dtype_name(d)},
                       {"logprob_abs_diff_mean", drift.mean},
                       {"logprob_abs_diff_max", drift.max},
                       {"logprob_abs_diff_mean_last_quarter", drift.mean_last_quarter}});
  }
  json settings = {{"model", a.model}, {"tokens", a.tokens}, {"turn_tokens", a.turn}, {"reference", "f32 states"}};
  emit(c, "state-drift", settings, results, [&] {
    std::printf("# %s, %lld tokens in turns of %lld; states rounded at every turn boundary vs kept in f32\n",
                a.model.c_str(), static_cast<long long>(a.tokens), static_cast<long long>(a.turn));
    std::printf("%-8s %14s %14s %20s\n", "state", "|dlogp| mean", "|dlogp| max", "mean, last quarter");
    for (const json& r : results)
      std::printf("%-8s %14.3g %14.3g %20.3g\n", r["state_dtype"].get<std::string>().c_str(),
                  r["logprob_abs_diff_mean"].get<double>(), r["logprob_abs_diff_max"].get<double>(),
                  r["logprob_abs_diff_mean_last_quarter"].get<double>());
  });
  return absl::OkStatus();
}

}  // namespace interlace::bench
