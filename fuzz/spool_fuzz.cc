// A spool file of any bytes (a crash, a full disk, corruption): reading it
// back never crashes or allocates from a bad length, keeps the good records,
// and leaves a spool that reads back the same with nothing damaged.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "interlace/transport/spool.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using interlace::transport::Spool;
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("interlace-spool-fuzz-" + std::to_string(::getpid()))).string();
  std::filesystem::remove(path + ".damaged");
  if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  Spool::Recovered first, second;
  if (!Spool::open(path, &first).ok()) std::abort();
  if (!Spool::open(path, &second).ok() || second.records != first.records || second.damaged_bytes != 0) std::abort();
  return 0;
}
