// The tokenizer.json reader. Unit tests on a small hand-written byte-level
// BPE (merge order, ignore_merges, added and special tokens, refusals with
// the component named, incremental decoding of split UTF-8); and the
// BpeReference tests, run by tests/tokenizer/check_tokenizers.sh against the
// real Qwen3 and Llama 3 tokenizer.json and transformers.js's encoder on a
// fresh >= 5 MB corpus (skipped when run without it).
#include "interlace/model/bpe_tokenizer.h"

#include <gtest/gtest.h>
#include <utf8proc.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"
#include "support/temp_dir.h"

namespace interlace::model {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Byte-level characters of the bytes we use ('Ġ' is the space).
json small_tokenizer(json model_overrides = json::object(), json added = json::array()) {
  json vocab = json::object();
  int id = 0;
  // All 256 byte tokens, as GPT-2's bytes_to_unicode spells them.
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    uint8_t buf[4];
    const auto n = utf8proc_encode_char(printable ? b : next++, buf);
    vocab[std::string(reinterpret_cast<const char*>(buf), n)] = id++;
  }
  for (const char* piece : {"ab", "abc", "bc", "Ġa", "Ġab", "aa", "aaa", "xyz"}) vocab[piece] = id++;
  json model = {{"type", "BPE"},
                {"vocab", vocab},
                {"merges", json::array({"a b", "ab c", "b c", "Ġ a", "Ġa b", "a a", "aa a"})},
                {"ignore_merges", false}};
  for (auto& [k, v] : model_overrides.items()) model[k] = v;
  return {{"model", model},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             json::array({{{"type", "Split"}, {"pattern", {{"Regex", R"( ?\p{L}+|\p{N}|\s+|[^\s\p{L}\p{N}]+)"}}},
                           {"behavior", "Isolated"}, {"invert", false}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens", added}};
}

std::unique_ptr<BpeTokenizer> load(const json& j, std::string* error = nullptr) {
  static test::TempDir dir;
  const std::string path = dir.path() + "/tokenizer.json";
  std::ofstream(path) << j.dump();
  auto t = BpeTokenizer::load(path);
  if (!t.ok()) {
    if (error) *error = std::string(t.status().message());
    return nullptr;
  }
  return std::move(*t);
}

int32_t id_of(const BpeTokenizer& t, const std::string& piece) { return *t.special_id(piece); }

TEST(BpeTokenizer, MergesByRankAndDecodesBack) {
  auto t = load(small_tokenizer());
  ASSERT_TRUE(t);
  // "abc": a+b (rank 0) first, then ab+c (rank 1); "bc" alone would be rank 2.
  EXPECT_EQ(t->encode("abc"), (std::vector<int32_t>{id_of(*t, "abc")}));
  // " ab": Ġ+a (rank 3) is the only merge applying after... a+b is rank 0, so "Ġ", "ab" first; then no Ġ+ab merge.
  EXPECT_EQ(t->encode(" ab"), (std::vector<int32_t>{id_of(*t, "Ġ"), id_of(*t, "ab")}));
  // "aaaa": a+a merges every occurrence left to right (aa, aa), then aa+a does not apply.
  EXPECT_EQ(t->encode("aaaa"), (std::vector<int32_t>{id_of(*t, "aa"), id_of(*t, "aa")}));
  EXPECT_EQ(t->encode("aaa"), (std::vector<int32_t>{id_of(*t, "aaa")}));
  // "xyz" is in the vocabulary but no merge makes it: bytes, unless ignore_merges.
  EXPECT_EQ(t->encode("xyz").size(), 3u);
  auto whole = load(small_tokenizer({{"ignore_merges", true}}));
  EXPECT_EQ(whole->encode("xyz"), (std::vector<int32_t>{id_of(*whole, "xyz")}));
  for (const std::string& text : std::vector<std::string>{"abc aaa xyz\n\t 12", "caf\xc3\xa9 \xf0\x9f\x98\x80", std::string("\0\x01\xff", 3)})
    EXPECT_EQ(t->decode(t->encode(text)), text);
  EXPECT_EQ(t->vocab_size(), 264);
}

TEST(BpeTokenizer, SpecialTokensOnlyWhenAskedAndOthersAlways) {
  auto t = load(small_tokenizer(json::object(),
                                json::array({{{"id", 264}, {"content", "<|s|>"}, {"special", true}},
                                             {{"id", 265}, {"content", "<t>"}, {"special", false}},
                                             {{"id", 266}, {"content", "<t>x"}, {"special", false}}})));
  ASSERT_TRUE(t);
  const std::string text = "a<|s|>b<t>c<t>x";
  const auto plain = t->encode(text), with = t->encode_with_specials(text);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 264), 0) << "a special token from plain text";
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 265), 1);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 266), 1) << "the longest added token wins";
  EXPECT_EQ(std::count(with.begin(), with.end(), 264), 1);
  EXPECT_EQ(t->decode(plain), text);
  EXPECT_EQ(t->decode(with), text);
  EXPECT_EQ(t->special_id("<|s|>"), 264);
  EXPECT_EQ(t->vocab_size(), 267);
}

