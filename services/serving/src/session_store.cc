#include "interlace/serving/session_store.h"

#include "spdlog/spdlog.h"

namespace interlace::serving {

std::optional<std::string> MemorySessionStore::get(const std::string& session) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pins_.find(session);
  if (it == pins_.end()) return std::nullopt;
  return it->second;
}

void MemorySessionStore::set(const std::string& session, const std::string& endpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  if (pins_.insert_or_assign(session, endpoint).second) order_.push_back(session);
  while (pins_.size() > max_) {
    pins_.erase(order_.front());
    order_.pop_front();
  }
}

absl::StatusOr<std::unique_ptr<RedisSessionStore>> RedisSessionStore::connect(const control::RedisAddress& address,
                                                                              std::string prefix, std::chrono::seconds ttl) {
  // Wait for a Redis that is starting, as every service does; then a connection with a short timeout and no
  // reconnecting for long, so a request waits for its pin at most a moment when Redis is away.
  if (auto waited = control::RedisClient::connect_waiting(address); !waited.ok()) return waited.status();
  auto redis = control::RedisClient::connect(address, {.timeout = std::chrono::milliseconds(250),
                                                       .reconnect_for = std::chrono::milliseconds(250)});
  if (!redis.ok()) return redis.status();
  return std::unique_ptr<RedisSessionStore>(new RedisSessionStore(std::move(*redis), std::move(prefix), ttl));
}

void RedisSessionStore::failed(const absl::Status& status) {
  paused_until_ = std::chrono::steady_clock::now() + kPause;
  spdlog::warn("gateway: session pins unavailable ({}); routing without them for {} s", std::string(status.message()), kPause.count());
}

std::optional<std::string> RedisSessionStore::get(const std::string& session) {
  std::lock_guard<std::mutex> lock(mu_);
  if (paused(std::chrono::steady_clock::now())) {
    ++errors_;
    return std::nullopt;
  }
  // GETEX renews the TTL: a session in use never lapses.
  auto r = redis_->command({"GETEX", prefix_ + ":session:" + session, "EX", std::to_string(ttl_.count())});
  if (!r.ok()) {
    ++errors_;
    failed(r.status());
    return std::nullopt;
  }
  if (r->type != control::RedisReply::Type::kString) return std::nullopt;
  return r->str;
}

void RedisSessionStore::set(const std::string& session, const std::string& endpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  if (paused(std::chrono::steady_clock::now())) return;  // counted by the get that found it down
  auto r = redis_->command({"SET", prefix_ + ":session:" + session, endpoint, "EX", std::to_string(ttl_.count())});
  if (!r.ok()) {
    ++errors_;
    failed(r.status());
  }
}

}  // namespace interlace::serving
