#include "interlace/rl/run_layout.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "nlohmann/json.hpp"

namespace interlace::rl {

std::string Endpoints::tcp(int port) const { return absl::StrCat("tcp://", host, ":", port); }

std::string run_path(const std::string& run_dir, const std::string& name) {
  return (std::filesystem::path(run_dir) / name).string();
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded()) rows.push_back(std::move(j));
  }
  return rows;
}

absl::StatusOr<std::vector<nlohmann::json>> keep_jsonl_rows(const std::string& path,
                                                            const std::function<bool(const nlohmann::json&)>& keep) {
  std::vector<nlohmann::json> kept;
  std::string text;
  for (nlohmann::json& row : read_jsonl(path))
    if (keep(row)) {
      text += row.dump() + "\n";
      kept.push_back(std::move(row));
    }
  if (absl::Status s = core::write_file(path, text); !s.ok()) return s;
  return kept;
}

absl::Status write_endpoints(const std::string& run_dir, const Endpoints& e) {
  nlohmann::json j = {{"host", e.host},
                      {"trajectories", e.trajectories},
                      {"tasks", e.tasks},
                      {"weights", e.weights},
                      {"learner_metrics", e.learner_metrics},
                      {"worker_metrics", e.worker_metrics},
                      {"initial_model", e.initial_model}};
  return core::write_file(run_path(run_dir, "endpoints.json"), j.dump(2) + "\n");
}

absl::StatusOr<Endpoints> read_endpoints(const std::string& run_dir) {
  const std::string path = run_path(run_dir, "endpoints.json");
  auto text = core::read_file(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat(path, ": missing; is this a run directory written by `interlace run`?"));
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  try {
    Endpoints e;
    e.host = j.at("host").get<std::string>();
    e.trajectories = j.at("trajectories").get<int>();
    e.tasks = j.at("tasks").get<int>();
    e.weights = j.at("weights").get<int>();
    e.learner_metrics = j.at("learner_metrics").get<int>();
    e.worker_metrics = j.at("worker_metrics").get<std::vector<int>>();
    e.initial_model = j.at("initial_model").get<std::string>();
    return e;
  } catch (const nlohmann::json::exception& ex) {
    return absl::DataLossError(absl::StrCat(path, ": ", ex.what()));
  }
}

absl::StatusOr<std::vector<int>> pick_free_ports(const std::string& host, int n, int first) {
  std::vector<int> fds, ports;
  absl::Status error;
  if (first > 0 && first + n - 1 > 65535)
    return absl::InvalidArgumentError(absl::StrCat("ports ", first, "..", first + n - 1, " go past 65535"));
  for (int i = 0; i < n && error.ok(); ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(first > 0 ? first + i : 0));
    ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      error = first > 0 ? absl::UnavailableError(absl::StrCat("port ", first + i, " on ", host, " is taken (",
                                                              std::strerror(errno), "); pick another --metrics-port"))
                        : absl::UnavailableError(absl::StrCat("cannot find a free port on ", host, ": ",
                                                              std::strerror(errno)));
    } else {
      ports.push_back(ntohs(addr.sin_port));
    }
    if (fd >= 0) fds.push_back(fd);  // held open until all are picked, so they differ
  }
  for (int fd : fds) ::close(fd);
  if (!error.ok()) return error;
  return ports;
}

absl::Status write_prometheus_targets(const std::string& run_dir, const Endpoints& e) {
  auto target = [&](int port, const std::string& service) {
    return nlohmann::json{{"targets", {absl::StrCat(e.host, ":", port)}}, {"labels", {{"service", service}}}};
  };
  nlohmann::json list = nlohmann::json::array({target(e.learner_metrics, "learner")});
  for (size_t i = 0; i < e.worker_metrics.size(); ++i)
    list.push_back(target(e.worker_metrics[i], absl::StrCat("worker-", i)));
  return core::write_file(run_path(run_dir, "prometheus-targets.json"), list.dump(2) + "\n");
}

}  // namespace interlace::rl
