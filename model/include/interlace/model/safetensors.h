// safetensors files: a little-endian u64 header length, a JSON header naming
// each tensor's dtype, shape and [begin, end) byte range in the data section,
// then the data. Files are memory-mapped; tensors whose bytes are suitably
// aligned are returned as zero-copy views that keep the mapping alive.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interlace/core/tensor.h"

namespace interlace::model {

struct TensorInfo {
  core::DType dtype = core::DType::kF32;
  core::Shape shape;
  size_t begin = 0;  // offsets within the data section
  size_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates the file: header length, JSON, dtypes, shapes, offsets in
  // range and non-overlapping, shape x dtype size == byte span.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // The tensor in its stored dtype: a view into the mapping when aligned, else a copy.
  absl::StatusOr<core::Tensor> get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::shared_ptr<void> mapping_;  // unmaps when the last view is gone
  const char* data_ = nullptr;     // start of the data section
  size_t data_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a header (the JSON text) against a data section of
// `data_size` bytes; `source` names the file in errors. Exposed for tests.
absl::StatusOr<std::map<std::string, TensorInfo>> parse_safetensors_header(
    const std::string& header, size_t data_size, const std::string& source,
    std::map<std::string, std::string>* metadata);

// Writes tensors (any supported dtype) to one file, atomically.
// A safetensors file's bytes in memory (what write_safetensors writes), and
// back: every tensor copied out, after the same header checks as open().
using NamedTensorMap = std::map<std::string, core::Tensor>;
std::string safetensors_bytes(const std::vector<std::pair<std::string, core::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});
absl::StatusOr<NamedTensorMap> parse_safetensors_bytes(const std::string& bytes, const std::string& source);

absl::Status write_safetensors(const std::string& path,
                               const std::vector<std::pair<std::string, core::Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata = {});

// A checkpoint: model.safetensors, or shards listed by model.safetensors.index.json.
class Checkpoint {
 public:
  static absl::StatusOr<Checkpoint> open(const std::string& dir);
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  std::vector<std::string> names() const;
  // Returns the tensor and the file it came from (for error messages).
  absl::StatusOr<core::Tensor> get(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;
  std::string file_of(const std::string& name) const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;
};

// Writes tensors into `dir` as model.safetensors, or as model-0000i-of-0000n
// shards of at most `max_shard_bytes` plus model.safetensors.index.json.
absl::Status write_checkpoint(const std::string& dir,
                              const std::vector<std::pair<std::string, core::Tensor>>& tensors,
                              size_t max_shard_bytes = size_t{2} << 30);

}  // namespace interlace::model
