#include "interlace/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace interlace::model {

void fill_top_logprobs(std::span<const float> logits, int64_t vocab_limit, int64_t k, TokenSample& sample) {
  const int64_t V = static_cast<int64_t>(logits.size());
  const int64_t n = vocab_limit > 0 ? std::min(vocab_limit, V) : V;
  k = std::min(k, n);
  sample.top.clear();
  if (k <= 0) return;
  // The k best in one pass, kept as a heap whose top is the worst of them (k <= 20: no vocabulary-sized buffer).
  const auto better = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(k));
  for (int32_t id = 0; id < static_cast<int32_t>(n); ++id) {
    if (static_cast<int64_t>(ids.size()) < k) {
      ids.push_back(id);
      std::push_heap(ids.begin(), ids.end(), better);
    } else if (better(id, ids.front())) {
      std::pop_heap(ids.begin(), ids.end(), better);
      ids.back() = id;
      std::push_heap(ids.begin(), ids.end(), better);
    }
  }
  std::sort_heap(ids.begin(), ids.end(), better);  // best first
  // log p(i) = logit(i) - log Z, with log Z from the sampled token's raw log-prob (the model's own kernel).
  const float log_z = logits[sample.token] - sample.raw_logprob;
  for (int64_t i = 0; i < k; ++i) {
    const int32_t id = ids[static_cast<size_t>(i)];
    sample.top.emplace_back(id, id == sample.token ? sample.raw_logprob : logits[id] - log_z);
  }
}

TokenSample sample_token(std::span<const float> logits, const SamplingDistribution& p, int64_t vocab_limit,
                         std::mt19937_64& rng) {
  const int64_t V = static_cast<int64_t>(logits.size());
  const int64_t n = vocab_limit > 0 ? std::min(vocab_limit, V) : V;
  // Raw log-softmax over the whole vocabulary, in double.
  const float mx = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (float l : logits) z += std::exp(double(l) - mx);
  const double log_z = std::log(z) + mx;
  TokenSample out;
  if (p.temperature <= 0.0f || p.top_k == 1) {
    out.token = static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + n) - logits.begin());
    out.sampled_logprob = 0.0f;  // a point mass
    out.raw_logprob = static_cast<float>(double(logits[out.token]) - log_z);
    return out;
  }
  // Candidates by descending logit (ties by id, so the order is deterministic).
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = p.top_k > 0 ? std::min(p.top_k, n) : n;
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(order.begin(), order.begin() + k, order.end(), by_logit);
  order.resize(k);
  const double inv_t = 1.0 / p.temperature;
  std::vector<double> w(k);
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += w[i] = std::exp((double(logits[order[i]]) - logits[order[0]]) * inv_t);
  int64_t keep = k;
  if (p.top_p < 1.0f) {
    double acc = 0;
    for (int64_t i = 0; i < k; ++i) {
      acc += w[i] / sum;
      if (acc >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
    sum = std::accumulate(w.begin(), w.begin() + keep, 0.0);
  }
  std::uniform_real_distribution<double> u(0.0, sum);
  const double r = u(rng);
  double acc = 0;
  int64_t pick = keep - 1;
  for (int64_t i = 0; i < keep; ++i) {
    acc += w[i];
    if (r < acc) {
      pick = i;
      break;
    }
  }
  out.token = order[pick];
  out.sampled_logprob = static_cast<float>(std::log(w[pick] / sum));
  out.raw_logprob = static_cast<float>(double(logits[out.token]) - log_z);
  return out;
}

GenerateResult generate(Model& model, std::span<const int32_t> prompt, const GenerateOptions& o,
                        const std::function<void(int32_t)>& on_token) {
  GenerateResult result;
  std::mt19937_64 rng(o.seed);
  SequenceState seq = model.new_sequence();
  std::vector<float> logits;
  model.prefill(seq, prompt, logits);
  SequenceState* s = &seq;
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    const TokenSample sample = sample_token(logits, {.temperature = o.temperature}, o.vocab_limit, rng);
    const int32_t tok = sample.token;
    result.tokens.push_back(tok);
    result.logprobs.push_back(sample.sampled_logprob);
    if (on_token) on_token(tok);
    if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), tok) != o.stop_tokens.end()) {
      result.stopped = true;
      break;
    }
    if (i + 1 < o.max_new_tokens) model.decode({&s, 1}, {&tok, 1}, logits);
  }
  return result;
}

}  // namespace interlace::model
