#include "interlace/control/redis_client.h"

#include <cstdlib>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace interlace::control {
namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

RedisReply convert(const redisReply& r) {
  RedisReply out;
  switch (r.type) {
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      out.type = r.type == REDIS_REPLY_STRING ? RedisReply::Type::kString : RedisReply::Type::kStatus;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      for (size_t i = 0; i < r.elements; ++i) out.elements.push_back(convert(*r.element[i]));
      break;
    default:
      break;  // nil
  }
  return out;
}

// The scripts' SHA1s, by script text: shared by every client of the process
// (a script's SHA1 does not depend on the server).
std::map<std::string, std::string>& script_shas() {
  static std::map<std::string, std::string> shas;
  return shas;
}
std::mutex& script_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

absl::StatusOr<RedisAddress> parse_redis_address(std::string_view input) {
  const std::string text(input);
  std::string_view rest = input;
  if (rest.substr(0, 8) == "redis://") rest.remove_prefix(8);
  const size_t colon = rest.rfind(':');
  RedisAddress a;
  if (colon == std::string_view::npos || colon == 0)
    return absl::InvalidArgumentError(absl::StrCat("Redis address '", text, "': expected HOST:PORT, e.g. 127.0.0.1:6379"));
  a.host = std::string(rest.substr(0, colon));
  const std::string_view port = rest.substr(colon + 1);
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), a.port);
  if (ec != std::errc() || end != port.data() + port.size() || a.port <= 0 || a.port > 65535)
    return absl::InvalidArgumentError(absl::StrCat("Redis address '", text, "': the port must be a number in 1..65535"));
  return a;
}

absl::StatusOr<std::unique_ptr<RedisClient>> RedisClient::connect(const RedisAddress& address, RedisOptions options) {
  std::unique_ptr<RedisClient> c(new RedisClient(address, options));
  if (absl::Status s = c->open(); !s.ok()) return s;
  return c;
}

absl::StatusOr<std::unique_ptr<RedisClient>> RedisClient::connect_waiting(const RedisAddress& address,
                                                                          RedisOptions options) {
  std::unique_ptr<RedisClient> c(new RedisClient(address, options));
  if (absl::Status s = c->open(); !s.ok()) {
    if (absl::IsPermissionDenied(s)) return s;  // waiting will not fix a password
    if (absl::Status w = c->reconnect_with_backoff(std::string(s.message())); !w.ok()) return w;
    c->reconnects_ = 0;  // it was never connected
  }
  return c;
}

RedisClient::~RedisClient() {
  if (context_) redisFree(context_);
}

RedisAddress with_password_from_env(RedisAddress address) {
  const char* pw = std::getenv("INTERLACE_REDIS_PASSWORD");
  if (pw && *pw) address.password = pw;
  return address;
}

absl::Status RedisClient::open() {
  if (context_) redisFree(context_);
  context_ = redisConnectWithTimeout(address_.host.c_str(), address_.port, to_timeval(options_.timeout));
  if (!context_ || context_->err) {
    const std::string why = context_ ? context_->errstr : "out of memory";
    if (context_) redisFree(context_);
    context_ = nullptr;
    return absl::UnavailableError(absl::StrCat("no Redis at ", address_.to_string(), ": ", why,
                                               " (start one with `redis-server --port ", address_.port,
                                               "`, or pass the address of yours)"));
  }
  redisSetTimeout(context_, to_timeval(options_.timeout));
  redisEnableKeepAlive(context_);
  if (!address_.password.empty()) {
    auto auth = try_command({"AUTH", address_.password});
    if (!auth.ok()) {
      redisFree(context_);
      context_ = nullptr;
      if (absl::IsUnavailable(auth.status())) return auth.status();
      return absl::PermissionDeniedError(absl::StrCat("Redis at ", address_.to_string(), " refused the password ",
                                                      "($INTERLACE_REDIS_PASSWORD): ", auth.status().message()));
    }
  }
  // Connected is not answering: a server still loading its AOF says LOADING.
  auto pong = try_command({"PING"});
  if (!pong.ok()) {
    redisFree(context_);
    context_ = nullptr;
    if (std::string(pong.status().message()).find("NOAUTH") != std::string::npos)
      return absl::PermissionDeniedError(absl::StrCat("Redis at ", address_.to_string(),
                                                      " needs a password: set INTERLACE_REDIS_PASSWORD"));
    return absl::UnavailableError(absl::StrCat("Redis at ", address_.to_string(), " does not answer PING: ",
                                               pong.status().message()));
  }
  return absl::OkStatus();
}

absl::Status RedisClient::reconnect_with_backoff(const std::string& why) {
  const auto deadline = std::chrono::steady_clock::now() + options_.reconnect_for;
  auto backoff = options_.first_backoff;
  spdlog::warn("redis {}: {}; reconnecting (for up to {} s)", address_.to_string(), why,
               options_.reconnect_for.count() / 1000.0);
  absl::Status last;
  for (int attempt = 1;; ++attempt) {
    last = open();
    if (last.ok()) {
      ++reconnects_;
      spdlog::info("redis {}: reconnected after {} attempt(s)", address_.to_string(), attempt);
      return last;
    }
    if (absl::IsPermissionDenied(last)) return last;
    if (std::chrono::steady_clock::now() + backoff > deadline) break;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
  return absl::UnavailableError(absl::StrCat("lost Redis at ", address_.to_string(), " (", why,
                                             ") and could not reconnect: ", last.message()));
}

absl::StatusOr<RedisReply> RedisClient::try_command(const std::vector<std::string>& args) {
  if (!context_) return absl::UnavailableError("not connected");
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* reply = static_cast<redisReply*>(redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lens.data()));
  if (!reply) {
    const std::string why = context_->errstr;
    redisFree(context_);  // a context with an error cannot be used again
    context_ = nullptr;
    return absl::UnavailableError(why);
  }
  std::unique_ptr<redisReply, void (*)(void*)> owned(reply, freeReplyObject);
  if (reply->type == REDIS_REPLY_ERROR) {
    const std::string message(reply->str, reply->len);
    // A server loading its data set answers, but not yet: as if it were away.
    if (message.rfind("LOADING", 0) == 0) return absl::UnavailableError(message);
    return absl::FailedPreconditionError(message);
  }
  return convert(*reply);
}

absl::StatusOr<RedisReply> RedisClient::command(const std::vector<std::string>& args) {
  auto r = try_command(args);
  if (!absl::IsUnavailable(r.status())) return r;
  if (absl::Status s = reconnect_with_backoff(std::string(r.status().message())); !s.ok()) return s;
  return try_command(args);
}

absl::StatusOr<RedisReply> RedisClient::eval(const std::string& script, const std::vector<std::string>& keys,
                                             const std::vector<std::string>& args) {
  std::string sha;
  {
    std::lock_guard lock(script_mutex());
    sha = script_shas()[script];
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (sha.empty()) {
      auto loaded = command({"SCRIPT", "LOAD", script});
      if (!loaded.ok()) return loaded.status();
      sha = loaded->str;
      std::lock_guard lock(script_mutex());
      script_shas()[script] = sha;
    }
    std::vector<std::string> argv = {"EVALSHA", sha, std::to_string(keys.size())};
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = command(argv);
    // A restarted server has forgotten its scripts: load it again, once.
    if (!r.ok() && std::string(r.status().message()).rfind("NOSCRIPT", 0) == 0) {
      sha.clear();
      continue;
    }
    return r;
  }
  return absl::InternalError("Redis keeps forgetting a script just loaded");
}

}  // namespace interlace::control
