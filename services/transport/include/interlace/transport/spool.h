// The learner's spool: an append-only file of accepted trajectory frames. A
// trajectory is acknowledged only after the record holding it is written and
// fdatasync'ed; if a write or sync fails, the file is cut back to the last
// synced record and whatever was appended since is taken back (not acked: its
// sender resends). Each record is [u32 length][u32 crc32c][bytes].
//
// Reading back keeps every good record: a damaged one (a flipped byte, a bad
// length) is skipped up to the next record whose length and CRC check out,
// and its bytes are moved aside into PATH.damaged rather than deleted; a torn
// tail (a crash mid-write) is moved aside the same way.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace interlace::transport {

class Spool {
 public:
  static constexpr uint32_t kMaxRecordBytes = uint32_t{1} << 30;

  struct Recovered {
    std::vector<std::string> records;
    uint64_t damaged_bytes = 0;    // bytes moved aside to PATH.damaged (damaged records and a torn tail)
    uint64_t damaged_regions = 0;  // separate stretches of them
  };
  // Opens (creating if needed) and reads back every good record.
  static absl::StatusOr<Spool> open(const std::string& path, Recovered* recovered);
  // Replaces the spool at `path` with exactly `records` (atomically: a synced
  // temporary renamed over it) and opens it for appending. The learner keeps
  // only what is not trained yet this way, so the spool does not grow with
  // the job.
  static absl::StatusOr<Spool> rewrite(const std::string& path, const std::vector<std::string>& records);
  Spool(Spool&& other) noexcept;
  Spool& operator=(Spool&& other) noexcept;
  ~Spool();

  // Appends a record (not yet durable). On error the file is cut back to the
  // last sync and the records appended since are gone: call nothing but
  // append/sync again after telling their senders nothing.
  absl::Status append(std::string_view record);
  // Makes every appended record durable. On error, as for append.
  absl::Status sync();
  uint64_t bytes() const { return bytes_; }         // written, synced or not
  uint64_t synced_bytes() const { return synced_; }  // durable
  const std::string& path() const { return path_; }
  // Testing a full disk where no small filesystem can be mounted: every
  // `every`-th append writes half its record and then fails as a full disk
  // would (0: never). The learner sets it from INTERLACE_INJECT_SPOOL_FAILURES.
  void inject_write_failures(int every) { fail_every_ = every; }

 private:
  Spool() = default;
  absl::Status roll_back(absl::Status cause);
  std::string path_;
  int fd_ = -1;
  uint64_t bytes_ = 0, synced_ = 0;
  int fail_every_ = 0;
  int64_t appends_ = 0;
};

}  // namespace interlace::transport
