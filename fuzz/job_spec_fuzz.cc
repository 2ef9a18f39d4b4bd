// Job specs (YAML a user or a controller hands over): any text parses to a
// spec or an error that names the key.
#include <cstdint>
#include <string>

#include "interlace/rl/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)interlace::rl::parse_job_spec(std::string(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
  return 0;
}
