#include "interlace/rollout/engine.h"

#include <algorithm>

#include "interlace/core/status.h"

namespace interlace::rollout {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kLength: return "length";
    case FinishReason::kAborted: return "aborted";
  }
  return "?";
}

Engine::Engine(std::shared_ptr<model::Model> model, int64_t version, EngineConfig config,
               const model::Tokenizer* tokenizer)
    : model_(std::move(model)), version_(version), config_(config), tokenizer_(tokenizer) {
  INTERLACE_CHECK(config_.max_running > 0 && config_.prefill_chunk > 0 && config_.max_step_tokens > 0,
                  "EngineConfig: max_running, prefill_chunk and max_step_tokens must be positive");
  const auto& spec = config_.speculate;
  INTERLACE_CHECK(spec.method != SpeculativeConfig::Method::kModel ||
                      (spec.draft_model && spec.draft_model->vocab_size() == model_->vocab_size()),
                  "EngineConfig: speculation with a draft model needs the model loaded, with the same vocabulary");
  INTERLACE_CHECK(spec.method != SpeculativeConfig::Method::kCallback || spec.draft_fn,
                  "EngineConfig: callback speculation without a draft function");
}

std::vector<int32_t> Engine::propose(Sequence& s, int64_t room) {
  const auto& spec = config_.speculate;
  room = std::min(room, spec.k);
  if (room <= 0) return {};
  if (s.history.empty()) {
    s.history = s.request.prompt;
    s.history.insert(s.history.end(), s.out.tokens.begin(), s.out.tokens.end());
  }
  INTERLACE_CHECK(s.history.size() == s.request.prompt.size() + s.out.tokens.size(), "drafting history out of step");
  const std::vector<int32_t>& history = s.history;
  if (spec.method == SpeculativeConfig::Method::kNgram)
    return ngram_drafts(history, room, spec.ngram_max, spec.ngram_min);
  if (spec.method == SpeculativeConfig::Method::kCallback) {
    std::vector<int32_t> d = spec.draft_fn(history, room);
    if (static_cast<int64_t>(d.size()) > room) d.resize(room);
    for (int32_t t : d) INTERLACE_CHECK(t >= 0 && t < model_->vocab_size(), "a draft token outside the vocabulary");
    return d;
  }
  if (!s.draft_state) s.draft_state = std::make_unique<model::SequenceState>(spec.draft_model->new_sequence());
  return model_drafts(*spec.draft_model, *s.draft_state, history, room, config_.vocab_limit);
}

int64_t Engine::submit(Request request) {
  auto s = std::make_unique<Sequence>();
  s->id = next_id_++;
  s->out.id = s->id;
  s->out.prompt_tokens = static_cast<int64_t>(request.prompt.size());
  s->submitted = std::chrono::steady_clock::now();
  s->rng.seed(request.sampling.seed);
  bool valid = !request.prompt.empty();
  for (int32_t t : request.prompt) valid = valid && t >= 0 && t < model_->vocab_size();
  s->request = std::move(request);
  const int64_t id = s->id;
  if (!valid) {
    finish(std::move(s), FinishReason::kAborted);
  } else if (s->request.sampling.max_new_tokens <= 0) {
    finish(std::move(s), FinishReason::kLength);
  } else {
    waiting_.push_back(std::move(s));
  }
  return id;
}

bool Engine::abort(int64_t id) {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
    if ((*it)->id == id) {
      auto s = std::move(*it);
      waiting_.erase(it);
      finish(std::move(s), FinishReason::kAborted);
      return true;
    }
  for (auto it = running_.begin(); it != running_.end(); ++it)
    if ((*it)->id == id) {
      auto s = std::move(*it);
      running_.erase(it);
      finish(std::move(s), FinishReason::kAborted);
      return true;
    }
  return false;
}

void Engine::update_weights(std::shared_ptr<model::Model> model, int64_t version) {
  INTERLACE_CHECK(model->config().num_hidden_layers == model_->config().num_hidden_layers &&
                      model->vocab_size() == model_->vocab_size() &&
                      model->config().hidden_size == model_->config().hidden_size,
                  "update_weights: the new weights are for a different model");
  next_model_ = std::move(model);
  next_version_ = version;
}

