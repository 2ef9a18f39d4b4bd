#include "interlace/control/controller.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <regex>
#include <thread>
#include <algorithm>
#include <condition_variable>

#include "absl/strings/str_cat.h"
#include "interlace/control/worker_pool.h"
#include "interlace/control/worker_registry.h"
#include "interlace/metrics/registry.h"
#include "interlace/rl/job_spec.h"
#include "interlace/rl/rollout_job_spec.h"
#include "spdlog/spdlog.h"

namespace interlace::control {
namespace {

using nlohmann::json;

// Redis connections for the server's request threads (a connection serves one
// thread at a time): taken from the free list, made when it is empty.
class RedisPool {
 public:
  RedisPool(RedisAddress address, RedisOptions options) : address_(std::move(address)), options_(options) {}
  struct Lease {
    Lease(RedisPool* p, std::unique_ptr<RedisClient> c) : pool(p), client(std::move(c)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = delete;
    RedisPool* pool;
    std::unique_ptr<RedisClient> client;
    ~Lease() {
      if (client) pool->give_back(std::move(client));
    }
  };
  absl::StatusOr<Lease> take() {
    {
      std::lock_guard lock(mutex_);
      if (!free_.empty()) {
        Lease l(this, std::move(free_.back()));
        free_.pop_back();
        return l;
      }
    }
    auto c = RedisClient::connect(address_, options_);
    if (!c.ok()) return c.status();
    return Lease(this, std::move(*c));
  }

 private:
  void give_back(std::unique_ptr<RedisClient> c) {
    std::lock_guard lock(mutex_);
    free_.push_back(std::move(c));
  }
  RedisAddress address_;
  RedisOptions options_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<RedisClient>> free_;
};

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump() + "\n", "application/json");
}

void error(httplib::Response& res, int status, const std::string& message) { reply(res, status, {{"error", message}}); }

int http_status(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kFailedPrecondition: return 409;
    case absl::StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

// Compares without stopping at the first difference: how long a wrong token
// takes to refuse says nothing about how much of it was right.
bool same_token(const std::string& given, const std::string& expected) {
  unsigned diff = given.size() != expected.size();
  for (size_t i = 0; i < given.size(); ++i) diff |= static_cast<unsigned char>(given[i]) ^
                                                    static_cast<unsigned char>(expected[i % expected.size()]);
  return diff == 0;
}

// The body of POST /v1/jobs as a submission, or what is wrong with it.
absl::StatusOr<Submission> parse_submission(const std::string& body) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the body is not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  Submission s;
  for (const auto& [key, value] : j.items()) {
    if (key != "kind" && key != "name" && key != "spec" && key != "request_id")
      return absl::InvalidArgumentError(absl::StrCat("unknown field '", key, "' (kind, name, spec, request_id)"));
    if (!value.is_string()) return absl::InvalidArgumentError(absl::StrCat("'", key, "' must be a string"));
  }
  auto kind = parse_job_kind(j.value("kind", "train"));
  if (!kind.ok()) return kind.status();
  s.kind = *kind;
  s.name = j.value("name", "");
  s.spec = j.value("spec", "");
  s.request_id = j.value("request_id", "");
  if (s.spec.empty()) return absl::InvalidArgumentError("'spec' (the job spec's YAML text) is missing or empty");
  if (s.kind == JobKind::kTrain) {
    // The learner parses it again where it runs; refused here, nothing is queued.
    auto spec = rl::parse_job_spec(s.spec, "spec");
    if (!spec.ok()) return absl::InvalidArgumentError(std::string(spec.status().message()));
    if (s.name.empty()) s.name = spec->name;
  } else {
    auto spec = rl::parse_rollout_job_spec(s.spec, "spec");
    if (!spec.ok()) return absl::InvalidArgumentError(std::string(spec.status().message()));
    if (s.name.empty()) s.name = spec->name;
  }
  return s;
}

}  // namespace

