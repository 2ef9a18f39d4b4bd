#include "interlace/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "interlace/core/file_util.h"
#include "interlace/core/status.h"
#include "nlohmann/json.hpp"

namespace interlace::model {

using core::DType;
using core::Tensor;
using nlohmann::json;

namespace {

constexpr size_t kMaxHeaderBytes = 100u << 20;  // the limit the reference implementation uses

// A safetensors header nests three deep ({name: {"shape": [...]}}). Deeper
// JSON is refused before it is parsed: a 100 MB header of nested arrays once
// took 3.9 GB and 15 s to refuse.
constexpr int kMaxHeaderDepth = 3;

bool nests_deeper_than(const std::string& text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > limit) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

absl::StatusOr<DType> parse_st_dtype(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "BF16") return DType::kBF16;
  if (s == "F16") return DType::kF16;
  if (s == "F8_E4M3") return DType::kF8E4M3;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype '", s, "' is not supported (supported: F32, BF16, F16, F8_E4M3)"));
}

const char* st_dtype_name(DType d) {
  switch (d) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF8E4M3: return "F8_E4M3";
  }
  return "?";
}

}  // namespace

absl::StatusOr<std::map<std::string, TensorInfo>> parse_safetensors_header(
    const std::string& header, size_t data_size, const std::string& source,
    std::map<std::string, std::string>* metadata) {
  if (nests_deeper_than(header, kMaxHeaderDepth))
    return absl::DataLossError(absl::StrCat(source, ": header JSON nests deeper than ", kMaxHeaderDepth,
                                            " levels; a safetensors header is {name: {dtype, shape: [...]}}"));
  json j = json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::DataLossError(absl::StrCat(source, ": header is not a JSON object"));
  std::map<std::string, TensorInfo> out;
  for (auto& item : j.items()) {
    const std::string& name = item.key();  // not a structured binding: clang 14 cannot capture those
    auto& entry = item.value();
    if (name == "__metadata__") {
      if (!entry.is_object())
        return absl::DataLossError(absl::StrCat(source, ": __metadata__ must be an object"));
      for (auto& [k, v] : entry.items()) {
        if (!v.is_string())
          return absl::DataLossError(absl::StrCat(source, ": __metadata__ value '", k, "' must be a string"));
        if (metadata) (*metadata)[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) {
      return absl::DataLossError(absl::StrCat(source, ": tensor '", name, "': ", why));
    };
    if (!entry.is_object()) return bad("header entry is not an object");
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string()) return bad("missing or non-string 'dtype'");
    if (sh == entry.end() || !sh->is_array()) return bad("missing or non-array 'shape'");
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      return bad("'data_offsets' must be [begin, end]");
    TensorInfo info;
    auto dtype = parse_st_dtype(dt->get<std::string>());
    if (!dtype.ok()) return bad(std::string(dtype.status().message()));
    info.dtype = *dtype;
    for (auto& d : *sh) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t{INT64_MAX})
        return bad("shape entries must be non-negative integers below 2^63");
      info.shape.push_back(d.get<int64_t>());
    }
    if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      return bad("data_offsets must be non-negative integers");
    info.begin = (*off)[0].get<size_t>();
    info.end = (*off)[1].get<size_t>();
    if (info.begin > info.end) return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end, "] are reversed"));
    if (info.end > data_size)
      return bad(absl::StrCat("data_offsets end ", info.end, " is past the data section (", data_size,
                              " bytes; the file is truncated or the header is wrong)"));
    // numel * size, stopping once it exceeds the data section (so it cannot overflow);
    // a zero dimension makes it zero however large the others are.
    bool zero = false;
    for (int64_t d : info.shape) zero = zero || d == 0;
    unsigned __int128 bytes = zero ? 0 : core::dtype_size(info.dtype);
    for (int64_t d : info.shape) {
      if (zero) break;
      bytes *= static_cast<uint64_t>(d);
      if (bytes > data_size) break;
    }
    if (bytes != info.end - info.begin)
      return bad(absl::StrCat("shape ", core::shape_string(info.shape), " x ", st_dtype_name(info.dtype),
                              " needs ", static_cast<uint64_t>(bytes), " bytes but data_offsets span ",
                              info.end - info.begin));
    out.emplace(name, std::move(info));
  }
  // As the reference implementation requires: the tensors tile the data section
  // exactly, in offset order, with no overlap, gap or trailing bytes.
  std::vector<std::pair<std::pair<size_t, size_t>, std::string>> order;
  for (auto& [name, info] : out) order.push_back({{info.begin, info.end}, name});
  std::sort(order.begin(), order.end());
  size_t expected = 0;
  std::string prev = "(start of data)";
  for (auto& [range, name] : order) {
    if (range.first < expected)
      return absl::DataLossError(absl::StrCat(source, ": tensors '", prev, "' and '", name,
                                              "' overlap in the data section"));
    if (range.first > expected)
      return absl::DataLossError(absl::StrCat(source, ": ", range.first - expected,
                                              " unaccounted bytes before tensor '", name, "'"));
    expected = range.second;
    prev = name;
  }
  if (expected != data_size)
    return absl::DataLossError(absl::StrCat(source, ": ", data_size - expected,
                                            " trailing bytes after the last tensor (truncated header or corrupt file)"));
  return out;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": stat failed"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": file is ", size, " bytes, too short for a safetensors header"));
  }
  // Private and writable: pages are copied on write, so tensors viewing the mapping
  // may be updated in place without touching the file.
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (addr == MAP_FAILED) return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  std::shared_ptr<void> mapping(addr, [size](void* p) { munmap(p, size); });
  const char* bytes = static_cast<const char*>(addr);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian on every machine we target
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_len, " exceeds the file size (",
                                            size, " bytes) or the 100 MiB limit"));
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapping;
  file->data_ = bytes + 8 + header_len;
  file->data_size_ = size - 8 - header_len;
  std::string header(bytes + 8, header_len);
  INTERLACE_ASSIGN_OR_RETURN(file->tensors_,
                             parse_safetensors_header(header, file->data_size_, path, &file->metadata_));
  return file;
}

SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<Tensor> SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  const TensorInfo& info = it->second;
  const char* p = data_ + info.begin;
  if (reinterpret_cast<uintptr_t>(p) % core::dtype_size(info.dtype) == 0) {
    return Tensor::view(const_cast<char*>(p), info.shape, info.dtype, mapping_);
  }
  Tensor t = Tensor::zeros(info.shape, info.dtype);
  std::memcpy(t.raw(), p, info.end - info.begin);
  return t;
}

std::string safetensors_bytes(const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  std::vector<Tensor> contiguous;
  for (auto& [name, t] : tensors) {
    Tensor c = t.is_contiguous() ? t : t.clone();
    header[name] = {{"dtype", st_dtype_name(c.dtype())}, {"shape", c.shape()},
                    {"data_offsets", {offset, offset + c.nbytes()}}};
    offset += c.nbytes();
    contiguous.push_back(c);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned
  std::string out;
  out.reserve(8 + h.size() + offset);
  const uint64_t len = h.size();
  out.append(reinterpret_cast<const char*>(&len), 8);
  out += h;
  for (auto& c : contiguous) out.append(static_cast<const char*>(c.raw()), c.nbytes());
  return out;
}

absl::StatusOr<NamedTensorMap> parse_safetensors_bytes(const std::string& bytes, const std::string& source) {
  if (bytes.size() < 8)
    return absl::DataLossError(absl::StrCat(source, ": ", bytes.size(), " bytes, too short for a safetensors header"));
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8)
    return absl::DataLossError(absl::StrCat(source, ": header length ", header_len, " exceeds the payload (",
                                            bytes.size(), " bytes) or the 100 MiB limit"));
  const char* data = bytes.data() + 8 + header_len;
  INTERLACE_ASSIGN_OR_RETURN(auto infos, parse_safetensors_header(bytes.substr(8, header_len),
                                                                  bytes.size() - 8 - header_len, source, nullptr));
  NamedTensorMap out;
  for (const auto& [name, info] : infos) {
    Tensor t = Tensor::zeros(info.shape, info.dtype);
    std::memcpy(t.raw(), data + info.begin, info.end - info.begin);
    out[name] = std::move(t);
  }
  return out;
}

