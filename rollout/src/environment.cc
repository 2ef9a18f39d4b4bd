#include "interlace/rollout/environment.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "environments.h"

namespace interlace::rollout {

std::vector<uint64_t> Environment::eval_seeds(int64_t n) const {
  std::vector<uint64_t> s;
  for (int64_t i = 0; i < n; ++i) s.push_back((uint64_t{1} << 62) + static_cast<uint64_t>(i));
  return s;
}

std::vector<std::string> environment_names() { return {"calculator", "kv-retrieval", "guess-number"}; }

absl::StatusOr<std::unique_ptr<Environment>> make_environment(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  EnvOptions options;
  if (colon != std::string::npos) {
    for (absl::string_view part : absl::StrSplit(spec.substr(colon + 1), ',', absl::SkipEmpty())) {
      std::vector<std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
      if (kv.size() != 2)
        return absl::InvalidArgumentError(absl::StrCat("environment '", spec, "': '", std::string(part),
                                                       "' is not key=value"));
      options[kv[0]] = kv[1];
    }
  }
  if (name == "calculator") return make_calculator(options);
  if (name == "kv-retrieval") return make_kv_retrieval(options);
  if (name == "guess-number") return make_guess_number(options);
  return absl::InvalidArgumentError(absl::StrCat("unknown environment '", name, "' (available: ",
                                                 absl::StrJoin(environment_names(), ", "), ")"));
}

}  // namespace interlace::rollout