json job_json(const JobRecord& job) {
  return {{"id", job.id},
          {"name", job.name},
          {"kind", job_kind_name(job.kind)},
          {"state", job_state_name(job.state)},
          {"owner", job.owner},
          {"reason", job.reason},
          {"created_ms", job.created_ms},
          {"started_ms", job.started_ms},
          {"finished_ms", job.finished_ms},
          {"updated_ms", job.updated_ms},
          {"has_results", !job.results.empty()},
          {"step", job.step},
          {"workers_want", job.workers_want},
          {"workers", job.workers},
          {"stats", job.stats},
          {"reward", std::isfinite(job.reward) ? json(job.reward) : json(nullptr)}};
}

constexpr size_t kHttpThreads = 128;
constexpr int kListenBacklog = 1024;

// A request's route as a bounded label value (ids never become labels).
std::string route_label(const std::string& path) {
  static const std::vector<std::pair<std::regex, std::string>> routes = {
      {std::regex("/v1/jobs"), "/v1/jobs"},
      {std::regex("/v1/jobs/[^/]+"), "/v1/jobs/ID"},
      {std::regex("/v1/jobs/[^/]+/(cancel|events|results)"), ""},
      {std::regex("/v1/workers|/healthz|/readyz|/metrics"), ""}};
  for (const auto& [pattern, label] : routes) {
    std::smatch m;
    if (!std::regex_match(path, m, pattern)) continue;
    if (!label.empty()) return label;
    return m.size() > 1 && m[1].matched ? "/v1/jobs/ID/" + m[1].str() : path;
  }
  return "other";
}

struct Controller::Impl {
  ControllerOptions options;
  metrics::Registry metrics;
  RedisPool pool;
  httplib::Server server;
  std::thread thread;
  // The scheduling pass (worker_pool.h) twice a second: pool workers to the
  // jobs that want them. Every replica runs it; the script is atomic.
  std::thread scheduler;
  std::mutex scheduler_mu;
  std::condition_variable scheduler_wake;
  bool stopping = false, scheduler_kicked = false;
  int port = 0;
  int listen_fd = -1;

  // A request waits at most a few seconds for a Redis that went away (then
  // 503): a client retries, and /readyz tells Kubernetes meanwhile.
  explicit Impl(const ControllerOptions& o) : options(o), pool(o.redis, request_redis_options()) {}
  static RedisOptions request_redis_options() {
    RedisOptions r;
    r.reconnect_for = std::chrono::milliseconds(3000);
    return r;
  }

  metrics::Value& redis_up() { return metrics.gauge("interlace_controller_redis_up", "1 when Redis answered this scrape"); }
  metrics::Value& redis_errors() {
    return metrics.counter("interlace_controller_redis_errors_total", "requests that found Redis unreachable");
  }
  void redis_down() {
    redis_up().set(0);
    redis_errors().inc();
  }

  // Runs `body` with a job store on a pooled connection; Redis errors become 503.
  template <class F>
  void with_store(httplib::Response& res, F body) {
    auto lease = pool.take();
    if (!lease.ok()) {
      redis_down();
      return error(res, 503, std::string(lease.status().message()));
    }
    JobStore store(*lease->client, options.prefix);
    body(store);
  }

  // A pass now, not at the next tick: a job was submitted or cancelled here.
  void schedule_soon() {
    {
      std::lock_guard<std::mutex> lock(scheduler_mu);
      scheduler_kicked = true;
    }
    scheduler_wake.notify_all();
  }

  void schedule_loop() {
    std::unique_lock<std::mutex> lock(scheduler_mu);
    for (;;) {
      scheduler_wake.wait_for(lock, std::chrono::milliseconds(500), [&] { return stopping || scheduler_kicked; });
      if (stopping) return;
      scheduler_kicked = false;
      lock.unlock();
      if (auto lease = pool.take(); lease.ok()) {
        auto changes = WorkerPool(*lease->client, options.prefix).schedule();
        if (!changes.ok()) {
          spdlog::warn("controller: scheduling workers: {}", std::string(changes.status().message()));
        } else {
          for (const Assignment& a : *changes) {
            if (a.assigned) spdlog::info("controller: worker {} assigned to job {}", a.worker, a.job);
            else spdlog::info("controller: worker {} taken back from job {}: {}", a.worker, a.job, a.reason);
          }
          metrics.counter("interlace_controller_assignments_total", "pool workers given to jobs").add(
              double(std::count_if(changes->begin(), changes->end(), [](const Assignment& a) { return a.assigned; })));
        }
      }
      lock.lock();
    }
  }

