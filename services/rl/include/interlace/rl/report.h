// The run's self-contained HTML report: the summary, and one inline SVG plot
// per series (reward, loss, mismatch, cache hit rate, staleness) over steps,
// from the rows of metrics.jsonl. No scripts, no external files.
#pragma once

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace interlace::rl {

std::string render_report(const std::string& title, const nlohmann::json& summary,
                          const std::vector<nlohmann::json>& rows);

}  // namespace interlace::rl
