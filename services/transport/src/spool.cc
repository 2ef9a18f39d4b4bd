#include "interlace/transport/spool.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace/transport/crc32c.h"

namespace interlace::transport {
namespace {

constexpr size_t kHeaderBytes = 8;

uint32_t read_u32(const std::string& data, size_t at) {
  uint32_t v;
  std::memcpy(&v, data.data() + at, sizeof v);
  return v;
}

// The length of the record starting at `at`, or 0 if none does: its length
// must fit in what is left (checked before anything is allocated) and its CRC
// must match. Empty records are never written, so a run of zero bytes (which
// would pass the CRC of nothing) is not taken for records.
uint32_t record_at(const std::string& data, size_t at) {
  if (data.size() - at < kHeaderBytes) return 0;
  const uint32_t length = read_u32(data, at), crc = read_u32(data, at + 4);
  if (length == 0 || length > Spool::kMaxRecordBytes || length > data.size() - at - kHeaderBytes) return 0;
  return crc32c(std::string_view(data).substr(at + kHeaderBytes, length)) == crc ? length : 0;
}

std::string framed(const std::vector<std::string>& records) {
  std::string out;
  for (const std::string& rec : records) {
    const uint32_t header[2] = {static_cast<uint32_t>(rec.size()), crc32c(rec)};
    out.append(reinterpret_cast<const char*>(header), sizeof header);
    out.append(rec);
  }
  return out;
}

absl::Status append_durably(const std::string& path, std::string_view bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  absl::Status s = core::write_all(fd, bytes, path);
  if (s.ok() && ::fsync(fd) != 0) s = absl::DataLossError(absl::StrCat(path, ": fsync failed: ", std::strerror(errno)));
  ::close(fd);
  return s;
}

}  // namespace

absl::StatusOr<Spool> Spool::open(const std::string& path, Recovered* recovered) {
  Recovered local;
  Recovered& r = recovered ? *recovered : local;
  r = {};
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    auto data = core::read_file(path);
    if (!data.ok()) return data.status();
    std::string damaged;
    for (size_t at = 0; at < data->size();) {
      if (const uint32_t length = record_at(*data, at)) {
        r.records.emplace_back(*data, at + kHeaderBytes, length);
        at += kHeaderBytes + length;
        continue;
      }
      // Damaged from here: skip to the next good record (or the end).
      size_t next = at + 1;
      while (next < data->size() && !record_at(*data, next)) ++next;
      damaged.append(*data, at, next - at);
      ++r.damaged_regions;
      at = next;
    }
    if (!damaged.empty()) {
      // Set the bad bytes aside first, then rewrite the spool with the good
      // records only (through a synced temporary and a rename).
      r.damaged_bytes = damaged.size();
      if (absl::Status s = append_durably(path + ".damaged", damaged); !s.ok()) return s;
      if (absl::Status s = core::write_file(path, framed(r.records)); !s.ok()) return s;
    }
  }
  Spool s;
  s.path_ = path;
  s.fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (s.fd_ < 0) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for append: ", std::strerror(errno)));
  const off_t end = ::lseek(s.fd_, 0, SEEK_END);
  if (end < 0) return absl::InternalError(absl::StrCat(path, ": cannot find its end: ", std::strerror(errno)));
  s.bytes_ = s.synced_ = static_cast<uint64_t>(end);
  return s;
}

absl::StatusOr<Spool> Spool::rewrite(const std::string& path, const std::vector<std::string>& records) {
  for (const std::string& rec : records)
    if (rec.empty() || rec.size() > kMaxRecordBytes)
      return absl::InvalidArgumentError(absl::StrCat(path, ": a record of ", rec.size(), " bytes cannot be spooled"));
  if (absl::Status s = core::write_file(path, framed(records)); !s.ok()) return s;
  return open(path, nullptr);
}

Spool::Spool(Spool&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_), bytes_(o.bytes_), synced_(o.synced_) {
  o.fd_ = -1;
  fail_every_ = o.fail_every_;
  appends_ = o.appends_;
}

Spool& Spool::operator=(Spool&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    bytes_ = o.bytes_;
    synced_ = o.synced_;
    fail_every_ = o.fail_every_;
    appends_ = o.appends_;
    o.fd_ = -1;
  }
  return *this;
}

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status Spool::roll_back(absl::Status cause) {
  // Whatever part of the unsynced records reached the file goes: the next
  // record must not follow a fragment (a restart would have to skip it).
  if (::ftruncate(fd_, static_cast<off_t>(synced_)) != 0)
    return absl::DataLossError(absl::StrCat(cause.message(), "; cutting the spool back to its last sync also failed (",
                                            std::strerror(errno), "): a restart will set the fragment aside"));
  bytes_ = synced_;
  return absl::DataLossError(absl::StrCat(cause.message(), "; the spool is cut back to its last sync"));
}

absl::Status Spool::append(std::string_view record) {
  if (record.empty() || record.size() > kMaxRecordBytes)
    return absl::InvalidArgumentError(absl::StrCat(path_, ": a record of ", record.size(), " bytes cannot be spooled"));
  const uint32_t header[2] = {static_cast<uint32_t>(record.size()), crc32c(record)};
  std::string bytes(reinterpret_cast<const char*>(header), sizeof header);
  bytes.append(record);
  if (fail_every_ > 0 && ++appends_ % fail_every_ == 0) {
    (void)core::write_all(fd_, std::string_view(bytes).substr(0, bytes.size() / 2), path_);
    return roll_back(absl::ResourceExhaustedError(
        absl::StrCat(path_, ": No space left on device (injected: INTERLACE_INJECT_SPOOL_FAILURES)")));
  }
  if (absl::Status s = core::write_all(fd_, bytes, path_); !s.ok()) return roll_back(s);
  bytes_ += bytes.size();
  return absl::OkStatus();
}

absl::Status Spool::sync() {
  if (bytes_ == synced_) return absl::OkStatus();
  if (::fdatasync(fd_) != 0)
    return roll_back(absl::DataLossError(absl::StrCat(path_, ": fdatasync failed: ", std::strerror(errno))));
  synced_ = bytes_;
  return absl::OkStatus();
}

}  // namespace interlace::transport