  void routes() {
    metrics::register_build_info(metrics, /*nccl=*/false);  // the controller moves no weights
    metrics.counter("interlace_controller_assignments_total", "pool workers given to jobs");  // at 0 from the start
    redis_errors();  // at 0 from the start: rate() and the alert rule see the first error
    // A kept-alive connection holds one of these threads while its client is
    // idle: with cpp-httplib's default (the core count, at least 8) a burst of
    // 20 clients waited a second for a free one (bench control's p99).
    server.new_task_queue = [] { return new httplib::ThreadPool(kHttpThreads); };
    server.set_keep_alive_timeout(2);
    // Debian's cpp-httplib (0.11) listens with a backlog of 5: a burst of new
    // connections overflowed it and each dropped SYN cost its client a 1 s
    // retransmit. The listening socket is seen here, before bind, and given a
    // real backlog after (listen() again on Linux only changes the backlog).
    server.set_socket_options([this](int fd) {
      httplib::default_socket_options(fd);
      listen_fd = fd;
    });
    server.set_payload_max_length(kMaxSpecBytes + (64 << 10));
    server.set_read_timeout(10);
    server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (req.path == "/healthz" || req.path == "/readyz" || req.path == "/metrics")
        return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      if (auth.rfind("Bearer ", 0) != 0 || !same_token(auth.substr(7), options.token)) {
        error(res, 401, "unauthorized");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.body.empty())
        error(res, res.status, res.status == 413 ? "the body is larger than the 1 MiB a job spec may be"
                               : res.status == 404 ? "no such route (see GET /v1/jobs)"
                                                   : "bad request");
    });
    // Every answered request, by route and status code (bounded labels);
    // counted before the reply is written (the logger runs after: a client
    // could read /metrics before its own request was counted).
    auto requests = [this](const std::string& route, int code) -> metrics::Value& {
      return metrics.counter("interlace_controller_requests_total", "API requests answered, by route and status code",
                             {{"route", route}, {"code", std::to_string(code)}});
    };
    // The API's routes at 0 from the start (other route/code pairs appear with their first request).
    for (const char* route : {"/v1/jobs", "/v1/jobs/ID", "/v1/jobs/ID/cancel", "/v1/jobs/ID/events",
                              "/v1/jobs/ID/results", "/v1/workers"})
      requests(route, 200);
    server.set_post_routing_handler([requests](const httplib::Request& req, httplib::Response& res) {
      requests(route_label(req.path), res.status).inc();
    });
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { reply(res, 200, {{"ok", true}}); });
    // Prometheus text, without a token (as /healthz): counts only, no job contents.
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      if (auto lease = pool.take(); lease.ok()) {
        JobStore store(*lease->client, options.prefix);
        auto counts = store.counts();
        auto workers = WorkerRegistry(*lease->client, options.prefix).list();
        if (counts.ok() && workers.ok()) {
          for (const auto& [state, n] : *counts)
            metrics.gauge("interlace_controller_jobs", "jobs queued and running, now", {{"state", state}}).set(double(n));
          int64_t busy = 0;
          for (const WorkerEntry& w : *workers) busy += w.state == "busy";
          metrics.gauge("interlace_controller_workers", "runners with a live heartbeat, by state", {{"state", "busy"}})
              .set(double(busy));
          metrics.gauge("interlace_controller_workers", "runners with a live heartbeat, by state", {{"state", "idle"}})
              .set(double(workers->size()) - double(busy));
          redis_up().set(1);
        } else {
          redis_down();
        }
      } else {
        redis_down();
      }
      res.set_content(metrics.render(), "text/plain; version=0.0.4");
    });
    server.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      auto lease = pool.take();
      if (!lease.ok()) return error(res, 503, std::string(lease.status().message()));
      auto pong = lease->client->command({"PING"});
      if (!pong.ok()) return error(res, 503, std::string(pong.status().message()));
      reply(res, 200, {{"ok", true}});
    });
    server.Post("/v1/jobs", [this](const httplib::Request& req, httplib::Response& res) {
      auto submission = parse_submission(req.body);
      if (!submission.ok()) return error(res, 400, std::string(submission.status().message()));
      with_store(res, [&](JobStore& store) {
        auto id = store.submit(*submission);
        if (!id.ok()) return error(res, http_status(id.status()), std::string(id.status().message()));
        spdlog::info("controller: {} job {} ({}) queued", job_kind_name(submission->kind), *id, submission->name);
        reply(res, 201, {{"id", *id}, {"state", "queued"}});
        schedule_soon();
      });
    });
    server.Get("/v1/jobs", [this](const httplib::Request& req, httplib::Response& res) {
      int64_t limit = 100;
      if (req.has_param("limit")) {
        const std::string v = req.get_param_value("limit");
        char* end = nullptr;
        limit = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || limit < 1 || limit > 10000)
          return error(res, 400, "limit must be a number in 1..10000");
      }
      with_store(res, [&](JobStore& store) {
        auto jobs = store.list(limit);
        if (!jobs.ok()) return error(res, http_status(jobs.status()), std::string(jobs.status().message()));
        json out = json::array();
        for (const JobRecord& j : *jobs) out.push_back(job_json(j));
        reply(res, 200, {{"jobs", out}});
      });
    });
    server.Get(R"(/v1/jobs/([A-Za-z0-9_.-]{1,64}))", [this](const httplib::Request& req, httplib::Response& res) {
      with_store(res, [&](JobStore& store) {
        auto job = store.get(req.matches[1]);
        if (!job.ok()) return error(res, http_status(job.status()), std::string(job.status().message()));
        reply(res, 200, job_json(*job));
      });
    });
    server.Post(R"(/v1/jobs/([A-Za-z0-9_.-]{1,64})/cancel)", [this](const httplib::Request& req, httplib::Response& res) {
      with_store(res, [&](JobStore& store) {
        auto job = store.transition(req.matches[1], JobState::kCancelled, "cancelled by a user");
        if (!job.ok()) return error(res, http_status(job.status()), std::string(job.status().message()));
        spdlog::info("controller: job {} cancelled", job->id);
        reply(res, 200, job_json(*job));
        schedule_soon();
      });
    });
    server.Get("/v1/workers", [this](const httplib::Request&, httplib::Response& res) {
      auto lease = pool.take();
      if (!lease.ok()) return error(res, 503, std::string(lease.status().message()));
      auto workers = WorkerRegistry(*lease->client, options.prefix).list();
      if (!workers.ok()) return error(res, http_status(workers.status()), std::string(workers.status().message()));
      json out = json::array();
      for (const WorkerEntry& w : *workers)
        out.push_back({{"name", w.name}, {"kind", w.kind}, {"host", w.host}, {"pid", w.pid}, {"state", w.state},
                       {"job", w.job}, {"started_ms", w.started_ms}, {"seen_ms", w.seen_ms},
                       {"running", w.running}, {"waiting", w.waiting}, {"cache_usage", w.cache_usage}});
      for (size_t i = 0; i < workers->size(); ++i)
        if (!(*workers)[i].endpoint.empty()) out[i]["endpoint"] = (*workers)[i].endpoint;
      reply(res, 200, {{"workers", out}});
    });
    // The results file, streamed: it may be far larger than a reply body.
    server.Get(R"(/v1/jobs/([A-Za-z0-9_.-]{1,64})/results)", [this](const httplib::Request& req, httplib::Response& res) {
      with_store(res, [&](JobStore& store) {
        auto job = store.get(req.matches[1]);
        if (!job.ok()) return error(res, http_status(job.status()), std::string(job.status().message()));
        if (job->results.empty())
          return error(res, 404, absl::StrCat("job ", job->id, " has no results", job->state == JobState::kSucceeded ? "" : " yet",
                                              " (it is ", job_state_name(job->state), ")"));
        std::error_code ec;
        const auto size = std::filesystem::file_size(job->results, ec);
        if (ec || !std::filesystem::is_regular_file(job->results))
          return error(res, 410, absl::StrCat("job ", job->id, "'s results (", job->results,
                                              ") are not on this controller's disk; a controller serves results from the "
                                              "runners' shared directory"));
        auto file = std::make_shared<std::ifstream>(job->results, std::ios::binary);
        res.set_header("Content-Disposition", absl::StrCat("attachment; filename=\"",
                                                           std::filesystem::path(job->results).filename().string(), "\""));
        res.set_content_provider(size, "application/octet-stream",
                                 [file](size_t offset, size_t length, httplib::DataSink& sink) {
                                   std::vector<char> buf(std::min<size_t>(length, 1 << 20));
                                   file->seekg(static_cast<std::streamoff>(offset));
                                   file->read(buf.data(), static_cast<std::streamsize>(buf.size()));
                                   const auto got = file->gcount();
                                   if (got <= 0) return false;
                                   return sink.write(buf.data(), static_cast<size_t>(got));
                                 });
      });
    });
    server.Get(R"(/v1/jobs/([A-Za-z0-9_.-]{1,64})/events)", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string after = req.has_param("after") ? req.get_param_value("after") : "0";
      if (after.size() > 64 || after.find_first_not_of("0123456789-") != std::string::npos)
        return error(res, 400, "after must be an event id (digits-digits) or 0");
      with_store(res, [&](JobStore& store) {
        const std::string id = req.matches[1];
        if (auto job = store.get(id); !job.ok()) return error(res, http_status(job.status()), std::string(job.status().message()));
        auto events = store.events(id, after, 1000);
        if (!events.ok()) return error(res, http_status(events.status()), std::string(events.status().message()));
        json out = json::array();
        for (const JobEvent& e : *events) out.push_back({{"id", e.id}, {"type", e.type}, {"message", e.message}});
        reply(res, 200, {{"events", out}});
      });
    });
  }
};

