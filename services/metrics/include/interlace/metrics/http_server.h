// Serves GET /metrics (the registry's text) over HTTP/1.0 on a background
// thread. Anything else gets 404/400/405; a request that is malformed, too
// large or too slow is answered (or dropped) and counted, and the server goes
// on. Connections are served side by side (one thread, poll), each with a 2 s
// deadline, at most 256 open: an idle client never delays a scrape.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"
#include "interlace/metrics/registry.h"

namespace interlace::metrics {

struct RequestLine {
  std::string method, path;
};
// The method and path of an HTTP/1.x request's first line, or why not.
absl::StatusOr<RequestLine> parse_request_line(std::string_view request);

class HttpServer {
 public:
  // Binds host:port (port 0 picks a free one, see port()).
  static absl::StatusOr<std::unique_ptr<HttpServer>> start(Registry& registry, const std::string& host, int port);
  ~HttpServer();
  int port() const { return port_; }

 private:
  HttpServer(Registry& registry, int fd, int port);
  void serve();
  void handle(int client, const std::string& request);
  Registry& registry_;
  int fd_;
  int port_;
  std::atomic<bool> stop_{false};
  Value& rejected_;
  std::thread thread_;
};

}  // namespace interlace::metrics
