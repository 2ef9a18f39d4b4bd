// A study's report (`interlace study`, RUN/report.html): one self-contained
// HTML page (inline SVG) that says first what was compared, what the figures
// show and what they cannot show at this scale; then per variant the held-out
// reward with its standard error over seeds and its paired difference from
// the reference, reward against context length and hops (each option the
// evaluation environments vary), reward against training compute, memory per
// sequence against context length, state-precision drift, speed, and every
// run with a link to its own report.
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace interlace::rl {

// `table`: table.json (its rows, "study", "match", "context", "state_bytes");
// `summary`: summarise_study(table); `links_from`: the report's directory
// (run links are relative to it).
std::string render_study_report(const nlohmann::json& table, const nlohmann::json& summary, const std::string& links_from);

}  // namespace interlace::rl