Controller::Controller(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Controller>> Controller::start(const ControllerOptions& options) {
  if (options.token.empty())
    return absl::InvalidArgumentError("the controller needs a token: pass --token or set INTERLACE_TOKEN "
                                      "(`openssl rand -hex 16` makes one)");
  auto probe = RedisClient::connect_waiting(options.redis);  // Redis may still be starting
  if (!probe.ok()) return probe.status();
  auto impl = std::make_unique<Impl>(options);
  impl->routes();
  if (options.port == 0) {
    impl->port = impl->server.bind_to_any_port(options.host);
    if (impl->port <= 0) return absl::UnavailableError(absl::StrCat("cannot bind ", options.host, " to any port"));
  } else {
    if (!impl->server.bind_to_port(options.host, options.port))
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options.host, ":", options.port,
                                                 " (in use? pass another with --listen HOST:PORT)"));
    impl->port = options.port;
  }
  if (impl->listen_fd >= 0) ::listen(impl->listen_fd, kListenBacklog);
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->server.listen_after_bind(); });
  impl->scheduler = std::thread([raw] { raw->schedule_loop(); });
  return std::unique_ptr<Controller>(new Controller(std::move(impl)));
}

Controller::~Controller() { stop(); }

int Controller::port() const { return impl_->port; }

void Controller::stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->scheduler_mu);
    impl_->stopping = true;
  }
  impl_->scheduler_wake.notify_all();
  if (impl_->scheduler.joinable()) impl_->scheduler.join();
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void Controller::wait() {
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace interlace::control
