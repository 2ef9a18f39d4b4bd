// Helpers shared by the CLI commands: reporting failures, reading token files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace interlace::cli {

// Prints "error: MESSAGE" on stderr and returns exit code 1.
int fail(const std::string& message);
int fail(const absl::Status& status);

// This program's path (/proc/self/exe), for the services it starts; "interlace" if unknown.
std::string self_exe();

// Reads a JSONL file of {"tokens": [...]} lines (blank lines skipped), every id in
// [0, vocab). The whole file is validated before anything is returned, so bad
// input costs no compute; errors name FILE:LINE and the offending entry.
absl::StatusOr<std::vector<std::vector<int32_t>>> read_token_file(const std::string& path, int64_t vocab);

}  // namespace interlace::cli
