#include "interlace/model/model_init.h"

#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "interlace/model/config.h"
#include "interlace/model/safetensors.h"
#include "interlace/model/tokenizer.h"
#include "interlace/model/weights.h"

namespace interlace::model {

absl::Status init_model_dir(const InitOptions& o) {
  INTERLACE_ASSIGN_OR_RETURN(std::string text, core::read_file(o.config_path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(o.config_path, ": not valid JSON"));
  INTERLACE_ASSIGN_OR_RETURN(ModelConfig config, parse_config(j, o.config_path));
  // Random weights are made in fp32, all at once: they must fit in memory.
  const double need = double(config.parameter_count()) * 4.0;
  const double have = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
  if (have > 0 && need > 0.8 * have)
    return absl::ResourceExhaustedError(absl::StrCat(o.config_path, ": ", config.parameter_count(), " parameters need ",
                                                     need / 1e9, " GB in fp32 to initialise; this machine has ",
                                                     have / 1e9, " GB"));
  float stddev = o.stddev;
  if (j.contains("initializer_range") && j["initializer_range"].is_number())
    stddev = j["initializer_range"].get<float>();
  NamedTensors tensors = random_weights(config, o.seed, stddev);
  std::vector<std::pair<std::string, core::Tensor>> ordered;
  for (const WeightSpec& spec : weight_specs(config))
    ordered.emplace_back(spec.name, tensors.at(spec.name).to_dtype(o.dtype));
  INTERLACE_RETURN_IF_ERROR(write_checkpoint(o.out_dir, ordered));
  j["torch_dtype"] = o.dtype == core::DType::kBF16 ? "bfloat16" : o.dtype == core::DType::kF16 ? "float16" : "float32";
  INTERLACE_RETURN_IF_ERROR(
      core::write_file((std::filesystem::path(o.out_dir) / "config.json").string(), j.dump(2) + "\n"));
  ByteTokenizer tokenizer;
  if (config.vocab_size >= tokenizer.vocab_size())
    INTERLACE_RETURN_IF_ERROR(write_byte_tokenizer(o.out_dir, tokenizer));
  return absl::OkStatus();
}

}  // namespace interlace::model
