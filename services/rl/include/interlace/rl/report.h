// The run report (`RUN_DIR/report.html`, `interlace report`): one
// self-contained HTML file (inline SVG, no scripts, no network) that states
// the result first: the held-out change after RL with its uncertainty, in
// words and as a chart; then the time spent by phase, the figures with units,
// plots over RL steps (axis titles, ticks, a moving average over the raw
// series, log scales where a series spans decades, values on hover), the
// resolved job spec behind a fold and links to the run's files. Several runs
// overlay: the same series of each run in one chart, and a table of their
// headline figures. A run still going is reported from what is there.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

struct ReportRun {
  std::string name;                  // the job's name, else the directory's
  std::string dir;                   // the run directory (absolute)
  nlohmann::json summary;            // summary.json (or warmup-summary.json); null while running
  nlohmann::json config;             // config.json: the resolved job spec
  std::vector<nlohmann::json> rows;  // metrics.jsonl, one row per RL step
};

// Reads what a run directory holds; NotFound when it holds no run at all.
absl::StatusOr<ReportRun> load_report_run(const std::string& run_dir);

// `links_from`: the directory the report is written to; links to each run's
// files are relative to it ("" : the first run's directory).
std::string render_report(const std::vector<ReportRun>& runs, const std::string& links_from = "");

}  // namespace interlace::rl