// A finished sequence's state has run the prompt and every generated token
// but the last (sampled, never fed back). In an agent episode the next turn's
// prompt starts with exactly that history, so it is checkpointed too: without
// it every turn prefilled the previous turn's answer again, although decoding
// had just computed it. Only when one weights version computed all of it, and
// only when the cache has room for it.
void Engine::checkpoint_generation(const Sequence& s) {
  if (!cache_ || s.prefill_version != version_ || s.out.tokens.size() < 2) return;
  if (!std::all_of(s.out.versions.begin(), s.out.versions.end(), [&](int64_t v) { return v == version_; })) return;
  std::vector<int32_t> history = s.request.prompt;
  history.insert(history.end(), s.out.tokens.begin(), s.out.tokens.end());
  if (s.state.length > static_cast<int64_t>(history.size())) return;  // not what was computed: never cache it
  // Only into room the cache has: with full pools this checkpoint evicted the
  // prompt checkpoints sampling groups branch from, and the calculator
  // workload prefilled more, not less (hit rate 64% -> 54% at the default
  // 256 states; 62% with this rule; 78% -> 90% with pools that never fill).
  // Pools sized by memory are the rest of the answer (issue 25).
  if (!cache_->has_room_for(s.state.length - s.prefilled)) return;
  cache_->insert(history, version_, s.state);
  ++stats_.generation_checkpoints;
}

void Engine::finish(std::unique_ptr<Sequence> seq, FinishReason reason) {
  seq->out.finish = reason;
  ++stats_.finished;
  if (reason == FinishReason::kAborted) ++stats_.aborted;
  finished_.push_back(std::move(seq->out));
}

bool Engine::stopped_by_string(const Sequence& s) const {
  if (!tokenizer_ || s.request.sampling.stop_strings.empty()) return false;
  // Only the tail can hold a new match: decode enough trailing tokens to cover
  // the longest stop string (a token is at least one byte... or one special).
  size_t longest = 0;
  for (const auto& str : s.request.sampling.stop_strings) longest = std::max(longest, str.size());
  const auto& t = s.out.tokens;
  const size_t from = t.size() > longest + 1 ? t.size() - longest - 1 : 0;
  const std::string tail = tokenizer_->decode(std::span(t).subspan(from));
  const std::string last = tokenizer_->decode(std::span(t).last(1));
  for (const auto& str : s.request.sampling.stop_strings) {
    if (str.empty()) continue;
    // A match that ends inside the newest token's text.
    const size_t pos = tail.rfind(str);
    if (pos != std::string::npos && pos + str.size() + last.size() > tail.size()) return true;
  }
  return false;
}

// Without this, requests admitted together (a batch of tasks behind one
// system prompt) each prefilled the shared part: none was checkpointed yet.
// The running prompt stops at the end of the shared part and checkpoints it
// (a branch point). A wait that would save less than a cache block is not
// worth it: with it, tasks whose questions share a digit or two queued behind
// one another, admitted one per step.
bool Engine::wait_for_shared_prefill(const Sequence& waiting) {
  const auto& prompt = waiting.request.prompt;
  const int64_t worth = std::min<int64_t>(cache_->config().block_size, static_cast<int64_t>(prompt.size()));
  bool wait = false;
  for (auto& r : running_) {
    const auto& other = r->request.prompt;
    const int64_t other_size = static_cast<int64_t>(other.size());
    if (r->prefilled >= other_size) continue;  // not prefilling
    const int64_t shared = std::mismatch(prompt.begin(), prompt.end(), other.begin(), other.end()).first - prompt.begin();
    // The same prompt is always worth it: its end comes with the logits, and
    // then nothing runs at all.
    const bool same = shared == static_cast<int64_t>(prompt.size()) && shared == other_size;
    if (shared - r->prefilled < worth && !same) continue;
    // Its own prompt's end (and one short of it) is checkpointed anyway.
    if (shared < other_size - 1 && (r->branch_at <= r->prefilled || shared < r->branch_at)) r->branch_at = shared;
    wait = true;
  }
  return wait;
}

