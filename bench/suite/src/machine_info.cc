#include "interlace/bench/machine_info.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <thread>
#include <vector>

namespace interlace::bench {

namespace {

std::string cpuinfo_field(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) return line.substr(pos + 2);
    }
  }
  return "unknown";
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

nlohmann::json machine_info() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  std::string flags = cpuinfo_field("flags");
  std::vector<std::string> isa;
  for (const char* f : {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"})
    if ((" " + flags + " ").find(std::string(" ") + f + " ") != std::string::npos) isa.push_back(f);
  std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return {{"cpu", cpuinfo_field("model name")},
          {"logical_cores", std::thread::hardware_concurrency()},
          {"omp_threads", omp_get_max_threads()},
          {"memory_gib", double(pages) * double(page) / (1024.0 * 1024 * 1024)},
          {"isa", isa},
          {"hostname", host},
          {"date", date}};
}

double measure_copy_bandwidth_bytes_per_s() {
  const size_t n = size_t{256} << 20;  // 256 MiB each way
  std::vector<char> a(n, 1), b(n, 0);
  std::vector<double> runs;
  for (int rep = 0; rep < 7; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const size_t chunk = n / nt, begin = t * chunk, end = t + 1 == nt ? n : begin + chunk;
      std::memcpy(b.data() + begin, a.data() + begin, end - begin);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0) runs.push_back(2.0 * double(n) / s);  // first run warms the pages
  }
  return median(runs);
}

}  // namespace interlace::bench
