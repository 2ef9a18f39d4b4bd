// Where a conversation's session key (the X-Session-Id header) is pinned: the
// endpoint of the serving worker its turns go to. In memory by default (one
// gateway); in Redis when the gateway is given one, so that every gateway
// replica sends a session's turns to the same worker. Clients choose the
// keys, so both bound what they keep: the memory store by count, Redis by a
// TTL renewed on each use.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "interlace/control/redis_client.h"

namespace interlace::serving {

class SessionStore {
 public:
  virtual ~SessionStore() = default;
  // The endpoint SESSION is pinned to, if any. Called from any thread.
  virtual std::optional<std::string> get(const std::string& session) = 0;
  virtual void set(const std::string& session, const std::string& endpoint) = 0;
  // Requests that found the store unreachable (Redis down): the session went unpinned, the request was still served.
  int64_t errors() const { return errors_; }

 protected:
  std::atomic<int64_t> errors_{0};
};

class MemorySessionStore : public SessionStore {
 public:
  explicit MemorySessionStore(size_t max_sessions = 100000) : max_(max_sessions) {}
  std::optional<std::string> get(const std::string& session) override;
  void set(const std::string& session, const std::string& endpoint) override;

 private:
  const size_t max_;
  std::mutex mu_;
  std::map<std::string, std::string> pins_;
  std::deque<std::string> order_;  // oldest first out
};

// PREFIX:session:KEY -> endpoint, expiring TTL after its last use. One
// connection behind a mutex: a lookup is one round trip on a local network.
// A Redis that does not answer within its short timeout leaves the session
// unpinned (counted) rather than failing the request, and is not asked again
// for a few seconds, so that requests do not queue behind its timeouts.
class RedisSessionStore : public SessionStore {
 public:
  static absl::StatusOr<std::unique_ptr<RedisSessionStore>> connect(const control::RedisAddress& address, std::string prefix,
                                                                     std::chrono::seconds ttl);
  std::optional<std::string> get(const std::string& session) override;
  void set(const std::string& session, const std::string& endpoint) override;

 private:
  RedisSessionStore(std::unique_ptr<control::RedisClient> redis, std::string prefix, std::chrono::seconds ttl)
      : redis_(std::move(redis)), prefix_(std::move(prefix)), ttl_(ttl) {}
  // Whether to skip Redis (it failed less than kPause ago); with mu_ held. On failure: note it.
  bool paused(std::chrono::steady_clock::time_point now) const { return now < paused_until_; }
  void failed(const absl::Status& status);
  static constexpr std::chrono::seconds kPause{5};
  std::mutex mu_;
  std::chrono::steady_clock::time_point paused_until_{};
  std::unique_ptr<control::RedisClient> redis_;
  const std::string prefix_;
  const std::chrono::seconds ttl_;
};

}  // namespace interlace::serving
