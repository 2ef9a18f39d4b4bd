// The controller: the control plane's HTTP/JSON API (cpp-httplib, Debian's
// libcpp-httplib-dev) over the job store. Stateless: everything it knows is
// in Redis, so any number of replicas can answer and a restarted one carries
// on. Every route but /healthz, /readyz and /metrics needs `Authorization: Bearer
// TOKEN`; a missing or wrong token gets 401 with no detail.
//
//   GET  /healthz                    200 while the process serves
//   GET  /readyz                     200 when Redis answers, else 503
//   GET  /metrics                    Prometheus text (no token): requests by route and code,
//                                    jobs queued/running, runners busy/idle, Redis up and errors
//   POST /v1/jobs                    {"kind": "train"|"rollout", "name", "spec": YAML text,
//                                     "request_id"} -> 201 {"id", "state"}
//   GET  /v1/jobs?limit=N            {"jobs": [job...]}, newest first
//   GET  /v1/jobs/ID                 job
//   POST /v1/jobs/ID/cancel          job (409 if it has ended)
//   GET  /v1/jobs/ID/events?after=E&count=N   {"events": [{"id", "type", "message"}...]}
//   GET  /v1/workers                 {"workers": [{"name", "kind", "host", "pid", "state", "job",
//                                     "started_ms", "seen_ms"}...]}: the runners whose heartbeat is live
//   GET  /v1/jobs/ID/results         the results file (rollout: trajectories JSONL;
//                                    train: the final model as a tar); 404 until there are any
//
// Bad input (malformed JSON, unknown fields, a spec the job-spec parser
// refuses, an oversized body, an unknown id) gets a 4xx with {"error": what
// was wrong}; nothing is stored.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "interlace/control/job_store.h"
#include "interlace/control/redis_client.h"
#include "nlohmann/json.hpp"

namespace interlace::control {

struct ControllerOptions {
  RedisAddress redis;
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8470;                 // 0: any free port (see Controller::port())
  std::string token;               // required
  std::string prefix = "interlace";
};

nlohmann::json job_json(const JobRecord& job);

class Controller {
 public:
  // Binds and serves on a background thread. Fails when the token is empty,
  // the port is taken, or Redis does not answer.
  static absl::StatusOr<std::unique_ptr<Controller>> start(const ControllerOptions& options);
  ~Controller();
  int port() const;
  void stop();
  // Blocks until stop() (from a signal handler thread, say).
  void wait();

 private:
  struct Impl;
  explicit Controller(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace interlace::control
