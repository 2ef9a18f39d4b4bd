// Small pieces the services share: counting and rate-limited logging of
// rejected frames, sending to a ROUTER peer, seeds.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "interlace/metrics/registry.h"

namespace interlace::rl {

// interlace_frames_rejected_total{port}, and one log line per port per second
// at most (with how many were dropped since the last line and the last reason).
// Every port's series exists from the start at 0: a series that appears only
// with the first reject is invisible to rate() and to alerts until then.
class FrameRejects {
 public:
  FrameRejects(metrics::Registry& registry, std::string service, const std::vector<std::string>& ports);
  void reject(const std::string& port, const std::string& why);

 private:
  struct PortState {
    int64_t since_log = 0;
    std::chrono::steady_clock::time_point last_log{};
  };
  metrics::Registry& registry_;
  std::string service_;
  std::map<std::string, PortState> ports_;
};

// Sends [identity][frame] on a ROUTER; false if it could not be queued.
bool send_routed(zmq::socket_t& router, const zmq::message_t& identity, std::string_view frame);
// The same without copying `frame`: the message points into it and keeps
// `owner` alive until ZeroMQ has sent it. However many requests for it are
// queued (a peer that asks and never reads), the bytes are held once.
bool send_routed_shared(zmq::socket_t& router, const zmq::message_t& identity, std::string_view frame,
                        const std::shared_ptr<const void>& owner);

// A ROUTER or DEALER with the options every service socket uses: no linger on
// close, bounded queues, and a hard cap on incoming message size (ZeroMQ drops
// the connection of a peer that exceeds it, before allocating).
zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type, int64_t max_message_bytes);

// A service's last metrics, kept after it exits: RUN/metrics/SERVICE.prom in
// the text format (a short job's worker can end before Prometheus ever
// scrapes it; node_exporter's textfile collector can serve these files).
void save_final_metrics(const metrics::Registry& registry, const std::string& run_dir, const std::string& service);

}  // namespace interlace::rl
