// The learner's run log: three JSONL files in the run directory.
//   trained.jsonl  {"step": s, "ids": [[group, sample], ...]}   what step s trained on
//   dropped.jsonl  {"after_step": s, "ids": [...], ...}          stale or quarantined, never trained
//   metrics.jsonl  one row of figures per step
// A restarted learner redoes the steps after its checkpoint, so open() cuts
// the files back to it and reports which trajectories they say were consumed
// (trained or dropped): those are not trained again.
#pragma once

#include <cstdint>
#include <fstream>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "interlace/rl/rl_batch.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

class RunLog {
 public:
  // `checkpoint_step`: the step of the checkpoint the learner resumed from (0: none).
  static absl::StatusOr<RunLog> open(const std::string& run_dir, int64_t checkpoint_step,
                                     std::set<SampleKey>* consumed);

  void trained(int64_t step, const nlohmann::json& ids);
  // `extra` fields (a reason, a spool record index) go into the same row.
  void dropped(int64_t after_step, const nlohmann::json& ids, const nlohmann::json& extra = nlohmann::json::object());
  void metrics(const nlohmann::json& row);
  // Flushes and fsyncs all three: a checkpoint is written only after the log
  // it trusts is on disk.
  absl::Status sync();

  static nlohmann::json ids_json(const std::vector<SampleKey>& keys);

 private:
  std::string run_dir_;
  std::ofstream trained_, dropped_, metrics_;
};

}  // namespace interlace::rl
