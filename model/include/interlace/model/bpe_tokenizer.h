// Hugging Face's tokenizer.json for byte-level BPE models (Qwen2/3, Llama 3,
// GPT-2 style), read and run the way the `tokenizers` library runs it:
// added tokens split out first (matched on the raw text), then per segment
// the normalizer (none, or NFC through utf8proc), the pre-tokenizer (a
// Split on the file's regex, PCRE2 with Unicode properties, "Isolated",
// then ByteLevel; or ByteLevel with the GPT-2 regex), BPE merges by rank
// (with ignore_merges: a word already in the vocabulary is one token), and
// the ByteLevel decoder. Anything else in the file (another model type,
// normalizer or pre-tokenizer, byte fallback, an added token with lstrip)
// is refused on load with the component named.
//
// Special added tokens (special: true) are never produced from plain text
// (encode); encode_with_specials matches them as the `tokenizers` library
// does by default. Non-special added tokens (Qwen3's <think>, <tool_call>)
// are matched in both. Merged words are cached (sharded, bounded); encode
// is safe to call from many threads at once.
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/model/tokenizer.h"

namespace interlace::model {

class BpeTokenizer final : public Tokenizer {
 public:
  // `path`: a tokenizer.json. Errors name the file and the component.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> load(const std::string& path);
  ~BpeTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_with_specials(std::string_view text) const override;
  // Bytes as the model produced them (a partial UTF-8 character stays partial).
  std::string decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> special_id(std::string_view name) const override;
  // The token's text as the vocabulary spells it (byte-level characters), "" if unknown.
  std::string piece(int32_t id) const;

 private:
  BpeTokenizer() = default;
  struct Impl;
  std::vector<int32_t> encode_impl(std::string_view text, bool specials) const;
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  std::unique_ptr<Impl> impl_;
  int64_t vocab_size_ = 0;
};

// Decodes a stream of ids piece by piece (for streaming output): bytes of a
// UTF-8 character split across tokens are held back until it is complete,
// so every returned chunk is whole characters, and the chunks concatenate to
// decode(all ids).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is held back (an incomplete character at the end)

 private:
  const Tokenizer* tokenizer_;
  std::string pending_;
};

}  // namespace interlace::model
