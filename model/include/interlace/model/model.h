// The forward pass of full-attention and hybrid models, for prefill of whole
// sequences and for batched incremental decode of sequences of different
// lengths. Softmax layers keep a KV cache per sequence; lightning layers keep a
// recurrent state per sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/kernels/backend.h"
#include "interlace/model/config.h"
#include "interlace/model/precision.h"
#include "interlace/model/weights.h"

namespace interlace::model {

// Everything a model remembers about one sequence between forward calls.
struct SequenceState {
  int64_t length = 0;  // tokens processed so far
  struct Kv {
    std::vector<uint8_t> k, v;  // [capacity, kv_heads, head_dim] in the KV storage dtype
  };
  struct Lightning {
    std::vector<float> base, delta;  // [heads, head_dim, head_dim] each
    int64_t steps = 0;
  };
  std::vector<Kv> kv;                // per layer; empty for lightning layers
  std::vector<Lightning> lightning;  // per layer; empty for softmax layers
  // The record of the last verification chunk (Model::Chunk::verify), so the
  // sequence can be cut back to any position inside it (Model::rollback_verified):
  // a softmax layer only forgets the rows past the cut; a lightning layer's
  // state has absorbed every position, so it goes back to the state before the
  // chunk and replays the kept positions' keys and values through the same
  // recurrent update decode runs (bit for bit the state decoding them would
  // have left). Costs one state copy per lightning layer and 3 x heads x
  // head_dim floats per position and lightning layer; transient, never cached.
  struct Verified {
    int64_t start = 0, n = 0;                // the chunk's first position and length
    std::vector<Lightning> before;           // per layer (lightning layers): the state before the chunk
    std::vector<std::vector<float>> qkv;     // per layer (lightning layers): [n][q | k | v]
  };
  Verified verified;
  // Bytes held by caches and states (the verification record not included).
  size_t bytes() const;
};

// A sequence's position and lightning states, to go back to later (a draft
// model drafts k tokens ahead and returns): softmax layers need nothing saved,
// rows past the position are simply overwritten.
struct SequenceMark {
  int64_t length = 0;
  std::vector<SequenceState::Lightning> lightning;
};

enum class ScorePath { kPrefill, kDecode };

class Model {
 public:
  // Loads DIR (config.json + safetensors) under a precision profile.
  static absl::StatusOr<std::unique_ptr<Model>> load(const std::string& dir,
                                                     const PrecisionProfile& precision,
                                                     kernels::Backend* backend = nullptr);
  static absl::StatusOr<std::unique_ptr<Model>> from_tensors(const ModelConfig& config,
                                                             const NamedTensors& tensors,
                                                             const PrecisionProfile& precision,
                                                             kernels::Backend* backend = nullptr);

  const ModelConfig& config() const { return config_; }
  const PrecisionProfile& precision() const { return precision_; }
  int64_t vocab_size() const { return config_.vocab_size; }
  kernels::Backend& backend() const { return backend_; }
  // Bytes of one token's keys (or values) in one softmax layer's cache.
  size_t kv_row_bytes() const {
    return static_cast<size_t>(config_.num_key_value_heads * config_.head_dim) * core::dtype_size(kv_storage_);
  }

  SequenceState new_sequence() const;

  // Runs `tokens` through the model continuing `seq`. `logits` receives
  // [tokens, vocab] when all_logits, else [1, vocab] for the last token.
  void prefill(SequenceState& seq, std::span<const int32_t> tokens, std::vector<float>& logits,
               bool all_logits = false);
  // One token for each sequence, batched; `logits` receives [batch, vocab].
  void decode(std::span<SequenceState* const> seqs, std::span<const int32_t> tokens,
              std::vector<float>& logits);
  // One step of a continuous-batching engine: each chunk continues its sequence
  // by its tokens (a prompt chunk being prefilled, or the single token of a
  // decode), all in one forward. `logits` receives [chunks, vocab]: the logits
  // after each chunk's last token.
  // A verification chunk (speculative decoding: the pending token and k
  // drafts) runs every token as decode runs it, one position after another
  // with the decode kernels (so its logits are bit for bit what decoding the
  // tokens one at a time gives, wherever decode is batch-invariant: under the
  // strict profile always), returns the logits after every token (n rows
  // instead of 1), and records what rollback_verified needs.
  struct Chunk {
    SequenceState* seq;
    std::span<const int32_t> tokens;
    bool verify = false;
  };
  void step(std::span<const Chunk> chunks, std::vector<float>& logits);
  // After a verification chunk: keeps its first `length - start` positions
  // and forgets the rest, leaving the sequence exactly as decoding only the
  // kept tokens would have (see SequenceState::Verified). `length` may be the
  // chunk's end (keep all). Releases the record.
  void rollback_verified(SequenceState& seq, int64_t length);
  // Saves and restores a sequence's position and lightning states.
  SequenceMark mark(const SequenceState& seq) const;
  void restore(SequenceState& seq, const SequenceMark& mark) const;

  // log p(token_i | tokens before i) for every i >= 1 (entry 0 is NaN), computed
  // by one prefill or by feeding tokens one at a time through decode.
  std::vector<float> score(std::span<const int32_t> tokens, ScorePath path);

 private:
  struct Segment {
    SequenceState* seq;
    int64_t start;  // position of the segment's first token
    int64_t n;      // tokens
    int64_t row;    // first row in the batch
    bool verify = false;  // run as n decodes (Chunk::verify)
  };
  void lightning_verify(int64_t layer, const Segment& s, const float* q, const float* k, const float* v,
                        float* out);
  Model(ModelConfig config, ModelWeights weights, PrecisionProfile precision,
        kernels::Backend& backend);
  // Runs all segments' tokens as one batch of rows; returns logits for the rows
  // listed in `logit_rows`.
  void forward(std::vector<Segment>& segs, const int32_t* tokens, int64_t rows,
               const std::vector<int64_t>& logit_rows, std::vector<float>& logits);
  void softmax_layer(int64_t layer, std::vector<Segment>& segs, int64_t rows, const float* h,
                     float* out);
  void lightning_layer(int64_t layer, std::vector<Segment>& segs, int64_t rows, const float* h,
                       float* out);
  void swiglu_rows(const float* gate_up, int64_t rows, int64_t I, float* act);
  void dense_mlp(const LayerWeights& L, int64_t rows, const float* h, float* out);
  void moe_mlp(const LayerWeights& L, int64_t rows, const float* h, float* out);
  void linear(const Linear& l, const float* x, int64_t rows, float* y);
  void round_act(float* x, size_t n) const { core::round_array(precision_.activations, x, n); }

  ModelConfig config_;
  ModelWeights weights_;
  PrecisionProfile precision_;
  kernels::Backend& backend_;
  std::vector<std::vector<float>> slopes_;  // per layer (lightning layers only)
  core::DType kv_storage_;                  // bf16 is stored as bf16; other dtypes as rounded f32
};

}  // namespace interlace::model
