// Small file helpers that report errors as absl::Status naming the path.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace interlace::core {

absl::StatusOr<std::string> read_file(const std::string& path);
// Writes atomically: to `path.tmp`, then rename.
absl::Status write_file(const std::string& path, const std::string& contents);

}  // namespace interlace::core
