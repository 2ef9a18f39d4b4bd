// Helpers shared by the environments (private to rollout/).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "interlace/model/chat_template.h"

namespace interlace::rollout::env_util {

inline model::Message msg(model::Role role, std::string content, std::string thinking = {}) {
  model::Message m;
  m.role = role;
  m.content = std::move(content);
  m.thinking = std::move(thinking);
  return m;
}

// The text after the last "KEY:" in `content`, trimmed, up to the end of its line.
std::optional<std::string> field(const std::string& content, const std::string& key);
std::optional<int64_t> parse_int(const std::string& s);

// Integer options of a spec ("pairs=2000,hops=3"), each in [lo, hi]; unknown keys are errors.
struct IntOption {
  int64_t* value;
  int64_t lo, hi;
};
absl::Status parse_options(const std::string& env, const std::map<std::string, std::string>& given,
                           const std::map<std::string, IntOption>& known);

}  // namespace interlace::rollout::env_util
