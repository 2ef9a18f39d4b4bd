#include "interlace/core/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace interlace::core {

absl::StatusOr<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

// fsync of what `path` names, opened with `flags`; `what` says which in errors.
absl::Status fsync_path(const std::string& path, int flags, const char* what) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open ", what, " to sync it: ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return absl::DataLossError(absl::StrCat(path, ": fsync of ", what, " failed: ", std::strerror(err)));
  return absl::OkStatus();
}

}  // namespace

absl::Status sync_file(const std::string& path) { return fsync_path(path, O_RDONLY, "the file"); }

absl::Status sync_directory(const std::string& dir) {
  return fsync_path(dir.empty() ? "." : dir, O_RDONLY | O_DIRECTORY, "the directory");
}

absl::Status write_all(int fd, std::string_view bytes, const std::string& what) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::DataLossError(absl::StrCat(what, ": write failed: ", std::strerror(n < 0 ? errno : EIO)));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status write_file(const std::string& path, const std::string& contents, unsigned mode) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());  // a leftover would keep its old mode
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, static_cast<mode_t>(mode));
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  absl::Status s = write_all(fd, contents, tmp);
  // Written, synced and closed without error, or the old file stays: a full
  // disk once left an empty file where a counter had been.
  if (s.ok() && ::fsync(fd) != 0) s = absl::DataLossError(absl::StrCat(tmp, ": fsync failed: ", std::strerror(errno)));
  if (::close(fd) != 0 && s.ok()) s = absl::DataLossError(absl::StrCat(tmp, ": close failed: ", std::strerror(errno)));
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("rename ", tmp, " -> ", path, ": ", std::strerror(err)));
  }
  return sync_directory(std::filesystem::path(path).parent_path().string());
}

}  // namespace interlace::core
