// Factories of the built-in environments (private to rollout/; use make_environment).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "interlace/rollout/environment.h"

namespace interlace::rollout {

using EnvOptions = std::map<std::string, std::string>;
absl::StatusOr<std::unique_ptr<Environment>> make_calculator(const EnvOptions& options);
absl::StatusOr<std::unique_ptr<Environment>> make_kv_retrieval(const EnvOptions& options);
absl::StatusOr<std::unique_ptr<Environment>> make_guess_number(const EnvOptions& options);

}  // namespace interlace::rollout
