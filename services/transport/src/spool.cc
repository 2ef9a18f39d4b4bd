#include "interlace/transport/spool.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "interlace/transport/crc32c.h"

namespace interlace::transport {

absl::StatusOr<Spool> Spool::open(const std::string& path, Recovered* recovered) {
  Recovered local;
  Recovered& r = recovered ? *recovered : local;
  r = {};
  uint64_t good = 0;
  if (std::FILE* in = std::fopen(path.c_str(), "rb")) {
    for (;;) {
      uint32_t header[2];
      if (std::fread(header, 1, sizeof header, in) != sizeof header) break;
      std::string rec(header[0], '\0');
      if (header[0] > (uint32_t{1} << 30) || std::fread(rec.data(), 1, rec.size(), in) != rec.size() ||
          crc32c(rec) != header[1])
        break;
      r.records.push_back(std::move(rec));
      good += sizeof header + header[0];
    }
    std::fclose(in);
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(path, ec);
    if (!ec && size > good) {
      r.dropped_tail_bytes = size - good;
      if (::truncate(path.c_str(), static_cast<off_t>(good)) != 0)
        return absl::InternalError(absl::StrCat(path, ": cannot cut the torn tail: ", std::strerror(errno)));
    }
  }
  Spool s;
  s.path_ = path;
  s.file_ = std::fopen(path.c_str(), "ab");
  if (!s.file_) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for append: ", std::strerror(errno)));
  s.bytes_ = good;
  return s;
}

Spool::Spool(Spool&& o) noexcept : path_(std::move(o.path_)), file_(o.file_), bytes_(o.bytes_) { o.file_ = nullptr; }

Spool& Spool::operator=(Spool&& o) noexcept {
  if (this != &o) {
    if (file_) std::fclose(file_);
    path_ = std::move(o.path_);
    file_ = o.file_;
    bytes_ = o.bytes_;
    o.file_ = nullptr;
  }
  return *this;
}

Spool::~Spool() {
  if (file_) std::fclose(file_);
}

absl::Status Spool::append(std::string_view record) {
  const uint32_t header[2] = {static_cast<uint32_t>(record.size()), crc32c(record)};
  if (std::fwrite(header, 1, sizeof header, file_) != sizeof header ||
      std::fwrite(record.data(), 1, record.size(), file_) != record.size())
    return absl::DataLossError(absl::StrCat(path_, ": write failed: ", std::strerror(errno)));
  bytes_ += sizeof header + record.size();
  return absl::OkStatus();
}

absl::Status Spool::sync() {
  if (std::fflush(file_) != 0 || ::fdatasync(fileno(file_)) != 0)
    return absl::DataLossError(absl::StrCat(path_, ": fsync failed: ", std::strerror(errno)));
  return absl::OkStatus();
}

}  // namespace interlace::transport
