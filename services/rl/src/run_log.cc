#include "interlace/rl/run_log.h"

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/rl/run_layout.h"

namespace interlace::rl {

using nlohmann::json;

namespace {
constexpr const char* kFiles[] = {"trained.jsonl", "dropped.jsonl", "metrics.jsonl"};
}

absl::StatusOr<RunLog> RunLog::open(const std::string& run_dir, int64_t checkpoint_step,
                                    std::set<SampleKey>* consumed) {
  auto take_ids = [&](const std::vector<json>& rows) {
    for (const json& row : rows)
      for (const auto& id : row.value("ids", json::array()))
        consumed->insert({id[0].get<int64_t>(), id[1].get<int64_t>()});
  };
  const int64_t s = checkpoint_step;
  auto trained = keep_jsonl_rows(run_path(run_dir, "trained.jsonl"),
                                 [&](const json& j) { return j.value("step", s + 1) <= s; });
  if (!trained.ok()) return trained.status();
  take_ids(*trained);
  // A drop logged after step s happened after checkpoint s was written.
  auto dropped = keep_jsonl_rows(run_path(run_dir, "dropped.jsonl"),
                                 [&](const json& j) { return j.value("after_step", s) < s; });
  if (!dropped.ok()) return dropped.status();
  take_ids(*dropped);
  auto metrics = keep_jsonl_rows(run_path(run_dir, "metrics.jsonl"),
                                 [&](const json& j) { return j.value("step", s + 1) <= s; });
  if (!metrics.ok()) return metrics.status();

  RunLog log;
  log.run_dir_ = run_dir;
  log.trained_.open(run_path(run_dir, "trained.jsonl"), std::ios::app);
  log.dropped_.open(run_path(run_dir, "dropped.jsonl"), std::ios::app);
  log.metrics_.open(run_path(run_dir, "metrics.jsonl"), std::ios::app);
  for (const std::ofstream* f : {&log.trained_, &log.dropped_, &log.metrics_})
    if (!*f) return absl::UnavailableError(absl::StrCat(run_dir, ": cannot open the run's logs for appending"));
  return log;
}

void RunLog::trained(int64_t step, const json& ids) {
  trained_ << json{{"step", step}, {"ids", ids}}.dump() << "\n";
  trained_.flush();
}

void RunLog::dropped(int64_t after_step, const json& ids, const json& extra) {
  json row = {{"after_step", after_step}, {"ids", ids}};
  row.update(extra);
  dropped_ << row.dump() << "\n";
  dropped_.flush();
}

void RunLog::metrics(const json& row) {
  metrics_ << row.dump() << "\n";
  metrics_.flush();
}

absl::Status RunLog::sync() {
  for (std::ofstream* f : {&trained_, &dropped_, &metrics_}) {
    f->flush();
    if (!*f) return absl::DataLossError(absl::StrCat(run_dir_, ": writing the run's logs failed (disk full?)"));
  }
  for (const char* name : kFiles) {
    if (absl::Status st = core::sync_file(run_path(run_dir_, name)); !st.ok()) return st;
  }
  return absl::OkStatus();
}

json RunLog::ids_json(const std::vector<SampleKey>& keys) {
  json ids = json::array();
  for (const auto& [g, s] : keys) ids.push_back({g, s});
  return ids;
}

}  // namespace interlace::rl
