#include "interlace/control/worker_registry.h"

#include <unistd.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "interlace/control/job_store.h"
#include "nlohmann/json.hpp"

namespace interlace::control {

using nlohmann::json;

std::string this_host() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

absl::Status WorkerRegistry::heartbeat(const WorkerEntry& e, int64_t ttl_ms) {
  if (e.name.empty() || e.name.size() > kMaxNameBytes) return absl::InvalidArgumentError("a worker needs a name of 1..128 bytes");
  json j = {{"name", e.name}, {"kind", e.kind},   {"host", e.host},         {"pid", e.pid},
                  {"state", e.state}, {"job", e.job}, {"started_ms", e.started_ms}, {"seen_ms", e.seen_ms},
                  {"running", e.running}, {"waiting", e.waiting}, {"cache_usage", e.cache_usage}};
  if (!e.endpoint.empty()) j["endpoint"] = e.endpoint;
  auto set = redis_.command({"SET", key("worker:" + e.name), j.dump(), "PX", std::to_string(std::max<int64_t>(ttl_ms, 1))});
  if (!set.ok()) return set.status();
  return redis_.command({"SADD", key("workers"), e.name}).status();
}

absl::Status WorkerRegistry::leave(const std::string& name) {
  auto del = redis_.command({"DEL", key("worker:" + name)});
  if (!del.ok()) return del.status();
  return redis_.command({"SREM", key("workers"), name}).status();
}

namespace {

// An entry as a heartbeat wrote it; nothing for one that is not ours to
// interpret (not JSON, or a field of the wrong type: its next heartbeat
// rewrites it, or it lapses).
std::optional<WorkerEntry> entry_from_json(const std::string& text, const std::string& name) {
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  try {
    WorkerEntry e;
    e.name = j.value("name", name);
    e.kind = j.value("kind", "runner");
    e.host = j.value("host", "");
    e.pid = j.value("pid", int64_t{0});
    e.state = j.value("state", "idle");
    e.job = j.value("job", "");
    e.started_ms = j.value("started_ms", int64_t{0});
    e.seen_ms = j.value("seen_ms", int64_t{0});
    e.running = j.value("running", int64_t{-1});
    e.waiting = j.value("waiting", int64_t{-1});
    e.cache_usage = j.value("cache_usage", -1.0);
    e.endpoint = j.value("endpoint", "");
    return e;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

}  // namespace

absl::StatusOr<std::vector<WorkerEntry>> WorkerRegistry::list() {
  auto names = redis_.command({"SMEMBERS", key("workers")});
  if (!names.ok()) return names.status();
  std::vector<WorkerEntry> out;
  for (const RedisReply& n : names->elements) {
    auto v = redis_.command({"GET", key("worker:" + n.str)});
    if (!v.ok()) return v.status();
    if (v->is_nil()) {  // lapsed: forget the name
      (void)redis_.command({"SREM", key("workers"), n.str});
      continue;
    }
    if (auto e = entry_from_json(v->str, n.str)) out.push_back(std::move(*e));
  }
  std::sort(out.begin(), out.end(), [](const WorkerEntry& a, const WorkerEntry& b) { return a.name < b.name; });
  return out;
}

}  // namespace interlace::control
