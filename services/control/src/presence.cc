#include "interlace/control/presence.h"

#include <unistd.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "interlace/metrics/registry.h"
#include "spdlog/spdlog.h"

namespace interlace::control {

Presence::Presence(RedisAddress redis, std::string prefix, std::string name, std::string kind,
                   std::function<void(WorkerEntry&)> load)
    : redis_(std::move(redis)),
      prefix_(std::move(prefix)),
      name_(std::move(name)),
      kind_(std::move(kind)),
      load_(std::move(load)),
      thread_([this] { loop(); }) {}

Presence::~Presence() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Presence::set_job(const std::string& job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = job;
  }
  wake_.notify_all();
}

int64_t Presence::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Presence::loop() {
  RedisOptions ro;
  ro.reconnect_for = std::chrono::milliseconds(2000);  // a missed beat is fine; the next one retries
  std::unique_ptr<RedisClient> redis;
  WorkerEntry e{.name = name_, .kind = kind_, .host = this_host(), .pid = ::getpid(), .started_ms = now_ms()};
  std::unique_lock<std::mutex> lock(mu_);
  while (!done_) {
    e.job = job_;
    e.state = job_.empty() ? "idle" : "busy";
    e.seen_ms = now_ms();
    lock.unlock();
    if (load_) load_(e);
    if (!redis) {
      auto r = RedisClient::connect(redis_, ro);
      if (r.ok()) redis = std::move(*r);
    }
    if (redis) {
      if (absl::Status s = WorkerRegistry(*redis, prefix_).heartbeat(e, kTtlMs); !s.ok())
        spdlog::warn("{} {}: heartbeat: {}", kind_, name_, std::string(s.message()));
      else
        last_beat_ms_ = now_ms();
    }
    lock.lock();
    wake_.wait_for(lock, std::chrono::milliseconds(kEveryMs), [&] { return done_ || e.job != job_; });
  }
  lock.unlock();
  if (redis) (void)WorkerRegistry(*redis, prefix_).leave(name_);
}

HealthEndpoint::HealthEndpoint(const Presence& presence, metrics::Registry& registry)
    : server_(std::make_unique<httplib::Server>()) {
  server_->Get("/healthz", [&presence](const httplib::Request&, httplib::Response& res) {
    const bool ok = presence.fresh();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "{\"ok\":true}" : "{\"ok\":false,\"error\":\"no heartbeat into Redis for 10 s\"}",
                    "application/json");
  });
  server_->Get("/metrics", [&registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry.render(), "text/plain; version=0.0.4");
  });
}

absl::Status HealthEndpoint::start(const std::string& role, const std::string& host, int port) {
  if (!server_->bind_to_port(host, port))
    return absl::UnavailableError(absl::StrCat(role, ": cannot serve /healthz on ", host, ":", port,
                                               " (taken, or not an address of this machine)"));
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return absl::OkStatus();
}

HealthEndpoint::~HealthEndpoint() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace interlace::control
