// The first line of an HTTP request to a /metrics port.
#include <cstdint>
#include <string_view>

#include "interlace/metrics/http_server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)interlace::metrics::parse_request_line(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
