// Small file helpers that report errors as absl::Status naming the path.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace interlace::core {

absl::StatusOr<std::string> read_file(const std::string& path);
// Writes atomically and durably: to `path.tmp`, fsync, close (each checked),
// rename over `path`, fsync the directory. On any error `path` is unchanged.
// `mode` is the new file's permission bits (0600 for secrets; the umask applies).
absl::Status write_file(const std::string& path, const std::string& contents, unsigned mode = 0644);
// Writes every byte to `fd` (retrying short writes); `what` names it in errors.
absl::Status write_all(int fd, std::string_view bytes, const std::string& what);
// fsync of a file written through another handle (an ofstream, after flush).
absl::Status sync_file(const std::string& path);
// fsync of a directory, so that a rename or a new file in it survives a crash.
absl::Status sync_directory(const std::string& dir);

}  // namespace interlace::core
