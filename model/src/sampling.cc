#include "interlace/model/sampling.h"

#include <algorithm>
#include <cmath>

namespace interlace::model {

int32_t sample_token(std::span<const float> logits, float temperature, std::mt19937_64& rng,
                     float* logprob) {
  const size_t V = logits.size();
  const float mx = *std::max_element(logits.begin(), logits.end());
  if (temperature <= 0.0f) {
    const int32_t best = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (logprob) *logprob = 0.0f;  // greedy: the sampling distribution is a point mass
    return best;
  }
  std::vector<double> p(V);
  double sum = 0;
  for (size_t i = 0; i < V; ++i) sum += p[i] = std::exp(double(logits[i] - mx) / temperature);
  std::uniform_real_distribution<double> u(0.0, sum);
  double r = u(rng), acc = 0;
  size_t pick = V - 1;
  for (size_t i = 0; i < V; ++i) {
    acc += p[i];
    if (r < acc) {
      pick = i;
      break;
    }
  }
  if (logprob) *logprob = static_cast<float>(std::log(p[pick] / sum));
  return static_cast<int32_t>(pick);
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
    float lp = 0;
    std::span<const float> allowed(logits);
    if (o.vocab_limit > 0 && o.vocab_limit < static_cast<int64_t>(logits.size())) allowed = allowed.first(o.vocab_limit);
    const int32_t tok = sample_token(allowed, o.temperature, rng, &lp);
    result.tokens.push_back(tok);
    result.logprobs.push_back(lp);
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
