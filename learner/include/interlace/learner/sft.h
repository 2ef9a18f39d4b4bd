// Supervised fine-tuning: data, loss and the order batches are drawn in.
//
// Data is JSONL, one example per line: {"tokens": [ids], "loss_mask": [0|1 per
// token]}; loss_mask[i] = 1 trains on predicting token i. Nothing predicts the
// first token, so loss_mask[0] is ignored. The loss of a batch is the sum of the
// masked tokens' negative log-likelihoods divided by the number of masked
// tokens in the batch (not a mean of per-sequence means).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/learner/training_model.h"
#include "nlohmann/json.hpp"

namespace interlace::learner {

struct SftExample {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;
  int64_t trained_tokens() const;  // mask ones, position 0 excluded
};

// The "tokens" array of a parsed JSONL line (discarded parse: not JSON), every
// id in [0, vocab); errors start with `where` (FILE:LINE) and name the entry.
absl::StatusOr<std::vector<int32_t>> parse_token_ids(const nlohmann::json& line, const std::string& where,
                                                     int64_t vocab);

// Reads and validates the whole file; errors name FILE:LINE and the entry (a
// token outside [0, vocab), a mask of the wrong length or with values other
// than 0/1, a line that is not JSON) and an empty file or one with no trained
// token is an error too.
// Bounds on one line of a token file, checked before it is parsed: a line of
// 50M tokens once ended in bad_alloc.
inline constexpr size_t kMaxLineTokens = size_t{1} << 20;
inline constexpr size_t kMaxLineBytes = size_t{32} << 20;
// OK, or InvalidArgument naming `where` if `line` is over kMaxLineBytes.
absl::Status check_line_size(const std::string& line, const std::string& where);
absl::StatusOr<std::vector<SftExample>> read_sft_file(const std::string& path, int64_t vocab);

struct SftBatchStats {
  double loss = 0;             // sum masked NLL / masked tokens
  int64_t tokens = 0;          // all tokens run through the model
  int64_t trained_tokens = 0;  // masked tokens
};

// Adds d(batch loss)/d(weights) into `grads` and returns the loss.
SftBatchStats sft_accumulate(const TrainingModel& model, std::span<const SftExample* const> batch,
                             model::NamedTensors& grads);

// Epochs of a seeded shuffle: each step takes the next `batch_size` examples
// (0: all of them); a new permutation is drawn when one runs out. Its state is
// JSON, so a resumed run draws the same batches.
class BatchSampler {
 public:
  BatchSampler(int64_t examples, int64_t batch_size, uint64_t seed);
  std::vector<int64_t> next();
  nlohmann::json state() const;
  absl::Status restore(const nlohmann::json& state);

 private:
  void reshuffle();
  int64_t examples_, batch_size_;
  std::mt19937_64 rng_;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0, epoch_ = 0;
};

}  // namespace interlace::learner
