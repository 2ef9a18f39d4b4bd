#include <CivetServer.h>

#include <map>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "interlace/metrics/registry.h"

namespace interlace::metrics {

struct MetricsExposer::Callbacks {
  CivetCallbacks civet{};
};

namespace {

// civetweb calls http_error before every 4xx/5xx it sends (a malformed or
// oversized request, an unknown path, a request not read in time); it is
// counted, then civetweb answers as usual. The exposer gives civetweb no
// pointer of ours to find the counter with, so the listening port does.
std::mutex g_mu;
std::map<int, Value*> g_rejected_by_port;

int count_rejected(mg_connection* conn, int status, const char*) {
  if (status < 400) return 1;
  const mg_request_info* info = mg_get_request_info(conn);
  std::lock_guard<std::mutex> lock(g_mu);
  if (auto it = g_rejected_by_port.find(info ? info->server_port : -1); it != g_rejected_by_port.end())
    it->second->inc();
  return 1;  // civetweb's own error page
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::start(Registry& registry, const std::string& host,
                                                                       int port) {
  std::unique_ptr<MetricsExposer> e(new MetricsExposer());
  e->callbacks_ = std::make_unique<Callbacks>();
  Value& rejected = registry.counter("interlace_http_requests_rejected_total",
                                     "HTTP requests to the metrics port that were malformed, too large, too slow "
                                     "or for an unknown path");
  e->callbacks_->civet.http_error = count_rejected;
  try {
    e->exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", absl::StrCat(host, ":", port), "num_threads",
                                 std::to_string(kThreads), "request_timeout_ms", std::to_string(kRequestTimeoutMs)},
        &e->callbacks_->civet);
  } catch (const std::exception& ex) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot serve on ", host, ":", port, " (", ex.what(), "); is the port taken?"));
  }
  e->exposer_->RegisterCollectable(registry.collectable());
  const std::vector<int> ports = e->exposer_->GetListeningPorts();
  if (ports.empty()) return absl::InternalError("metrics: the exposer reports no listening port");
  e->port_ = ports.front();
  std::lock_guard<std::mutex> lock(g_mu);
  g_rejected_by_port[e->port_] = &rejected;
  return e;
}

MetricsExposer::~MetricsExposer() {
  exposer_.reset();  // no callback runs after this
  std::lock_guard<std::mutex> lock(g_mu);
  g_rejected_by_port.erase(port_);
}

}  // namespace interlace::metrics
