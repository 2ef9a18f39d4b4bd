#include "cli_util.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace interlace::cli {

int fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

int fail(const absl::Status& status) { return fail(std::string(status.message())); }

namespace {

absl::StatusOr<std::vector<int32_t>> parse_tokens_line(const std::string& line, const std::string& where,
                                                       int64_t vocab) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  auto it = j.find("tokens");
  if (it == j.end() || !it->is_array())
    return absl::InvalidArgumentError(absl::StrCat(where, ": needs a \"tokens\" array of token ids"));
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& t = (*it)[i];
    if (!t.is_number_integer())
      return absl::InvalidArgumentError(absl::StrCat(where, ": tokens[", i, "] is not an integer"));
    const int64_t id = t.get<int64_t>();
    if (id < 0 || id >= vocab)
      return absl::InvalidArgumentError(absl::StrCat(where, ": tokens[", i, "] = ", id,
                                                     " is outside the vocabulary [0, ", vocab, ")"));
    tokens.push_back(static_cast<int32_t>(id));
  }
  return tokens;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<int32_t>>> read_token_file(const std::string& path, int64_t vocab) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<std::vector<int32_t>> rows;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto tokens = parse_tokens_line(line, absl::StrCat(path, ":", line_no), vocab);
    if (!tokens.ok()) return tokens.status();
    rows.push_back(std::move(*tokens));
  }
  if (rows.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no token lines"));
  return rows;
}

}  // namespace interlace::cli
