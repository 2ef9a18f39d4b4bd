// Safetensors bytes as a worker receives them from the learner (and as a
// checkpoint file is read): any bytes parse to tensors or an error.
#include <cstdint>
#include <string>

#include "interlace/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)interlace::model::parse_safetensors_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  return 0;
}
