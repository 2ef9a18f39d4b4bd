// Reading one mapping of a YAML spec (a job spec, a rollout job spec): each
// known key has a reader with its bounds; a bad value or an unknown key is an
// error that names the file, the line and the key's path ("job.yaml:12:
// sft.steps: ..."). Private to the rl library's spec parsers.
#pragma once

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace interlace::rl::spec {

inline std::string where(const std::string& source, const std::string& key, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line >= 0) return absl::StrCat(source, ":", m.line + 1, ": ", key);
  return absl::StrCat(source, ": ", key);
}

// Reads one section: each known key has a setter; anything else is an error.
class Section {
 public:
  Section(const std::string& source, const std::string& path, const YAML::Node& node)
      : source_(source), path_(path), node_(node) {}

  template <typename T>
  Section& num(const std::string& key, T& out, double lo, double hi) {
    known_.insert(key);
    if (!status_.ok() || !node_[key]) return *this;
    const YAML::Node v = node_[key];
    T x{};
    // Written so that NaN fails too (every comparison with NaN is false).
    if (!v.IsScalar() || !YAML::convert<T>::decode(v, x) || !(double(x) >= lo && double(x) <= hi)) {
      status_ = absl::InvalidArgumentError(absl::StrCat(where(source_, full(key), v), ": '", v.IsScalar() ? v.Scalar() : "(not a scalar)",
                                                        "' is not allowed; expected a finite number in [", lo, ", ", hi, "]"));
      return *this;
    }
    out = x;
    return *this;
  }
  Section& boolean(const std::string& key, bool& out) {
    known_.insert(key);
    if (!status_.ok() || !node_[key]) return *this;
    const YAML::Node v = node_[key];
    if (!v.IsScalar() || !YAML::convert<bool>::decode(v, out))
      status_ = absl::InvalidArgumentError(absl::StrCat(where(source_, full(key), v), ": expected true or false"));
    return *this;
  }
  // A string, optionally one of `allowed`, optionally checked by `check`.
  Section& text(const std::string& key, std::string& out, const std::vector<std::string>& allowed = {},
                const std::function<absl::Status(const std::string&)>& check = {}) {
    known_.insert(key);
    if (!status_.ok() || !node_[key]) return *this;
    const YAML::Node v = node_[key];
    if (!v.IsScalar()) {
      status_ = absl::InvalidArgumentError(absl::StrCat(where(source_, full(key), v), ": expected a string"));
      return *this;
    }
    const std::string s = v.Scalar();
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
      status_ = absl::InvalidArgumentError(absl::StrCat(where(source_, full(key), v), ": '", s,
                                                        "' is not allowed; choose one of: ", absl::StrJoin(allowed, ", ")));
      return *this;
    }
    if (check) {
      if (absl::Status c = check(s); !c.ok()) {
        status_ = absl::InvalidArgumentError(absl::StrCat(where(source_, full(key), v), ": ", c.message()));
        return *this;
      }
    }
    out = s;
    return *this;
  }
  Section& section(const std::string& key, const std::function<void(Section&)>& read) {
    known_.insert(key);
    if (!status_.ok() || !node_[key]) return *this;
    const YAML::Node v = node_[key];
    if (!v.IsMap()) {
      status_ = absl::InvalidArgumentError(absl::StrCat(where(source_, full(key), v), ": expected a mapping of keys"));
      return *this;
    }
    Section inner(source_, full(key), v);
    read(inner);
    status_ = inner.finish();
    return *this;
  }
  absl::Status finish() {
    if (!status_.ok()) return status_;
    for (const auto& kv : node_) {
      const std::string key = kv.first.Scalar();
      if (!known_.count(key))
        return absl::InvalidArgumentError(absl::StrCat(where(source_, full(key), kv.first), ": unknown key; allowed here: ",
                                                       absl::StrJoin(known_, ", ")));
    }
    return absl::OkStatus();
  }

 private:
  std::string full(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  std::string source_, path_;
  YAML::Node node_;
  std::set<std::string> known_;
  absl::Status status_;
};

// The spec's top level, or where its YAML is broken.
inline absl::StatusOr<YAML::Node> load_mapping(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(source, ": expected a mapping of keys at the top"));
  return root;
}

}  // namespace interlace::rl::spec