bool Engine::step() {
  if (next_model_) {
    // A version that does not increase may name other weights (a learner
    // restarted from its checkpoint republishes it, then trains the next
    // versions again): nothing cached is trusted across it.
    if (cache_ && next_version_ <= version_) cache_->clear();
    model_ = std::move(next_model_);
    version_ = next_version_;
    ++stats_.weight_swaps;
  }
  // Admit in arrival order; a request that shares a prefix with a prompt a
  // running one is prefilling waits until that prefix is computed and
  // checkpointed, then restores it.
  for (auto it = waiting_.begin(); it != waiting_.end() && static_cast<int64_t>(running_.size()) < config_.max_running;) {
    if (cache_ && wait_for_shared_prefill(**it)) {
      ++it;
      continue;
    }
    auto s = std::move(*it);
    it = waiting_.erase(it);
    s->state = model_->new_sequence();
    s->prefill_version = version_;
    if (cache_) {
      const auto& p = s->request.prompt;
      s->prefilled = cache_->lookup(p, version_, s->state, &s->ready_logits);
      s->out.cached_tokens = s->prefilled;
      const int64_t shared = cache_->shared_prefix(p, version_);
      if (shared > s->prefilled && shared < static_cast<int64_t>(p.size()) - 1) s->branch_at = shared;
    }
    running_.push_back(std::move(s));
  }
  if (running_.empty()) return false;

  // Decodes first (one token each), then prompt chunks in arrival order.
  std::vector<model::Model::Chunk> chunks;
  std::vector<Sequence*> owners;
  int64_t budget = config_.max_step_tokens;
  int64_t decoding_left = 0;  // decodes not yet given their token from the budget
  for (auto& s : running_) decoding_left += s->pending >= 0;
  std::vector<int64_t> first_row;  // each owner's first row of logits
  int64_t rows = 0;
  for (auto& s : running_)
    if (s->pending >= 0) {
      // Drafts only from what the budget leaves after every decode's own token,
      // and never more than the request may still generate after the pending one.
      s->drafts.clear();
      if (config_.speculate.enabled()) {
        const int64_t room = std::min<int64_t>(
            s->request.sampling.max_new_tokens - static_cast<int64_t>(s->out.tokens.size()) - 1,
            budget - decoding_left);
        if (room > 0) s->drafts = propose(*s, room);
      }
      --decoding_left;
      if (s->drafts.empty()) {
        chunks.push_back({&s->state, std::span<const int32_t>(&s->pending, 1)});
      } else {
        s->drafts.insert(s->drafts.begin(), s->pending);
        chunks.push_back({&s->state, s->drafts, /*verify=*/true});
      }
      owners.push_back(s.get());
      first_row.push_back(rows);
      const int64_t n = static_cast<int64_t>(chunks.back().tokens.size());
      rows += s->drafts.empty() ? 1 : n;
      budget -= n;
    }
  for (auto& s : running_) {
    const int64_t size = static_cast<int64_t>(s->request.prompt.size()), left = size - s->prefilled;
    if (s->pending >= 0 || left == 0 || budget <= 0) continue;
    int64_t n = std::min({left, config_.prefill_chunk, budget});
    // With a cache, stop at a branch point and one token short of the
    // prompt's end first: both are checkpointed, so a request with another
    // question after the same system prompt restores the shared part, and one
    // with the same prompt restores all but its last token (and that one too,
    // with the logits kept at the prompt's end).
    if (cache_ && s->prefilled < s->branch_at) n = std::min(n, s->branch_at - s->prefilled);
    if (cache_ && s->prefilled < size - 1) n = std::min(n, size - 1 - s->prefilled);
    chunks.push_back({&s->state, std::span<const int32_t>(s->request.prompt).subspan(s->prefilled, n)});
    owners.push_back(s.get());
    first_row.push_back(rows++);
    budget -= n;
  }
  std::vector<float> logits;
  const size_t ran = chunks.size();
  if (!chunks.empty()) model_->step(chunks, logits);
  ++stats_.steps;
  for (auto& s : running_)
    if (!s->ready_logits.empty()) {
      logits.insert(logits.end(), s->ready_logits.begin(), s->ready_logits.end());
      owners.push_back(s.get());
      first_row.push_back(rows++);
      std::vector<float>().swap(s->ready_logits);
    }

  const int64_t V = model_->vocab_size();
  std::vector<int64_t> done;
  for (size_t i = 0; i < owners.size(); ++i) {
    Sequence& s = *owners[i];
    const float* row = &logits[first_row[i] * V];
    if (i < ran && !s.drafts.empty()) {
      if (verify(s, row)) done.push_back(s.id);
      continue;
    }
    if (i >= ran) {
      // Sampled from the logits the cache kept: nothing ran.
    } else if (s.pending >= 0) {
      ++stats_.decode_tokens;
    } else {
      s.prefilled += static_cast<int64_t>(chunks[i].tokens.size());
      stats_.prefill_tokens += static_cast<int64_t>(chunks[i].tokens.size());
      // Checkpoint the branch points and the prompt's end (in an agent episode,
      // a turn boundary; there with the logits, which a request with the same
      // prompt samples from), unless weights changed while the prompt was prefilled.
      const int64_t size = static_cast<int64_t>(s.request.prompt.size());
      if (cache_ && s.prefill_version == version_ && (s.prefilled >= size - 1 || s.prefilled == s.branch_at))
        cache_->insert(s.request.prompt, version_, s.state,
                       s.prefilled == size ? std::span<const float>(row, V) : std::span<const float>());
      if (s.prefilled < size) continue;  // more prompt to go
    }
    if (emit(s, row)) done.push_back(s.id);
  }
  for (int64_t id : done) {
    auto it = std::find_if(running_.begin(), running_.end(), [id](const auto& s) { return s->id == id; });
    auto s = std::move(*it);
    running_.erase(it);
    checkpoint_generation(*s);
    const FinishReason reason = s->out.finish;
    finish(std::move(s), reason);
  }
  return true;
}

