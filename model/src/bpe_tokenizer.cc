#include "interlace/model/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <climits>
#include <functional>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "nlohmann/json.hpp"

namespace interlace::model {
namespace {

using nlohmann::json;

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest
// map to code points from 256 up, so every byte has a visible character.
std::array<std::string, 256> byte_chars() {
  std::array<std::string, 256> out;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const int cp = printable ? b : next++;
    uint8_t buf[4];
    const auto n = utf8proc_encode_char(cp, buf);
    out[b].assign(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
  }
  return out;
}

constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
};

// One shard of the merged-word cache.
struct CacheShard {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};
constexpr size_t kCacheShards = 16, kCacheWordsPerShard = 1 << 15;

}  // namespace

struct BpeTokenizer::Impl {
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> pieces;  // id -> vocabulary string ("" for ids only added tokens have)
  // (left id, right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  bool ignore_merges = false, nfc = false;
  pcre2_code* split = nullptr;  // the pre-tokenizer's regex
  std::array<std::string, 256> byte_to_char = byte_chars();
  std::unordered_map<std::string, uint8_t> char_to_byte;
  std::array<int32_t, 256> byte_id{};  // each byte's single-character token
  std::vector<AddedToken> added;       // longest first, for matching
  std::array<std::vector<uint32_t>, 256> added_by_first_byte;  // indices into `added`, longest first
  std::unordered_map<int32_t, size_t> added_by_id;
  mutable std::array<CacheShard, kCacheShards> cache;

  ~Impl() {
    if (split) pcre2_code_free(split);
  }
};