absl::Status write_safetensors(const std::string& path,
                               const std::vector<std::pair<std::string, Tensor>>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  const std::string bytes = safetensors_bytes(tensors, metadata);
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return absl::DataLossError(absl::StrCat(tmp, ": write failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return absl::InternalError(absl::StrCat("rename to ", path, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

absl::StatusOr<Checkpoint> Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint c;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> files;
  json weight_map;
  if (fs::exists(index)) {
    INTERLACE_ASSIGN_OR_RETURN(std::string text, core::read_file(index.string()));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object())
      return absl::DataLossError(absl::StrCat(index.string(), ": not JSON with a 'weight_map' object"));
    weight_map = j["weight_map"];
    for (auto& [name, file] : weight_map.items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos ||
          file.get<std::string>().find("..") != std::string::npos)
        return absl::DataLossError(absl::StrCat(index.string(), ": weight_map['", name,
                                                "'] is not a file name in the model directory"));
      if (std::find(files.begin(), files.end(), file.get<std::string>()) == files.end())
        files.push_back(file.get<std::string>());
    }
  } else if (fs::exists(fs::path(dir) / "model.safetensors")) {
    files.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
  }
  for (const std::string& f : files) {
    INTERLACE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open((fs::path(dir) / f).string()));
    const size_t idx = c.files_.size();
    for (auto& [name, info] : file->tensors()) {
      if (!weight_map.is_null()) {
        auto it = weight_map.find(name);
        if (it == weight_map.end() || it->get<std::string>() != f) continue;  // listed elsewhere
      }
      if (c.where_.count(name))
        return absl::DataLossError(absl::StrCat(file->path(), ": tensor '", name, "' also appears in ",
                                                c.files_[c.where_[name]]->path()));
      c.where_[name] = idx;
    }
    c.files_.push_back(std::move(file));
  }
  if (!weight_map.is_null()) {
    for (auto& [name, file] : weight_map.items())
      if (!c.where_.count(name))
        return absl::DataLossError(absl::StrCat(index.string(), ": tensor '", name, "' is listed in ",
                                                file.get<std::string>(), " but not found there"));
  }
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> n;
  for (auto& [name, i] : where_) n.push_back(name);
  return n;
}

absl::StatusOr<Tensor> Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) return absl::NotFoundError(absl::StrCat("checkpoint has no tensor '", name, "'"));
  return files_[it->second]->get(name);
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  return files_[where_.at(name)]->tensors().at(name);
}

std::string Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? std::string("(checkpoint)") : files_[it->second]->path();
}

absl::Status write_checkpoint(const std::string& dir,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              size_t max_shard_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir, ": cannot create directory: ", ec.message()));
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  size_t bytes = 0, total = 0;
  for (auto& nt : tensors) {
    if (bytes > 0 && bytes + nt.second.nbytes() > max_shard_bytes) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().push_back(nt);
    bytes += nt.second.nbytes();
    total += nt.second.nbytes();
  }
  if (shards.size() == 1) {
    fs::remove(fs::path(dir) / "model.safetensors.index.json", ec);
    return write_safetensors((fs::path(dir) / "model.safetensors").string(), shards[0], {{"format", "pt"}});
  }
  json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    INTERLACE_RETURN_IF_ERROR(write_safetensors((fs::path(dir) / name).string(), shards[i], {{"format", "pt"}}));
    for (auto& [tname, t] : shards[i]) index["weight_map"][tname] = name;
  }
  fs::remove(fs::path(dir) / "model.safetensors", ec);
  return core::write_file((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}

}  // namespace interlace::model
