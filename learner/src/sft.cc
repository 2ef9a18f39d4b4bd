#include "interlace/learner/sft.h"

#include <algorithm>
#include <fstream>
#include <numeric>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "interlace/core/status.h"

namespace interlace::learner {

int64_t SftExample::trained_tokens() const {
  int64_t n = 0;
  for (size_t i = 1; i < loss_mask.size(); ++i) n += loss_mask[i];
  return n;
}

absl::Status check_line_size(const std::string& line, const std::string& where) {
  if (line.size() > kMaxLineBytes)
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": the line is ", line.size(), " bytes; at most ", kMaxLineBytes, " are supported"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> parse_token_ids(const nlohmann::json& line, const std::string& where,
                                                     int64_t vocab) {
  if (line.is_discarded() || !line.is_object())
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  auto it = line.find("tokens");
  if (it == line.end() || !it->is_array())
    return absl::InvalidArgumentError(absl::StrCat(where, ": needs a \"tokens\" array of token ids"));
  if (it->size() > kMaxLineTokens)
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": ", it->size(), " tokens; at most ", kMaxLineTokens, " per sequence are supported"));
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < it->size(); ++i) {
    const auto& t = (*it)[i];
    if (!t.is_number_integer())
      return absl::InvalidArgumentError(absl::StrCat(where, ": tokens[", i, "] is not an integer"));
    const int64_t id = t.get<int64_t>();
    if (id < 0 || id >= vocab)
      return absl::InvalidArgumentError(absl::StrCat(where, ": tokens[", i, "] = ", id,
                                                     " is outside the model's vocabulary [0, ", vocab, ")"));
    tokens.push_back(static_cast<int32_t>(id));
  }
  return tokens;
}

namespace {

absl::StatusOr<SftExample> parse_example(const std::string& line, const std::string& where, int64_t vocab) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  SftExample ex;
  INTERLACE_ASSIGN_OR_RETURN(ex.tokens, parse_token_ids(j, where, vocab));
  auto mask = j.find("loss_mask");
  if (mask == j.end() || !mask->is_array())
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": needs a \"loss_mask\" array (1 = train on this token, 0 = context)"));
  if (mask->size() != ex.tokens.size())
    return absl::InvalidArgumentError(absl::StrCat(where, ": loss_mask has ", mask->size(), " entries but tokens has ",
                                                   ex.tokens.size(), "; they must match one to one"));
  for (size_t i = 0; i < mask->size(); ++i) {
    const auto& m = (*mask)[i];
    if (!m.is_number_integer() || (m.get<int64_t>() != 0 && m.get<int64_t>() != 1))
      return absl::InvalidArgumentError(absl::StrCat(where, ": loss_mask[", i, "] must be 0 or 1"));
    ex.loss_mask.push_back(static_cast<uint8_t>(m.get<int64_t>()));
  }
  return ex;
}

}  // namespace

absl::StatusOr<std::vector<SftExample>> read_sft_file(const std::string& path, int64_t vocab) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<SftExample> out;
  std::string line;
  int64_t line_no = 0, trained = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    INTERLACE_RETURN_IF_ERROR(check_line_size(line, absl::StrCat(path, ":", line_no)));
    auto ex = parse_example(line, absl::StrCat(path, ":", line_no), vocab);
    if (!ex.ok()) return ex.status();
    trained += ex->trained_tokens();
    out.push_back(std::move(*ex));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty, no examples to train on"));
  if (trained == 0)
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no loss_mask entry past the first token is 1, so there is nothing to train on"));
  return out;
}

SftBatchStats sft_accumulate(const TrainingModel& model, std::span<const SftExample* const> batch,
                             model::NamedTensors& grads) {
  SftBatchStats s;
  for (const SftExample* ex : batch) {
    s.trained_tokens += ex->trained_tokens();
    s.tokens += static_cast<int64_t>(ex->tokens.size());
  }
  if (s.trained_tokens == 0) return s;
  const float inv = 1.0f / static_cast<float>(s.trained_tokens);
  for (const SftExample* ex : batch) {
    if (ex->trained_tokens() == 0) continue;
    std::vector<float> scale(ex->tokens.size(), 0.0f);
    for (size_t i = 1; i < scale.size(); ++i) scale[i] = ex->loss_mask[i] ? inv : 0.0f;
    s.loss += model.forward_backward(ex->tokens, scale, grads);
  }
  return s;
}

BatchSampler::BatchSampler(int64_t examples, int64_t batch_size, uint64_t seed)
    : examples_(examples), batch_size_(batch_size <= 0 ? examples : batch_size), rng_(seed) {
  reshuffle();
}

void BatchSampler::reshuffle() {
  order_.resize(examples_);
  std::iota(order_.begin(), order_.end(), 0);
  std::shuffle(order_.begin(), order_.end(), rng_);
  cursor_ = 0;
  ++epoch_;
}

std::vector<int64_t> BatchSampler::next() {
  std::vector<int64_t> batch;
  while (static_cast<int64_t>(batch.size()) < batch_size_) {
    if (cursor_ == examples_) reshuffle();
    batch.push_back(order_[cursor_++]);
  }
  // File order within a batch: a batch's gradient is then summed in one
  // canonical order, whatever the permutation (a whole-file batch sums exactly
  // as the file reads).
  std::sort(batch.begin(), batch.end());
  return batch;
}

nlohmann::json BatchSampler::state() const {
  std::ostringstream rng;
  rng << rng_;
  return {{"examples", examples_}, {"batch_size", batch_size_}, {"epoch", epoch_},
          {"cursor", cursor_},     {"order", order_},           {"rng", rng.str()}};
}

absl::Status BatchSampler::restore(const nlohmann::json& j) {
  try {
    if (j.at("examples").get<int64_t>() != examples_ || j.at("batch_size").get<int64_t>() != batch_size_)
      return absl::InvalidArgumentError(absl::StrCat("the checkpoint was written for ", j.at("examples").get<int64_t>(),
                                                     " examples in batches of ", j.at("batch_size").get<int64_t>(),
                                                     "; this run has ", examples_, " in batches of ", batch_size_));
    epoch_ = j.at("epoch").get<int64_t>();
    cursor_ = j.at("cursor").get<int64_t>();
    order_ = j.at("order").get<std::vector<int64_t>>();
    std::istringstream rng(j.at("rng").get<std::string>());
    rng >> rng_;
    if (!rng || static_cast<int64_t>(order_.size()) != examples_ || cursor_ < 0 || cursor_ > examples_)
      return absl::InvalidArgumentError("the sampler state in the checkpoint is damaged");
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("sampler state: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace interlace::learner