BpeTokenizer::~BpeTokenizer() = default;

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::load(const std::string& path) {
  INTERLACE_ASSIGN_OR_RETURN(std::string text, core::read_file(path));
  const json j = json::parse(text, nullptr, false);
  auto refuse = [&](const std::string& what) {
    return absl::UnimplementedError(absl::StrCat(path, ": ", what, " is not supported (byte-level BPE only)"));
  };
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a tokenizer.json (no \"model\" object)"));
  auto t = std::unique_ptr<BpeTokenizer>(new BpeTokenizer());
  t->impl_ = std::make_unique<Impl>();
  Impl& m = *t->impl_;
  const json& model = j["model"];
  if (model.value("type", "") != "BPE") return refuse(absl::StrCat("model.type '", model.value("type", "?"), "'"));
  if (model.value("byte_fallback", false)) return refuse("model.byte_fallback");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty())
      return refuse(absl::StrCat("model.", k));
  if (model.contains("dropout") && !model["dropout"].is_null()) return refuse("model.dropout");
  m.ignore_merges = model.value("ignore_merges", false);
  if (!model.contains("vocab") || !model["vocab"].is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": model.vocab is not an object"));
  int64_t max_id = -1;
  for (const auto& [piece, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= INT32_MAX)
      return absl::InvalidArgumentError(absl::StrCat(path, ": model.vocab['", piece, "'] is not a token id"));
    m.vocab[piece] = id.get<int32_t>();
    max_id = std::max<int64_t>(max_id, id.get<int64_t>());
  }
  // Normalizer and pre-tokenizer.
  const json& norm = j.contains("normalizer") ? j["normalizer"] : json();
  if (!norm.is_null()) {
    if (norm.value("type", "") != "NFC") return refuse(absl::StrCat("normalizer '", norm.value("type", "?"), "'"));
    m.nfc = true;
  }
  std::string pattern;
  const json& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json();
  std::vector<json> steps;
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers"))
    for (const json& s : pre["pretokenizers"]) steps.push_back(s);
  else if (pre.is_object())
    steps.push_back(pre);
  if (steps.size() == 2 && steps[0].value("type", "") == "Split" && steps[1].value("type", "") == "ByteLevel") {
    const json& split = steps[0];
    if (!split.contains("pattern") || !split["pattern"].contains("Regex")) return refuse("a Split pre-tokenizer without a Regex");
    if (split.value("behavior", "") != "Isolated" || split.value("invert", false))
      return refuse(absl::StrCat("Split behavior '", split.value("behavior", "?"), "'"));
    if (steps[1].value("add_prefix_space", false) || steps[1].value("use_regex", false))
      return refuse("a ByteLevel pre-tokenizer after Split with add_prefix_space or use_regex");
    pattern = split["pattern"]["Regex"].get<std::string>();
  } else if (steps.size() == 1 && steps[0].value("type", "") == "ByteLevel") {
    if (steps[0].value("add_prefix_space", false)) return refuse("ByteLevel add_prefix_space");
    if (!steps[0].value("use_regex", true)) return refuse("ByteLevel without its regex as the only pre-tokenizer");
    pattern = kGpt2Pattern;
  } else {
    return refuse(absl::StrCat("pre_tokenizer ", pre.dump().substr(0, 120)));
  }
  int error = 0;
  PCRE2_SIZE offset = 0;
  m.split = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  if (!m.split) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(error, msg, sizeof msg);
    return absl::InvalidArgumentError(absl::StrCat(path, ": pre-tokenizer regex at offset ", offset, ": ",
                                                   reinterpret_cast<const char*>(msg)));
  }
  pcre2_jit_compile(m.split, PCRE2_JIT_COMPLETE);  // faster when available; matching works without it
  const json& dec = j.contains("decoder") ? j["decoder"] : json();
  if (!dec.is_object() || dec.value("type", "") != "ByteLevel")
    return refuse(absl::StrCat("decoder ", dec.dump().substr(0, 80)));
  // Every byte must be a token of its own (byte-level BPE's base alphabet).
  for (int b = 0; b < 256; ++b) {
    m.char_to_byte[m.byte_to_char[b]] = static_cast<uint8_t>(b);
    auto it = m.vocab.find(m.byte_to_char[b]);
    if (it == m.vocab.end())
      return absl::InvalidArgumentError(absl::StrCat(path, ": byte ", b, " has no token: not a byte-level BPE vocabulary"));
    m.byte_id[b] = it->second;
  }
  // Merges: "a b" strings or [a, b] pairs, by rank.
  if (!model.contains("merges") || !model["merges"].is_array())
    return absl::InvalidArgumentError(absl::StrCat(path, ": model.merges is not an array"));
  int32_t rank = 0;
  for (const json& merge : model["merges"]) {
    std::string a, b;
    if (merge.is_string()) {
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos) return absl::InvalidArgumentError(absl::StrCat(path, ": merge '", s, "' has no space"));
      a = s.substr(0, space), b = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      a = merge[0].get<std::string>(), b = merge[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(path, ": merge ", rank, " is neither \"a b\" nor [a, b]"));
    }
    auto ia = m.vocab.find(a), ib = m.vocab.find(b), iab = m.vocab.find(a + b);
    if (ia == m.vocab.end() || ib == m.vocab.end() || iab == m.vocab.end())
      return absl::InvalidArgumentError(absl::StrCat(path, ": merge ", rank, " ('", a, "', '", b, "') names a piece not in the vocabulary"));
    const uint64_t key = (uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second);
    m.merges.emplace(key, std::make_pair(rank++, iab->second));
  }
  // Added tokens.
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const json& a : j["added_tokens"]) {
      AddedToken tok{a.value("content", ""), a.value("id", -1), a.value("special", false)};
      if (tok.content.empty() || tok.id < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": an added token without content or id"));
      for (const char* k : {"lstrip", "rstrip", "single_word"})
        if (a.value(k, false)) return refuse(absl::StrCat("added token '", tok.content, "' with ", k));
      if (a.value("normalized", false) && m.nfc) return refuse(absl::StrCat("added token '", tok.content, "' matched after normalization"));
      max_id = std::max<int64_t>(max_id, tok.id);
      m.added.push_back(std::move(tok));
    }
  std::stable_sort(m.added.begin(), m.added.end(),
                   [](const AddedToken& x, const AddedToken& y) { return x.content.size() > y.content.size(); });
  for (size_t i = 0; i < m.added.size(); ++i) {
    m.added_by_id[m.added[i].id] = i;
    m.added_by_first_byte[static_cast<unsigned char>(m.added[i].content[0])].push_back(static_cast<uint32_t>(i));
  }
  t->vocab_size_ = max_id + 1;
  m.pieces.resize(static_cast<size_t>(t->vocab_size_));
  for (const auto& [piece, id] : m.vocab) m.pieces[id] = piece;
  return t;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const { return encode_impl(text, false); }
std::vector<int32_t> BpeTokenizer::encode_with_specials(std::string_view text) const { return encode_impl(text, true); }

std::vector<int32_t> BpeTokenizer::encode_impl(std::string_view text, bool specials) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (uint32_t k : m.added_by_first_byte[static_cast<unsigned char>(text[i])]) {  // longest first
      const AddedToken& a = m.added[k];
      if ((specials || !a.special) && text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > start) encode_segment(text.substr(start, i - start), out);
    out.push_back(hit->id);
    i += hit->content.size();
    start = i;
  }
  if (start < text.size()) encode_segment(text.substr(start), out);
  return out;
}