// A verification chunk (pending + drafts, logits after each): samples each
// position as decoding would and goes on while the sampled token is the
// draft; the first that is not is the correction. The state then keeps the
// pending token and the drafts before the last emitted token (which becomes
// the pending one, not yet fed).
bool Engine::verify(Sequence& s, const float* rows) {
  const int64_t V = model_->vocab_size(), n = static_cast<int64_t>(s.drafts.size()), start = s.state.length - n;
  int64_t emitted = 0, accepted = 0;
  bool end = false;
  while (emitted < n && !end) {
    end = emit(s, rows + emitted * V);
    ++emitted;
    if (emitted == n) break;  // the token after every draft
    if (s.out.tokens.back() != s.drafts[emitted]) break;  // the correction
    ++accepted;
  }
  const auto cut = std::chrono::steady_clock::now();
  model_->rollback_verified(s.state, start + emitted);
  if (emitted < n) stats_.spec_rollback_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - cut).count();
  ++stats_.spec_verifications;
  stats_.spec_drafted += n - 1;
  stats_.spec_accepted += accepted;
  stats_.spec_emitted += emitted;
  stats_.decode_tokens += emitted;
  s.drafts.clear();
  return end;
}

bool Engine::emit(Sequence& s, const float* row) {
  const int64_t V = model_->vocab_size();
  TokenSample t = sample(std::span<const float>(row, V), s.request.sampling, config_.vocab_limit, s.rng);
  // The raw log-prob by the model's own kernel, as the learner computes it
  // (under the strict profile the two then agree bit for bit).
  model_->backend().log_softmax_gather(row, &t.token, 1, V, &t.raw_logprob);
  if (s.request.sampling.top_logprobs > 0)
    model::fill_top_logprobs(std::span<const float>(row, V), config_.vocab_limit, s.request.sampling.top_logprobs, t);
  if (latency_.first_token || latency_.inter_token) {
    const auto now = std::chrono::steady_clock::now();
    const auto& since = s.out.tokens.empty() ? s.submitted : s.last_token;
    const auto& hook = s.out.tokens.empty() ? latency_.first_token : latency_.inter_token;
    if (hook) hook(std::chrono::duration<double>(now - since).count());
    s.last_token = now;
  }
  s.out.tokens.push_back(t.token);
  if (!s.history.empty()) s.history.push_back(t.token);
  s.out.sampled_logprobs.push_back(t.sampled_logprob);
  s.out.raw_logprobs.push_back(t.raw_logprob);
  s.out.versions.push_back(version_);
  if (token_hook_) token_hook_(s.id, t, version_);
  s.pending = t.token;
  const auto& stops = s.request.sampling.stop_token_ids;
  if (std::find(stops.begin(), stops.end(), t.token) != stops.end()) {
    s.out.finish = FinishReason::kStopToken;
  } else if (stopped_by_string(s)) {
    s.out.finish = FinishReason::kStopString;
  } else if (static_cast<int64_t>(s.out.tokens.size()) >= s.request.sampling.max_new_tokens) {
    s.out.finish = FinishReason::kLength;
  } else {
    return false;
  }
  return true;
}

void Engine::run() {
  while (step()) {
  }
}

std::vector<RequestOutput> Engine::take_finished() {
  std::vector<RequestOutput> out;
  out.swap(finished_);
  return out;
}

}  // namespace interlace::rollout
