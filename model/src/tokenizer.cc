#include "interlace/model/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "interlace/model/bpe_tokenizer.h"
#include "nlohmann/json.hpp"

namespace interlace::model {

const std::vector<std::string>& default_special_tokens() {
  static const std::vector<std::string> specials = {
      "<|endoftext|>", "<|im_start|>", "<|im_end|>",     "<think>",          "</think>",
      "<tool_call>",   "</tool_call>", "<tool_response>", "</tool_response>",
  };
  return specials;
}

ByteTokenizer::ByteTokenizer(std::vector<std::string> specials) : specials_(std::move(specials)) {}

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (unsigned char ch : text) ids.push_back(ch);
  return ids;
}

std::vector<int32_t> ByteTokenizer::encode_with_specials(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t best = 0;  // the longest special name starting here
    int32_t best_id = -1;
    for (size_t s = 0; s < specials_.size(); ++s)
      if (specials_[s].size() > best && text.substr(i).starts_with(specials_[s])) {
        best = specials_[s].size();
        best_id = static_cast<int32_t>(256 + s);
      }
    if (best_id >= 0) {
      ids.push_back(best_id);
      i += best;
    } else {
      ids.push_back(static_cast<unsigned char>(text[i++]));
    }
  }
  return ids;
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id >= 0 && id < 256) {
      out.push_back(static_cast<char>(id));
    } else if (id >= 256 && id < vocab_size()) {
      out += specials_[id - 256];
    } else {
      out += absl::StrCat("<|unk_", id, "|>");
    }
  }
  return out;
}

std::optional<int32_t> ByteTokenizer::special_id(std::string_view name) const {
  for (size_t i = 0; i < specials_.size(); ++i)
    if (specials_[i] == name) return static_cast<int32_t>(256 + i);
  return std::nullopt;
}

absl::Status write_byte_tokenizer(const std::string& dir, const ByteTokenizer& tokenizer) {
  nlohmann::json j = {{"type", "byte"}, {"special_tokens", tokenizer.specials()}};
  return core::write_file((std::filesystem::path(dir) / kTokenizerFile).string(), j.dump(2) + "\n");
}

absl::StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path file = fs::path(dir) / kTokenizerFile;
  if (!fs::exists(file)) {
    if (fs::exists(fs::path(dir) / "tokenizer.json")) {  // a Hugging Face model's own tokenizer
      auto bpe = BpeTokenizer::load((fs::path(dir) / "tokenizer.json").string());
      if (!bpe.ok()) return bpe.status();
      return std::unique_ptr<Tokenizer>(std::move(*bpe));
    }
    return absl::NotFoundError(absl::StrCat(dir, ": no tokenizer file (", kTokenizerFile,
                                            "); text commands need one, token-id commands do not"));
  }
  INTERLACE_ASSIGN_OR_RETURN(std::string text, core::read_file(file.string()));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("type", "") != "byte" ||
      !j.contains("special_tokens") || !j["special_tokens"].is_array())
    return absl::InvalidArgumentError(absl::StrCat(
        file.string(), ": expected {\"type\": \"byte\", \"special_tokens\": [...]}"));
  std::vector<std::string> specials;
  for (auto& s : j["special_tokens"]) {
    if (!s.is_string()) return absl::InvalidArgumentError(file.string() + ": special_tokens must be strings");
    specials.push_back(s.get<std::string>());
  }
  return std::unique_ptr<Tokenizer>(new ByteTokenizer(std::move(specials)));
}

}  // namespace interlace::model
