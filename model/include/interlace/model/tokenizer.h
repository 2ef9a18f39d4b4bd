// Tokenizers. The interface is what the rest of Interlace sees; the byte-level
// implementation serves our own small models (256 byte tokens, then named
// special tokens). A BPE tokenizer reading tokenizer.json will implement the
// same interface later.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace interlace::model {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Plain text to ids; special-token strings in the text are NOT treated specially.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Text whose special-token strings are special tokens: what a rendered chat
  // template is (transformers' apply_chat_template tokenizes it this way).
  virtual std::vector<int32_t> encode_with_specials(std::string_view text) const = 0;
  // Ids to text; special tokens render as their names.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int32_t> special_id(std::string_view name) const = 0;
};

// The special tokens our chat template uses, in id order after the 256 bytes.
const std::vector<std::string>& default_special_tokens();

class ByteTokenizer final : public Tokenizer {
 public:
  explicit ByteTokenizer(std::vector<std::string> specials = default_special_tokens());
  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_with_specials(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return 256 + static_cast<int64_t>(specials_.size()); }
  std::optional<int32_t> special_id(std::string_view name) const override;
  const std::vector<std::string>& specials() const { return specials_; }

 private:
  std::vector<std::string> specials_;
};

// The tokenizer file our own models carry.
inline constexpr char kTokenizerFile[] = "interlace_tokenizer.json";
absl::Status write_byte_tokenizer(const std::string& dir, const ByteTokenizer& tokenizer);
// Loads DIR's tokenizer (interlace_tokenizer.json); errors say what is missing.
absl::StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& dir);

}  // namespace interlace::model
