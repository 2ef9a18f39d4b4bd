// What a benchmark ran on, and the machine's measured memory bandwidth.
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace interlace::bench {

// CPU model, cores, OpenMP threads, memory, ISA flags, hostname, date.
nlohmann::json machine_info();

// Multi-threaded memcpy of a buffer far larger than the caches, in the STREAM
// convention (bytes read + bytes written per second), median of several runs.
double measure_copy_bandwidth_bytes_per_s();

}  // namespace interlace::bench
