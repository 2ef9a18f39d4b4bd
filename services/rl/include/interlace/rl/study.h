// `interlace study SPEC.yaml`: the same job run on several architecture
// variants (full attention, hybrids, sliding-window), seed by seed, through
// `interlace run`'s own code path (run_local_job: SFT warm-up, RL,
// held-out evaluation), then one table (table.json) and one report
// (report.html, the runs overlaid). Variants are matched on parameters (the
// same steps for all) or on training FLOPs (each variant's SFT steps scaled
// so that steps x FLOPs per token, model/flops.h, equals the reference's).
//
//   name: tiny-study
//   job: ../calculator/job.yaml   # the base job (relative to this file)
//   overrides: {sft: {steps: 20}} # merged into it, key by key
//   match: flops                  # or params
//   reference: full               # the variant whose steps the others match (default: the first)
//   context: 512                  # the sequence length FLOPs are counted at
//   seeds: [0, 1, 2]
//   tasks: ["kv-retrieval:pairs=24,hops=1", "kv-retrieval:pairs=24,hops=2"]   # default: the job's env
//   eval_envs: ["kv-retrieval:pairs=96,hops=2"]   # each final model, greedy, on longer contexts / more hops
//   eval_prompts: 32
//   variants:
//     - {name: full, model: ../models/tiny-full.json}
//     - {name: hybrid-3to1, model: ../models/tiny-hybrid-3to1.json}
//
// A run that has its summary already is not run again (a study resumes).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

struct StudyOptions {
  std::string spec;       // the study's YAML
  std::string run_dir;    // "": runs/study-<name>
  std::string interlace;  // the interlace executable
  bool quiet = false;
  bool plan_only = false;  // the rows as planned (variants, FLOPs, steps): nothing runs or is written
};

// The table ({"rows": [...]}, one row per variant and seed), also written to
// RUN/table.json next to RUN/report.html.
absl::StatusOr<nlohmann::json> run_study(const StudyOptions& options);

}  // namespace interlace::rl
