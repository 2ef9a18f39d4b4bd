#include "interlace/rollout/speculative.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "interlace/core/status.h"

namespace interlace::rollout {

absl::StatusOr<SpeculativeConfig> parse_speculate(const std::string& spec) {
  SpeculativeConfig c;
  if (spec.empty() || spec == "off" || spec == "none") return c;
  const size_t colon = spec.find(':');
  const std::string method = spec.substr(0, colon), rest = colon == std::string::npos ? "" : spec.substr(colon + 1);
  const auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "speculate '", spec, "': ", why, " (use off, ngram[:k=N,max=N,min=N] or model:PATH[,k=N])"));
  };
  std::vector<std::string> parts = rest.empty() ? std::vector<std::string>{} : absl::StrSplit(rest, ',');
  if (method == "ngram") {
    c.method = SpeculativeConfig::Method::kNgram;
  } else if (method == "model") {
    c.method = SpeculativeConfig::Method::kModel;
    if (parts.empty() || parts[0].empty() || parts[0].find('=') != std::string::npos)
      return bad("model: needs the draft model's directory first");
    c.draft_path = parts[0];
    parts.erase(parts.begin());
  } else {
    return bad("unknown method '" + method + "'");
  }
  for (const auto& p : parts) {
    const size_t eq = p.find('=');
    int64_t v = 0;
    if (eq == std::string::npos || !absl::SimpleAtoi(p.substr(eq + 1), &v)) return bad("'" + p + "' is not key=integer");
    const std::string key = p.substr(0, eq);
    if (key == "k") {
      if (v < 1 || v > 16) return bad("k must be 1..16");
      c.k = v;
    } else if (key == "max" && c.method == SpeculativeConfig::Method::kNgram) {
      c.ngram_max = v;
    } else if (key == "min" && c.method == SpeculativeConfig::Method::kNgram) {
      c.ngram_min = v;
    } else {
      return bad("unknown option '" + key + "'");
    }
  }
  if (c.ngram_min < 1 || c.ngram_max < c.ngram_min) return bad("ngram sizes need 1 <= min <= max");
  return c;
}

std::string describe(const SpeculativeConfig& c) {
  switch (c.method) {
    case SpeculativeConfig::Method::kNone: return "off";
    case SpeculativeConfig::Method::kNgram:
      return absl::StrCat("ngram:k=", c.k, ",max=", c.ngram_max, ",min=", c.ngram_min);
    case SpeculativeConfig::Method::kModel: return absl::StrCat("model:", c.draft_path, ",k=", c.k);
    case SpeculativeConfig::Method::kCallback: return absl::StrCat("callback:k=", c.k);
  }
  return "?";
}

absl::Status load_draft_model(SpeculativeConfig& c, const model::Model& target, const model::PrecisionProfile& precision) {
  if (c.method != SpeculativeConfig::Method::kModel) return absl::OkStatus();
  auto draft = model::Model::load(c.draft_path, precision);
  if (!draft.ok())
    return absl::InvalidArgumentError(absl::StrCat("speculate: the draft model: ", draft.status().message()));
  if ((*draft)->vocab_size() != target.vocab_size())
    return absl::InvalidArgumentError(absl::StrCat("speculate: the draft model ", c.draft_path, " has ",
                                                   (*draft)->vocab_size(), " tokens, the model ", target.vocab_size(),
                                                   ": a draft model must share the tokenizer"));
  c.draft_model = std::shared_ptr<model::Model>(std::move(*draft));
  return absl::OkStatus();
}

std::vector<int32_t> ngram_drafts(std::span<const int32_t> history, int64_t k, int64_t ngram_max, int64_t ngram_min) {
  const int64_t n = static_cast<int64_t>(history.size());
  for (int64_t len = std::min(ngram_max, n - 1); len >= ngram_min; --len) {
    const auto suffix = history.last(len);
    // The most recent earlier occurrence: in agent episodes the latest copy of
    // a value is the one being repeated.
    for (int64_t at = n - len - 1; at >= 0; --at) {
      if (!std::equal(suffix.begin(), suffix.end(), history.begin() + at)) continue;
      const int64_t from = at + len, count = std::min(k, n - from);
      return std::vector<int32_t>(history.begin() + from, history.begin() + from + count);
    }
  }
  return {};
}

namespace {
int32_t argmax(const float* logits, int64_t n) {
  return static_cast<int32_t>(std::max_element(logits, logits + n) - logits);
}
}  // namespace

std::vector<int32_t> model_drafts(model::Model& draft, model::SequenceState& state, std::span<const int32_t> history,
                                  int64_t k, int64_t vocab_limit) {
  const int64_t n = static_cast<int64_t>(history.size()), V = draft.vocab_size();
  const int64_t limit = vocab_limit > 0 ? std::min(vocab_limit, V) : V;
  INTERLACE_CHECK(state.length < n, "model_drafts: the draft state is ahead of the history");
  std::vector<float> logits;
  draft.prefill(state, history.subspan(state.length), logits);
  const model::SequenceMark at_end = draft.mark(state);
  std::vector<int32_t> out = {argmax(logits.data(), limit)};
  model::SequenceState* s = &state;
  while (static_cast<int64_t>(out.size()) < k) {
    draft.decode({&s, 1}, std::span<const int32_t>(&out.back(), 1), logits);
    out.push_back(argmax(logits.data(), limit));
  }
  draft.restore(state, at_end);
  return out;
}

}  // namespace interlace::rollout
