// A connection to a Redis server (hiredis, Debian's libhiredis-dev): commands
// as argument vectors (binary-safe, no format strings), replies as values,
// errors as absl::Status with the server's address in them. When the server
// goes away (restarted, a network blip), a command reconnects with back-off
// until `reconnect_for` runs out, logs that it did, and is sent again: the
// control plane's state lives in Redis, and every component must ride out a
// Redis restart. One connection is used by one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct redisContext;

namespace interlace::control {

struct RedisAddress {
  std::string host = "127.0.0.1";
  int port = 6379;
  // Sent with AUTH on every (re)connect when set; never printed. Services
  // take it from $INTERLACE_REDIS_PASSWORD (redis_password_from_env), not a
  // flag, so it stays out of `ps`.
  std::string password;
  std::string to_string() const { return host + ":" + std::to_string(port); }
};

// `address` with the password from $INTERLACE_REDIS_PASSWORD, if set.
RedisAddress with_password_from_env(RedisAddress address);

// "HOST:PORT" or "redis://HOST:PORT".
absl::StatusOr<RedisAddress> parse_redis_address(std::string_view text);

struct RedisReply {
  enum class Type { kNil, kInteger, kString, kStatus, kArray };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;  // kString, kStatus
  std::vector<RedisReply> elements;  // kArray
  bool is_nil() const { return type == Type::kNil; }
};

struct RedisOptions {
  std::chrono::milliseconds timeout{2000};           // connect and each command
  std::chrono::milliseconds reconnect_for{30000};    // how long a command keeps reconnecting
  std::chrono::milliseconds first_backoff{50};       // doubled after each failed attempt, up to 2 s
};

class RedisClient {
 public:
  // Fails (Unavailable, naming the address) when nothing answers a PING there.
  static absl::StatusOr<std::unique_ptr<RedisClient>> connect(const RedisAddress& address, RedisOptions options = {});
  // The same, but a server that is not up yet (starting, loading its AOF) is
  // waited for, with back-off, for up to options.reconnect_for: what a
  // service does at its start.
  static absl::StatusOr<std::unique_ptr<RedisClient>> connect_waiting(const RedisAddress& address,
                                                                      RedisOptions options = {});
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Sends one command. A Redis error reply becomes FailedPrecondition with the
  // server's message (a script's error included); a lost connection is
  // retried as above, then Unavailable.
  absl::StatusOr<RedisReply> command(const std::vector<std::string>& args);
  // EVALSHA of `script` (loaded on first use, and again after a server restart
  // that forgot it), with its keys and arguments.
  absl::StatusOr<RedisReply> eval(const std::string& script, const std::vector<std::string>& keys,
                                  const std::vector<std::string>& args);

  const RedisAddress& address() const { return address_; }
  int64_t reconnects() const { return reconnects_; }

 private:
  RedisClient(RedisAddress address, RedisOptions options) : address_(std::move(address)), options_(options) {}
  absl::Status open();  // one attempt
  absl::Status reconnect_with_backoff(const std::string& why);
  // One try: OK with the reply, FailedPrecondition for an error reply, Unavailable when the connection broke.
  absl::StatusOr<RedisReply> try_command(const std::vector<std::string>& args);

  RedisAddress address_;
  RedisOptions options_;
  redisContext* context_ = nullptr;
  int64_t reconnects_ = 0;
};

}  // namespace interlace::control