TEST(BpeTokenizer, UnsupportedComponentsAreRefusedByName) {
  std::string error;
  EXPECT_FALSE(load(small_tokenizer({{"type", "WordPiece"}}), &error));
  EXPECT_NE(error.find("model.type 'WordPiece' is not supported"), std::string::npos) << error;
  EXPECT_FALSE(load(small_tokenizer({{"byte_fallback", true}}), &error));
  EXPECT_NE(error.find("model.byte_fallback"), std::string::npos) << error;
  json j = small_tokenizer();
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_FALSE(load(j, &error));
  EXPECT_NE(error.find("normalizer 'Lowercase'"), std::string::npos) << error;
  j = small_tokenizer();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_FALSE(load(j, &error));
  EXPECT_NE(error.find("pre_tokenizer"), std::string::npos) << error;
  j = small_tokenizer();
  j["model"]["merges"].push_back("q z");
  EXPECT_FALSE(load(j, &error));
  EXPECT_NE(error.find("names a piece not in the vocabulary"), std::string::npos) << error;
  j = small_tokenizer(json::object(), json::array({{{"id", 300}, {"content", "<x>"}, {"lstrip", true}}}));
  EXPECT_FALSE(load(j, &error));
  EXPECT_NE(error.find("'<x>' with lstrip"), std::string::npos) << error;
}

TEST(IncrementalDecoder, HoldsBackSplitCharactersAndEqualsWholeDecoding) {
  auto t = load(small_tokenizer());
  const std::string text = "h\xc3\xa9llo \xf0\x9f\x98\x80 \xe4\xb8\xad!";  // 2-, 4- and 3-byte characters
  const auto ids = t->encode(text);
  IncrementalDecoder d(*t);
  std::string joined;
  for (int32_t id : ids) {
    const std::string chunk = d.push(id);
    // A chunk never ends inside a character: it is whole UTF-8.
    EXPECT_EQ(utf8proc_decompose(reinterpret_cast<const uint8_t*>(chunk.data()), chunk.size(), nullptr, 0, UTF8PROC_STABLE) >= 0,
              true)
        << "a chunk is not whole UTF-8: " << chunk;
    joined += chunk;
  }
  joined += d.flush();
  EXPECT_EQ(joined, text);
}

// ---- against the reference (tests/tokenizer/check_tokenizers.sh) ----

std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()), &out,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::string r = n >= 0 ? std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(n)) : s;
  std::free(out);
  return r;
}

void check_against_reference(const std::string& name, bool normalizes) {
  const char* work = std::getenv("INTERLACE_TOKENIZER_WORK");
  if (!work) GTEST_SKIP() << "run by tests/tokenizer/check_tokenizers.sh (needs the npm reference)";
  auto t = BpeTokenizer::load(std::string(work) + "/" + name + "/tokenizer.json");
  ASSERT_TRUE(t.ok()) << t.status();
  std::ifstream corpus(std::string(work) + "/corpus.jsonl"), reference(std::string(work) + "/" + name + ".ids.jsonl");
  ASSERT_TRUE(corpus && reference);
  std::string line, ref_line;
  size_t docs = 0, bytes = 0, tokens = 0, mismatched = 0, round_trips_failed = 0, streams_failed = 0;
  while (std::getline(corpus, line)) {
    ASSERT_TRUE(std::getline(reference, ref_line)) << "the reference has fewer lines than the corpus";
    const std::string text = json::parse(line)["text"];
    const std::vector<int32_t> want = json::parse(ref_line)["ids"];
    const std::vector<int32_t> got = (*t)->encode_with_specials(text);
    if (got != want && ++mismatched <= 5) {
      size_t at = 0;
      while (at < got.size() && at < want.size() && got[at] == want[at]) ++at;
      const int32_t g = at < got.size() ? got[at] : -1, w = at < want.size() ? want[at] : -1;
      ADD_FAILURE() << name << " text " << docs << ": first difference at token " << at << ": ours " << g << " '"
                    << (*t)->piece(g) << "', reference " << w << " '" << (*t)->piece(w) << "'; text starts "
                    << json(text.substr(0, 160)).dump();
    }
    if ((*t)->decode(got) != (normalizes ? nfc(text) : text)) ++round_trips_failed;
    if (docs % 7 == 0) {  // streaming: chunks concatenate to the whole decoding
      IncrementalDecoder d(**t);
      std::string joined;
      for (int32_t id : got) joined += d.push(id);
      joined += d.flush();
      if (joined != (*t)->decode(got)) ++streams_failed;
    }
    ++docs, bytes += text.size(), tokens += want.size();
  }
  EXPECT_GE(bytes, 5'000'000u) << "the corpus is under 5 MB";
  EXPECT_EQ(mismatched, 0u) << "of " << docs << " texts";
  EXPECT_EQ(round_trips_failed, 0u) << "decode(encode(x)) != x";
  EXPECT_EQ(streams_failed, 0u);
  std::printf("%s: %zu texts, %.1f MB, %zu tokens: %zu differ from the reference\n", name.c_str(), docs, bytes / 1e6, tokens,
              mismatched);
}

TEST(BpeReference, Qwen3MatchesTransformersJs) { check_against_reference("qwen3", /*normalizes=*/true); }
TEST(BpeReference, Llama3MatchesTransformersJs) { check_against_reference("llama3", /*normalizes=*/false); }

}  // namespace
}  // namespace interlace::model
