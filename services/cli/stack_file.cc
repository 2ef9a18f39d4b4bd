#include "stack_file.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"

namespace interlace::cli {

std::string default_stack_dir() {
  if (const char* d = std::getenv("INTERLACE_STACK_DIR"); d && *d) return d;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.interlace/stack";
}

absl::StatusOr<StackInfo> read_stack(const std::string& dir) {
  const std::string path = dir + "/stack.json";
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("no local stack in " + dir + " (start one with `interlace up`)");
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError(path + ": not the JSON `interlace up` writes");
  StackInfo s;
  s.dir = dir;
  s.server = j.value("server", "");
  s.redis = j.value("redis", "");
  s.token = j.value("token", "");
  s.gateway = j.value("gateway", "");
  s.controller_pid = j.value("controller_pid", 0);
  s.redis_pid = j.value("redis_pid", 0);
  if (j.contains("runner_pids") && j["runner_pids"].is_array())
    for (const auto& p : j["runner_pids"])
      if (p.is_number_integer()) s.runner_pids.push_back(p.get<int>());
  if (s.server.empty() || s.token.empty()) return absl::DataLossError(path + ": no server or token in it");
  return s;
}

absl::Status write_stack(const StackInfo& s) {
  const std::string path = s.dir + "/stack.json", tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return absl::InternalError("cannot write " + tmp);
    ::chmod(tmp.c_str(), 0600);
    out << nlohmann::json({{"server", s.server},
                           {"redis", s.redis},
                           {"token", s.token},
                           {"gateway", s.gateway},
                           {"controller_pid", s.controller_pid},
                           {"redis_pid", s.redis_pid},
                           {"runner_pids", s.runner_pids}})
               .dump(2)
        << "\n";
    if (!out) return absl::InternalError("cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError("cannot write " + path + ": " + ec.message());
  return absl::OkStatus();
}

void print_stack(const StackInfo& s, const std::string& output) {
  if (output == "json") {
    nlohmann::json j = {{"server", s.server}, {"token", s.token}};
    if (!s.gateway.empty()) j["gateway"] = s.gateway;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("server: %s\ntoken:  %s\n", s.server.c_str(), s.token.c_str());
  if (!s.gateway.empty()) std::printf("gateway: %s (OpenAI API; the same token)\n", s.gateway.c_str());
  std::printf("export INTERLACE_SERVER=%s INTERLACE_TOKEN=%s\n", s.server.c_str(), s.token.c_str());
  if (!s.gateway.empty()) std::printf("export OPENAI_BASE_URL=%s OPENAI_API_KEY=%s\n", s.gateway.c_str(), s.token.c_str());
}

}  // namespace interlace::cli
