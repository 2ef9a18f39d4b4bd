#include "env_util.h"

#include <cctype>

#include "absl/strings/str_cat.h"

namespace interlace::rollout::env_util {

std::optional<std::string> field(const std::string& content, const std::string& key) {
  const size_t at = content.rfind(key + ":");
  if (at == std::string::npos) return std::nullopt;
  size_t b = at + key.size() + 1, e = content.find('\n', b);
  if (e == std::string::npos) e = content.size();
  while (b < e && std::isspace(static_cast<unsigned char>(content[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(content[e - 1]))) --e;
  return content.substr(b, e - b);
}

std::optional<int64_t> parse_int(const std::string& s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  return s[0] == '-' ? -v : v;
}

absl::Status parse_options(const std::string& env, const std::map<std::string, std::string>& given,
                           const std::map<std::string, IntOption>& known) {
  for (const auto& [key, text] : given) {
    auto it = known.find(key);
    if (it == known.end()) {
      std::string names;
      for (const auto& [k, o] : known) absl::StrAppend(&names, names.empty() ? "" : ", ", k);
      return absl::InvalidArgumentError(absl::StrCat(env, ": unknown option '", key, "' (options: ",
                                                     names.empty() ? "none" : names, ")"));
    }
    auto v = parse_int(text);
    if (!v || *v < it->second.lo || *v > it->second.hi)
      return absl::InvalidArgumentError(absl::StrCat(env, ": option ", key, "=", text, " must be an integer in [",
                                                     it->second.lo, ", ", it->second.hi, "]"));
    *it->second.value = *v;
  }
  return absl::OkStatus();
}

}  // namespace interlace::rollout::env_util
