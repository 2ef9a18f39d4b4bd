// `interlace bench tokenizer`: a tokenizer.json's encode and decode speed in
// MB/s and tokens/s, one thread and all threads, and, when given the npm
// reference (tests/tokenizer), transformers.js's encoder on the same text in
// the same run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "interlace/bench/suites.h"
#include "interlace/model/bpe_tokenizer.h"
#include "interlace/rl/supervisor.h"
#include "nlohmann/json.hpp"

namespace interlace::bench {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// `fn(i)` for every text, on `threads` threads taking texts in turn; seconds.
double timed(size_t n, int threads, const std::function<void(size_t)>& fn) {
  const auto t0 = Clock::now();
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next++) < n;) fn(i);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return seconds_since(t0);
}

}  // namespace

absl::Status run_bench_tokenizer(const Common& c, const TokenizerBenchArgs& a) {
  std::vector<std::string> texts;
  size_t bytes = 0;
  {
    std::ifstream in(a.corpus);
    if (!in) return absl::NotFoundError(absl::StrCat(a.corpus, ": cannot read the corpus"));
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      const json j = json::parse(line, nullptr, false);
      texts.push_back(j.is_object() && j.contains("text") && j["text"].is_string() ? j["text"].get<std::string>() : line);
      bytes += texts.back().size();
    }
  }
  if (texts.empty()) return absl::InvalidArgumentError(absl::StrCat(a.corpus, ": no texts"));
  const int threads = std::max(1u, std::thread::hardware_concurrency());
  auto load = [&] { return model::BpeTokenizer::load(a.model + "/tokenizer.json"); };
  json results = {{"bytes", bytes}, {"texts", texts.size()}, {"threads", threads}};
  std::vector<std::vector<int32_t>> ids(texts.size());
  size_t tokens = 0;
  // Cold: a fresh tokenizer (empty word cache), as a reference run starts.
  for (int t : {1, threads}) {
    auto tok = load();
    if (!tok.ok()) return tok.status();
    const double s = timed(texts.size(), t, [&](size_t i) { ids[i] = (*tok)->encode_with_specials(texts[i]); });
    tokens = 0;
    for (const auto& v : ids) tokens += v.size();
    results[absl::StrCat("encode_cold_threads_", t)] = {{"mb_per_s", bytes / 1e6 / s}, {"tokens_per_s", tokens / s}};
    // Warm: the same text again (its words cached), median of 3.
    std::vector<double> warm;
    for (int r = 0; r < 3; ++r)
      warm.push_back(timed(texts.size(), t, [&](size_t i) { ids[i] = (*tok)->encode_with_specials(texts[i]); }));
    std::sort(warm.begin(), warm.end());
    results[absl::StrCat("encode_warm_threads_", t)] = {{"mb_per_s", bytes / 1e6 / warm[1]}, {"tokens_per_s", tokens / warm[1]}};
    std::vector<double> dec;
    for (int r = 0; r < 3; ++r)
      dec.push_back(timed(texts.size(), t, [&](size_t i) { (void)(*tok)->decode(ids[i]); }));
    std::sort(dec.begin(), dec.end());
    results[absl::StrCat("decode_threads_", t)] = {{"mb_per_s", bytes / 1e6 / dec[1]}, {"tokens_per_s", tokens / dec[1]}};
  }
  results["tokens"] = tokens;
  if (!a.js_reference.empty()) {
    // The reference prints "reference NAME: N tokens, X MB/s (one thread, transformers.js)".
    const std::string out = "/tmp/interlace-bench-tokenizer-" + std::to_string(::getpid());
    const std::string cmd = absl::StrCat("node '", a.js_reference, "/reference.mjs' ", a.js_name, " '", a.corpus, "' '", out,
                                         ".ids' > '", out, ".log' 2>&1");
    if (std::system(cmd.c_str()) != 0)
      return absl::InternalError(absl::StrCat("the JS reference failed: ", cmd, " (see ", out, ".log)"));
    std::ifstream log(out + ".log");
    std::string line, all;
    double mbs = 0;
    while (std::getline(log, line)) {
      all += line + "\n";
      if (const size_t at = line.find(" tokens, "); at != std::string::npos) mbs = std::atof(line.c_str() + at + 9);
    }
    std::remove((out + ".ids").c_str());
    std::remove((out + ".log").c_str());
    if (mbs <= 0) return absl::InternalError("the JS reference printed no MB/s: " + all);
    results["js_reference_encode_threads_1"] = {{"mb_per_s", mbs}};
    results["encode_cold_threads_1_vs_js"] = results["encode_cold_threads_1"]["mb_per_s"].get<double>() / mbs;
  }
  emit(c, "tokenizer", {{"model", a.model}, {"corpus", a.corpus}}, results, [&] {
    std::printf("%s on %s: %.1f MB, %zu texts, %zu tokens\n", a.model.c_str(), a.corpus.c_str(), bytes / 1e6, texts.size(),
                tokens);
    for (const char* what : {"encode_cold", "encode_warm", "decode"})
      for (int t : {1, threads}) {
        const json& r = results[absl::StrCat(what, "_threads_", t)];
        std::printf("  %-12s %2d thread(s): %8.2f MB/s  %12.0f tokens/s\n", what, t, r["mb_per_s"].get<double>(),
                    r["tokens_per_s"].get<double>());
      }
    if (results.contains("js_reference_encode_threads_1"))
      std::printf("  transformers.js encode, 1 thread: %.2f MB/s (ours cold, 1 thread: %.1fx)\n",
                  results["js_reference_encode_threads_1"]["mb_per_s"].get<double>(),
                  results["encode_cold_threads_1_vs_js"].get<double>());
  });
  return absl::OkStatus();
}

}  // namespace interlace::bench