void BpeTokenizer::encode_segment(std::string_view raw, std::vector<int32_t>& out) const {
  const Impl& m = *impl_;
  std::string normalized;
  std::string_view text = raw;
  if (m.nfc) {
    utf8proc_uint8_t* dst = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(raw.data()), static_cast<utf8proc_ssize_t>(raw.size()),
                                &dst, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (n >= 0) {  // invalid UTF-8 stays as it is
      normalized.assign(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
      text = normalized;
    }
    std::free(dst);
  }
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(m.split, nullptr);
  size_t at = 0, gap = 0;
  while (at <= text.size()) {
    const int rc = pcre2_match(m.split, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at, 0, md, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[0] > gap) encode_word(text.substr(gap, ov[0] - gap), out);  // text no alternative matched
    if (ov[1] > ov[0]) encode_word(text.substr(ov[0], ov[1] - ov[0]), out);
    gap = ov[1];
    at = ov[1] > ov[0] ? ov[1] : ov[1] + 1;  // an empty match: step on
  }
  if (gap < text.size()) encode_word(text.substr(gap), out);
  pcre2_match_data_free(md);
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  const Impl& m = *impl_;
  CacheShard& shard = m.cache[std::hash<std::string_view>()(word) % kCacheShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.words.find(std::string(word));
    if (it != shard.words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  bool whole = false;
  if (m.ignore_merges) {
    std::string chars;
    for (unsigned char c : word) chars += m.byte_to_char[c];
    if (auto it = m.vocab.find(chars); it != m.vocab.end()) ids.push_back(it->second), whole = true;
  }
  if (!whole) {
    for (unsigned char c : word) ids.push_back(m.byte_id[c]);
    // GPT-2's loop: merge every occurrence of the lowest-ranked pair, left to right, until none is left.
    while (ids.size() > 1) {
      int32_t best = INT32_MAX, merged = -1;
      for (size_t k = 0; k + 1 < ids.size(); ++k) {
        auto it = m.merges.find((uint64_t(uint32_t(ids[k])) << 32) | uint32_t(ids[k + 1]));
        if (it != m.merges.end() && it->second.first < best) best = it->second.first, merged = it->second.second;
      }
      if (merged < 0) break;
      size_t w = 0;
      for (size_t k = 0; k < ids.size(); ++k) {
        if (k + 1 < ids.size()) {
          auto it = m.merges.find((uint64_t(uint32_t(ids[k])) << 32) | uint32_t(ids[k + 1]));
          if (it != m.merges.end() && it->second.first == best) {
            ids[w++] = merged;
            ++k;
            continue;
          }
        }
        ids[w++] = ids[k];
      }
      ids.resize(w);
    }
  }
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.words.size() >= kCacheWordsPerShard) shard.words.clear();  // bounded: start again
  shard.words.emplace(std::string(word), std::move(ids));
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  const Impl& m = *impl_;
  std::string out;
  for (int32_t id : ids) {
    if (auto a = m.added_by_id.find(id); a != m.added_by_id.end()) {
      out += m.added[a->second].content;
      continue;
    }
    if (id < 0 || static_cast<size_t>(id) >= m.pieces.size()) continue;
    const std::string& piece = m.pieces[id];
    for (size_t k = 0; k < piece.size();) {  // one byte-level character at a time
      const unsigned char c = piece[k];
      const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      auto b = m.char_to_byte.find(piece.substr(k, len));
      if (b != m.char_to_byte.end()) out += static_cast<char>(b->second);
      k += len;
    }
  }
  return out;
}

std::optional<int32_t> BpeTokenizer::special_id(std::string_view name) const {
  for (const AddedToken& a : impl_->added)
    if (a.content == name) return a.id;
  if (auto it = impl_->vocab.find(std::string(name)); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::string BpeTokenizer::piece(int32_t id) const {
  if (auto a = impl_->added_by_id.find(id); a != impl_->added_by_id.end()) return impl_->added[a->second].content;
  return id >= 0 && static_cast<size_t>(id) < impl_->pieces.size() ? impl_->pieces[id] : "";
}

std::string IncrementalDecoder::push(int32_t id) {
  const int32_t one[1] = {id};
  pending_ += tokenizer_->decode(one);
  // Hold back a trailing UTF-8 sequence that is not complete yet.
  size_t keep = 0;
  for (size_t back = 1; back <= std::min<size_t>(3, pending_.size()); ++back) {
    const unsigned char c = pending_[pending_.size() - back];
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (len > back) keep = back;
    break;
  }
  std::string ready = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return ready;
}

std::string IncrementalDecoder::flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

}  // namespace interlace::model
