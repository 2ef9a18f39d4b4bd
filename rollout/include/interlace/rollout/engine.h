// The generation engine: a request queue and continuous batching over one
// model. Every step runs one forward over a mixed batch: one token for each
// sequence that is decoding, plus chunks of prompts being prefilled (chunked
// prefill: a long prompt takes several steps and never stalls the decodes of
// the others). Sequences join when a slot frees and leave when they finish.
// New weights are swapped in between steps; every generated token records the
// weights version that produced it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "interlace/cache/prefix_cache.h"
#include "interlace/model/model.h"
#include "interlace/model/tokenizer.h"
#include "interlace/rollout/sampling.h"
#include "interlace/rollout/speculative.h"

namespace interlace::rollout {

struct EngineConfig {
  int64_t max_running = 32;       // sequences in the running batch
  int64_t prefill_chunk = 256;    // prompt tokens one sequence prefills per step, at most
  int64_t max_step_tokens = 512;  // tokens per step (decodes first, then prefill chunks)
  int64_t vocab_limit = 0;        // sample only ids below this (0: the whole vocabulary)
  // Speculative decoding (off by default): a decoding sequence with drafts
  // runs its pending token and the drafts as one verification chunk; the
  // output is token for token, log-prob for log-prob what it is without (see
  // speculative.h). Drafts count against max_step_tokens.
  SpeculativeConfig speculate = {};
};

enum class FinishReason { kStopToken, kStopString, kLength, kAborted };
const char* finish_reason_name(FinishReason r);

struct Request {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
};

struct RequestOutput {
  int64_t id = 0;
  int64_t prompt_tokens = 0;
  std::vector<int32_t> tokens;            // generated (a stop token or stop string's tokens included)
  std::vector<float> sampled_logprobs;    // log q(token), q the distribution sampled from
  std::vector<float> raw_logprobs;        // log p(token), the model's full softmax at temperature 1
  std::vector<int64_t> versions;          // weights version that produced each token
  int64_t cached_tokens = 0;              // prompt tokens restored from the prefix cache
  FinishReason finish = FinishReason::kLength;
};

struct EngineStats {
  int64_t steps = 0, prefill_tokens = 0, decode_tokens = 0, finished = 0, aborted = 0, weight_swaps = 0;
  int64_t generation_checkpoints = 0;  // finished sequences whose prompt + answer went into the cache
  // Speculative decoding: verification chunks run, draft tokens in them, and
  // drafts accepted (the sampled token was the draft); rejected = drafted - accepted.
  int64_t spec_verifications = 0, spec_drafted = 0, spec_accepted = 0;
  // Tokens emitted by verification chunks (accepted drafts plus the token
  // each verification samples after them).
  int64_t spec_emitted = 0;
  double spec_rollback_seconds = 0;  // spent cutting sequences back after rejections
};

// Called with each request's latencies, in seconds, when set (Engine::
// set_latency_hooks): first_token from submit() to its first sampled token
// (queueing and prefill included), inter_token between its later tokens.
// The worker turns them into Prometheus histograms; the engine knows nothing
// of metrics.
struct LatencyHooks {
  std::function<void(double)> first_token, inter_token;
};

// Called with every token as it is sampled (request id, the sample with its
// log q and log p, weights version), so a server can stream before the
// request finishes.
using TokenHook = std::function<void(int64_t id, const TokenSample& sample, int64_t version)>;

class Engine {
 public:
  // `tokenizer` is needed only for stop strings.
  Engine(std::shared_ptr<model::Model> model, int64_t version, EngineConfig config = {},
         const model::Tokenizer* tokenizer = nullptr);

  // Queues a request; returns its id. An empty prompt is refused (aborts:
  // nothing predicts a first token); so is a token outside the vocabulary.
  int64_t submit(Request request);
  // Ends a waiting or running request now; its output (what was generated so
  // far) comes back from take_finished() with FinishReason::kAborted.
  bool abort(int64_t id);
  // New weights (same config) used from the next step on. Sequences in flight
  // keep their caches and continue under the new version.
  void update_weights(std::shared_ptr<model::Model> model, int64_t version);
  // Optional prefix/state cache (not owned). Admitted requests restore their
  // longest cached prefix under the current version; each finished prompt is
  // checkpointed (in an agent episode the prompt is the history: a turn
  // boundary). Requests whose prompt another running request is still
  // prefilling wait for it, so a sampling group prefills its prompt once.
  void set_cache(cache::PrefixCache* cache) { cache_ = cache; }
  void set_latency_hooks(LatencyHooks hooks) { latency_ = std::move(hooks); }
  void set_token_hook(TokenHook hook) { token_hook_ = std::move(hook); }

  // One scheduling step; false when there was nothing to run.
  bool step();
  // Steps until every request has finished.
  void run();
  std::vector<RequestOutput> take_finished();

  bool idle() const { return waiting_.empty() && running_.empty(); }
  int64_t running() const { return static_cast<int64_t>(running_.size()); }  // sequences in the batch
  int64_t waiting() const { return static_cast<int64_t>(waiting_.size()); }  // requests queued
  int64_t version() const { return version_; }
  const EngineStats& stats() const { return stats_; }
  const model::Model& model() const { return *model_; }

 private:
  struct Sequence {
    int64_t id;
    Request request;
    model::SequenceState state;
    int64_t prefilled = 0;  // prompt tokens run through the model
    int32_t pending = -1;   // sampled token not yet fed back
    int64_t prefill_version = -1;  // weights version the prompt's prefill started under
    // Where the prompt leaves a prefix the cache holds without a checkpoint
    // there (a branch point): prefill stops and checkpoints there first. -1: none.
    int64_t branch_at = -1;
    // The whole prompt came from the cache with the logits after it: the
    // first token is sampled from these, without running the model.
    std::vector<float> ready_logits;
    std::mt19937_64 rng;
    std::vector<int32_t> drafts;              // this step's drafts (verification chunk: pending + drafts)
    // prompt + out.tokens for the drafters, made at the first proposal and
    // appended by emit after that (not rebuilt each step: O(length) a token).
    std::vector<int32_t> history;
    std::unique_ptr<model::SequenceState> draft_state;  // the draft model's, when drafting with one
    RequestOutput out;
    std::chrono::steady_clock::time_point submitted, last_token;  // for LatencyHooks
  };
  void checkpoint_generation(const Sequence& s);
  // Whether `waiting` should stay queued until a running request has prefilled
  // (and checkpointed) the prefix their prompts share; marks that point.
  bool wait_for_shared_prefill(const Sequence& waiting);
  void finish(std::unique_ptr<Sequence> seq, FinishReason reason);
  // Samples the sequence's next token from `logits` and records it; true when
  // that token ends the request (reason in s.out.finish).
  bool emit(Sequence& s, const float* logits);
  // Samples a verification chunk's positions (logits: one row per token of
  // pending + drafts), accepts drafts, cuts the state back; true when the request ended.
  bool verify(Sequence& s, const float* logits);
  // Drafts for a decoding sequence, at most `room` (k, the tokens it may
  // still generate and the step's budget bound it).
  std::vector<int32_t> propose(Sequence& s, int64_t room);
  bool stopped_by_string(const Sequence& s) const;

  std::shared_ptr<model::Model> model_, next_model_;
  int64_t version_, next_version_ = -1;
  EngineConfig config_;
  const model::Tokenizer* tokenizer_;
  cache::PrefixCache* cache_ = nullptr;
  LatencyHooks latency_;
  TokenHook token_hook_;
  int64_t next_id_ = 0;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<RequestOutput> finished_;
  EngineStats stats_;
};

}  // namespace interlace::rollout
