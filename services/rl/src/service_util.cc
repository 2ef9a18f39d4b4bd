#include "interlace/rl/service_util.h"

#include <atomic>
#include <filesystem>

#include "interlace/core/file_util.h"
#include "interlace/rl/run_layout.h"
#include "spdlog/spdlog.h"

namespace interlace::rl {

FrameRejects::FrameRejects(metrics::Registry& registry, std::string service, const std::vector<std::string>& ports)
    : registry_(registry), service_(std::move(service)) {
  for (const std::string& port : ports)
    registry_.counter("interlace_frames_rejected_total", "frames that failed to decode or check, dropped", {{"port", port}});
}

void FrameRejects::reject(const std::string& port, const std::string& why) {
  registry_.counter("interlace_frames_rejected_total", "frames that failed to decode or check, dropped",
                    {{"port", port}})
      .inc();
  PortState& p = ports_[port];
  ++p.since_log;
  const auto now = std::chrono::steady_clock::now();
  if (now - p.last_log >= std::chrono::seconds(1)) {
    spdlog::warn("{}: dropped {} bad frame(s) on the {} port; last: {}", service_, p.since_log, port, why);
    p.since_log = 0;
    p.last_log = now;
  }
}

bool send_routed(zmq::socket_t& router, const zmq::message_t& identity, std::string_view frame) {
  if (!router.send(zmq::buffer(identity.data(), identity.size()), zmq::send_flags::sndmore | zmq::send_flags::dontwait))
    return false;
  return router.send(zmq::buffer(frame.data(), frame.size()), zmq::send_flags::dontwait).has_value();
}

bool send_routed_shared(zmq::socket_t& router, const zmq::message_t& identity, std::string_view frame,
                        const std::shared_ptr<const void>& owner) {
  if (!router.send(zmq::buffer(identity.data(), identity.size()), zmq::send_flags::sndmore | zmq::send_flags::dontwait))
    return false;
  // ZeroMQ calls the free function from its I/O thread once the message is
  // sent or dropped; it releases our reference there. The hand-off goes
  // through libzmq's own lock-free queue, which ThreadSanitizer cannot see (it
  // reported this delete as racing with the construction): the release store
  // and acquire load make the ordering explicit.
  struct Hold {
    std::shared_ptr<const void> owner;
    std::atomic<bool> handed_over{false};
  };
  auto* hold = new Hold{owner};
  hold->handed_over.store(true, std::memory_order_release);
  zmq::message_t message(
      const_cast<char*>(frame.data()), frame.size(),
      [](void*, void* h) {
        auto* held = static_cast<Hold*>(h);
        (void)held->handed_over.load(std::memory_order_acquire);
        delete held;
      },
      hold);
  return router.send(message, zmq::send_flags::dontwait).has_value();
}

zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type, int64_t max_message_bytes) {
  zmq::socket_t s(ctx, type);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::maxmsgsize, max_message_bytes);
  s.set(zmq::sockopt::sndhwm, 100000);
  s.set(zmq::sockopt::rcvhwm, 100000);
  // No router_handover: peers do not choose their routing ids (a peer that
  // named itself worker-0 took over that worker's connection); the learner
  // knows a peer by its CURVE key's name instead.
  return s;
}

void save_final_metrics(const metrics::Registry& registry, const std::string& run_dir, const std::string& service) {
  std::error_code ec;
  std::filesystem::create_directories(run_path(run_dir, "metrics"), ec);
  const std::string path = run_path(run_dir, "metrics/" + service + ".prom");
  if (absl::Status s = core::write_file(path, registry.render()); !s.ok())
    spdlog::warn("{}: could not keep its last metrics: {}", service, std::string(s.message()));
}

}  // namespace interlace::rl
