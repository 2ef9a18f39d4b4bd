// The learner's spool: an append-only file of accepted trajectory frames. A
// trajectory is acknowledged only after the batch holding it is fsync'ed, so
// an acknowledged trajectory survives a crash; on restart the spool is read
// back. Each record is [u32 length][u32 crc32c][bytes]; a torn or corrupt tail
// (a crash mid-write) is cut off at the last good record and reported.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace interlace::transport {

class Spool {
 public:
  struct Recovered {
    std::vector<std::string> records;
    uint64_t dropped_tail_bytes = 0;  // bytes after the last good record, cut off
  };
  // Opens (creating if needed) and reads back every good record.
  static absl::StatusOr<Spool> open(const std::string& path, Recovered* recovered);
  Spool(Spool&& other) noexcept;
  Spool& operator=(Spool&& other) noexcept;
  ~Spool();

  absl::Status append(std::string_view record);
  // Makes every appended record durable (fflush + fdatasync).
  absl::Status sync();
  uint64_t bytes() const { return bytes_; }

 private:
  Spool() = default;
  std::string path_;
  std::FILE* file_ = nullptr;
  uint64_t bytes_ = 0;
};

}  // namespace interlace::transport
