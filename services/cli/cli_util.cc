#include "cli_util.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "interlace/learner/sft.h"
#include "nlohmann/json.hpp"

namespace interlace::cli {

std::string self_exe() {
  std::error_code ec;
  const std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "interlace" : p.string();
}

int fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

int fail(const absl::Status& status) { return fail(std::string(status.message())); }

absl::StatusOr<std::vector<std::vector<int32_t>>> read_token_file(const std::string& path, int64_t vocab) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<std::vector<int32_t>> rows;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (absl::Status s = learner::check_line_size(line, absl::StrCat(path, ":", line_no)); !s.ok()) return s;
    auto tokens = learner::parse_token_ids(nlohmann::json::parse(line, nullptr, false),
                                           absl::StrCat(path, ":", line_no), vocab);
    if (!tokens.ok()) return tokens.status();
    rows.push_back(std::move(*tokens));
  }
  if (rows.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no token lines"));
  return rows;
}

}  // namespace interlace::cli
