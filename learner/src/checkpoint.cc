#include "interlace/learner/checkpoint.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "interlace/model/config.h"
#include "interlace/model/precision.h"
#include "interlace/model/safetensors.h"

namespace interlace::learner {

namespace fs = std::filesystem;

namespace {

constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kStateFile = "trainer_state.json";

bool is_weight_file(const std::string& name) {
  return name.ends_with(".safetensors") || name == "model.safetensors.index.json" || name == kStateFile;
}

absl::StatusOr<model::NamedTensors> read_all(const std::string& dir) {
  INTERLACE_ASSIGN_OR_RETURN(model::Checkpoint ckpt, model::Checkpoint::open(dir));
  model::NamedTensors out;
  for (const std::string& name : ckpt.names()) {
    INTERLACE_ASSIGN_OR_RETURN(core::Tensor t, ckpt.get(name));
    out[name] = t.to_f32().clone();  // owning: the mapping may go away
  }
  return out;
}

// Non-finite weights are never written or loaded silently: a NaN learning
// rate once produced an all-NaN model that scored as nulls with exit 0.
absl::Status check_finite(const model::NamedTensors& tensors, const std::string& where) {
  for (const auto& [name, t] : tensors) {
    const core::Tensor f = t.to_f32();
    const float* p = f.data<float>();
    for (int64_t i = 0; i < f.numel(); ++i)
      if (!std::isfinite(p[i]))
        return absl::DataLossError(absl::StrCat(where, ": tensor ", name, " has a non-finite value (", p[i],
                                                ") at element ", i, "; the training that made it diverged"));
  }
  return absl::OkStatus();
}

std::vector<std::pair<std::string, core::Tensor>> ordered(const model::NamedTensors& tensors) {
  return {tensors.begin(), tensors.end()};
}

}  // namespace

absl::StatusOr<std::unique_ptr<TrainingModel>> load_training_model(const std::string& dir,
                                                                   kernels::Backend* backend) {
  INTERLACE_ASSIGN_OR_RETURN(model::ModelConfig config, model::load_config(dir));
  INTERLACE_ASSIGN_OR_RETURN(model::NamedTensors tensors, read_all(dir));
  INTERLACE_RETURN_IF_ERROR(check_finite(tensors, dir));
  // assemble_weights checks every name and shape the config needs, naming the culprit.
  INTERLACE_RETURN_IF_ERROR(model::assemble_weights(config, tensors, model::PrecisionProfile{}).status());
  return std::make_unique<TrainingModel>(std::move(config), tensors, backend);
}

absl::Status save_model(const std::string& dir, const TrainingModel& model, const std::string& source_dir) {
  INTERLACE_RETURN_IF_ERROR(check_finite(model.weights(), dir));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  if (!source_dir.empty() && fs::weakly_canonical(source_dir) != fs::weakly_canonical(dir)) {
    for (const auto& entry : fs::directory_iterator(source_dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || is_weight_file(name)) continue;
      fs::copy_file(entry.path(), fs::path(dir) / name, fs::copy_options::overwrite_existing, ec);
      if (ec) return absl::InternalError(absl::StrCat("copying ", entry.path().string(), ": ", ec.message()));
    }
    if (ec) return absl::InternalError(absl::StrCat(source_dir, ": ", ec.message()));
  }
  return model::write_checkpoint(dir, ordered(model.weights()));
}

namespace {

// fsync of every regular file directly in `dir`, then of `dir` itself.
absl::Status sync_tree(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file()) INTERLACE_RETURN_IF_ERROR(core::sync_file(e.path().string()));
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  return core::sync_directory(dir);
}

}  // namespace

absl::Status save_checkpoint(const std::string& dir, const TrainingModel& model, const Optimizer& optimizer,
                             const TrainerState& state, const std::string& source_dir) {
  const std::string tmp = dir + ".partial";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  INTERLACE_RETURN_IF_ERROR(save_model(tmp, model, source_dir));
  INTERLACE_RETURN_IF_ERROR(
      model::write_safetensors((fs::path(tmp) / kOptimizerFile).string(), ordered(optimizer.state())));
  nlohmann::json j = {{"step", state.step},
                      {"version", state.version},
                      {"optimizer",
                       {{"kind", optimizer_kind_name(optimizer.config().kind)},
                        {"applied_steps", optimizer.applied_steps()},
                        {"skipped_steps", optimizer.skipped_steps()}}},
                      {"extra", state.extra}};
  INTERLACE_RETURN_IF_ERROR(core::write_file((fs::path(tmp) / kStateFile).string(), j.dump(2) + "\n"));
  // Every file on disk before the checkpoint is renamed into place: a restart
  // relies on it (and cuts the run's logs back to it).
  INTERLACE_RETURN_IF_ERROR(sync_tree(tmp));
  fs::remove_all(dir, ec);
  fs::rename(tmp, dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("renaming ", tmp, " to ", dir, ": ", ec.message()));
  return core::sync_directory(fs::path(dir).parent_path().string());
}

absl::StatusOr<TrainerState> load_checkpoint(const std::string& dir, Optimizer& optimizer) {
  const std::string state_path = (fs::path(dir) / kStateFile).string();
  INTERLACE_ASSIGN_OR_RETURN(std::string text, core::read_file(state_path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(state_path + ": not a JSON object");
  TrainerState s;
  try {
    s.step = j.at("step").get<int64_t>();
    s.version = j.at("version").get<int64_t>();
    const auto& o = j.at("optimizer");
    const std::string kind = o.at("kind").get<std::string>();
    if (kind != optimizer_kind_name(optimizer.config().kind))
      return absl::InvalidArgumentError(absl::StrCat(state_path, ": written by optimizer ", kind,
                                                     ", resuming with ",
                                                     optimizer_kind_name(optimizer.config().kind)));
    model::NamedTensors moments;
    const std::string opt_path = (fs::path(dir) / kOptimizerFile).string();
    INTERLACE_ASSIGN_OR_RETURN(std::unique_ptr<model::SafetensorsFile> file, model::SafetensorsFile::open(opt_path));
    for (const auto& [name, info] : file->tensors()) {
      INTERLACE_ASSIGN_OR_RETURN(core::Tensor t, file->get(name));
      moments[name] = t.to_f32().clone();
    }
    absl::Status restored =
        optimizer.restore(moments, o.at("applied_steps").get<int64_t>(), o.at("skipped_steps").get<int64_t>());
    if (!restored.ok()) return absl::InvalidArgumentError(absl::StrCat(opt_path, ": ", restored.message()));
    s.extra = j.value("extra", nlohmann::json::object());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(state_path, ": ", e.what()));
  }
  return s;
}

}  // namespace interlace::learner
