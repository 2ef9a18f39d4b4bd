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
  // Bytes held by caches and states.
  size_t bytes() const;
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
  struct Chunk {
    SequenceState* seq;
    std::span<const int32_t> tokens;
  };
  void step(std::span<const Chunk> chunks, std::vector<float>& logits);

  // log p(token_i | tokens before i) for every i >= 1 (entry 0 is NaN), computed
  // by one prefill or by feeding tokens one at a time through decode.
  std::vector<float> score(std::span<const int32_t> tokens, ScorePath path);

 private:
  struct Segment {
    SequenceState* seq;
    int64_t start;  // position of the segment's first token
    int64_t n;      // tokens
    int64_t row;    // first row in the batch
  };
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
