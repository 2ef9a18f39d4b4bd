// What a study's runs show, variant by variant (`interlace study`): each
// evaluation set's reward averaged over the variant's runs with a standard
// error over those runs (the spread of seeds, which at this scale is the
// larger noise), its paired difference from the reference variant on the
// same tasks and seeds (the same held-out episodes), and the runs' other
// figures averaged. A pure function of table.json, so a table can be
// summarised again without rerunning anything.
//
// A row (one variant, task and seed) carries what this reads:
//   "variant", "task", "seed",
//   "rewards": {SET: {EPISODE_KEY: reward, ...}, ...}   SET: "held-out greedy",
//              "held-out sampled" or an evaluation environment
//   "figures": {NAME: number or null, ...}              averaged per variant
// and the variant's "parameters", "training_flops_per_token", "sft_steps"
// (the planned budget; copied from its first row), "sft_steps_taken" and
// "sft_training_flops" (means over its runs: a checked warm-up may stop early).
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace interlace::rl {

// With several training tasks a set's name says which task trained the model:
// "held-out greedy | trained on kv-retrieval:pairs=8".
inline constexpr char kStudyTrainedOn[] = " | trained on ";

// {"reference": NAME, "sets": [SET...], "variants": [{"variant", "runs",
//  "parameters", "training_flops_per_token", "sft_steps", "sft_training_flops",
//  "rewards": {SET: {"mean", "se", "min", "max", "runs"}},
//  "vs_reference": {SET: {"diff", "se", "pairs", "higher", "lower", "episodes"}},
//  "figures": {NAME: mean over runs}}]}. "se" is null with fewer than two
// runs (pairs); the reference has no "vs_reference". The standard errors are
// over runs, not episodes: a run's episodes share its weights, so treating
// them as independent would understate the error.
nlohmann::json summarise_study(const nlohmann::json& table, const std::string& reference);

}  // namespace interlace::rl
