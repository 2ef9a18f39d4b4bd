#include "interlace/model/precision.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace interlace::model {

using core::DType;

std::string PrecisionProfile::describe() const {
  return absl::StrCat(name, strict ? " (strict kernels, " : " (", "weights=", core::dtype_name(weights),
                      ", activations=",
                      core::dtype_name(activations), ", kv=", core::dtype_name(kv_cache),
                      ", state=", core::dtype_name(state), ", head=", core::dtype_name(lm_head), ")");
}

std::vector<std::string> precision_profile_names() { return {"fp32", "bf16", "bf16-fp32head", "strict"}; }

absl::StatusOr<PrecisionProfile> parse_precision(const std::string& spec) {
  PrecisionProfile p;
  p.name = spec;
  if (spec == "fp32" || spec == "f32") return p;
  if (spec == "strict") {
    p.strict = true;
    return p;
  }
  if (spec == "bf16" || spec == "bf16-fp32head") {
    p.weights = p.activations = p.kv_cache = DType::kBF16;
    p.lm_head = spec == "bf16" ? DType::kBF16 : DType::kF32;
    return p;
  }
  if (spec.find('=') == std::string::npos)
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown precision profile '", spec, "' (named profiles: ",
        absl::StrJoin(precision_profile_names(), ", "),
        "; or a custom one like weights=bf16,activations=bf16,kv=bf16,state=f32,head=f32)"));
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    std::vector<std::string> kv = absl::StrSplit(part, '=');
    if (kv.size() != 2)
      return absl::InvalidArgumentError(absl::StrCat("precision '", spec, "': '", std::string(part),
                                                     "' is not key=dtype"));
    auto dtype = core::parse_dtype(kv[1]);
    if (!dtype.ok())
      return absl::InvalidArgumentError(absl::StrCat("precision '", spec, "': ", dtype.status().message()));
    const std::string& k = kv[0];
    if (k == "weights") p.weights = *dtype;
    else if (k == "activations") p.activations = *dtype;
    else if (k == "kv" || k == "kv_cache") p.kv_cache = *dtype;
    else if (k == "state") p.state = *dtype;
    else if (k == "head" || k == "lm_head") p.lm_head = *dtype;
    else
      return absl::InvalidArgumentError(absl::StrCat("precision '", spec, "': unknown key '", k,
                                                     "' (keys: weights, activations, kv, state, head)"));
  }
  return p;
}

}  // namespace interlace::model
