// Creating a model directory in the Hugging Face layout from a config.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "interlace/core/dtype.h"

namespace interlace::model {

struct InitOptions {
  std::string config_path;  // a config.json
  std::string out_dir;
  uint64_t seed = 0;
  core::DType dtype = core::DType::kF32;  // stored dtype of the weights
  float stddev = 0.02f;                   // config's initializer_range overrides it
};

// Writes config.json, model.safetensors (or shards) and, when the vocabulary
// has room for it, the byte tokenizer.
absl::Status init_model_dir(const InitOptions& options);

}  // namespace interlace::model
