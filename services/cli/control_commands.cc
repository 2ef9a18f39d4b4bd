// The control plane from the command line (issue 18): `interlace serve
// controller` runs the HTTP API over Redis; submit, jobs, status, cancel and
// logs talk to it. The server comes from --server or INTERLACE_SERVER, the
// token from --token or INTERLACE_TOKEN.
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli_util.h"
#include "commands.h"
#include "interlace/control/controller.h"
#include "interlace/control/job_runner.h"
#include "interlace/control/pool_worker.h"
#include "interlace/control/worker_registry.h"
#include "yaml-cpp/yaml.h"
#include "nlohmann/json.hpp"
#include "stack_file.h"

namespace interlace::cli {
namespace {

using nlohmann::json;

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

struct ClientArgs {
  std::string server, token, output = "table";
};

void add_client_options(CLI::App* sub, ClientArgs& a) {
  sub->add_option("--server", a.server,
                  "controller URL (default: $INTERLACE_SERVER, else the stack `interlace up` started, else http://127.0.0.1:8470)");
  sub->add_option("--token", a.token, "API token (default: $INTERLACE_TOKEN, else the local stack's)");
  sub->add_option("-o,--output", a.output, "table or json")->check(CLI::IsMember({"table", "json"}))->capture_default_str();
}

// Where the controller is and the token for it: flags, then the environment,
// then the stack `interlace up` started here, if there is one.
struct Endpoint {
  std::string server, token;
};
absl::StatusOr<Endpoint> endpoint(const ClientArgs& a) {
  Endpoint e{a.server.empty() ? env_or("INTERLACE_SERVER", "") : a.server, a.token.empty() ? env_or("INTERLACE_TOKEN", "") : a.token};
  if (e.server.empty()) {
    auto stack = read_stack(default_stack_dir());
    e.server = stack.ok() ? stack->server : "http://127.0.0.1:8470";
    if (stack.ok() && e.token.empty()) e.token = stack->token;
  }
  if (e.token.empty())
    return absl::InvalidArgumentError("no API token: pass --token or set INTERLACE_TOKEN (or start a local stack with `interlace up`)");
  return e;
}

absl::Status unreachable(const std::string& server, httplib::Error error) {
  return absl::UnavailableError("no controller at " + server + " (" + httplib::to_string(error) +
                                "): start one with `interlace up` (or `interlace serve controller --redis HOST:PORT`), or pass --server");
}

// A 4xx/5xx reply as an error with the controller's message.
absl::Status refused(int status, const std::string& body) {
  if (status == 401) return absl::PermissionDeniedError("the controller refused the token (check --token / INTERLACE_TOKEN)");
  const json j = json::parse(body, nullptr, false);
  const std::string what = !j.is_discarded() && j.contains("error") ? j["error"].get<std::string>() : body;
  return absl::Status(status == 404 ? absl::StatusCode::kNotFound : absl::StatusCode::kFailedPrecondition, what);
}

// One request to the controller; the reply's JSON, or an error that says what to do.
absl::StatusOr<json> call(const ClientArgs& a, const std::string& method, const std::string& path,
                          const std::string& body = "") {
  auto e = endpoint(a);
  if (!e.ok()) return e.status();
  const std::string& server = e->server;
  httplib::Client client(server);
  if (!client.is_valid()) return absl::InvalidArgumentError("--server '" + server + "' is not a URL (http://HOST:PORT)");
  client.set_connection_timeout(5);
  client.set_read_timeout(30);
  client.set_bearer_token_auth(e->token);
  httplib::Result r = method == "POST" ? client.Post(path, body, "application/json") : client.Get(path);
  if (!r) return unreachable(server, r.error());
  if (r->status >= 400) return refused(r->status, r->body);
  const json j = json::parse(r->body, nullptr, false);
  if (j.is_discarded()) return absl::DataLossError("the controller's reply is not JSON: " + r->body.substr(0, 200));
  return j;
}

std::string age(int64_t since_ms) {
  if (since_ms <= 0) return "-";
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  const int64_t s = std::max<int64_t>(0, (now - since_ms) / 1000);
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

void print_jobs(const json& jobs) {
  std::printf("%-12s %-24s %-8s %-10s %-6s %-7s %-7s %-16s %s\n", "ID", "NAME", "KIND", "STATE", "STEP", "REWARD",
              "WORKERS", "OWNER", "AGE");
  for (const json& j : jobs) {
    const int64_t step = j.value("step", int64_t{0});
    const json reward = j.value("reward", json(nullptr));
    const int64_t want = j.value("workers_want", int64_t{0});
    // A pool learner's job: given/wanted; a runner's job runs its own workers.
    const std::string state = j.value("state", "");
    const bool ended = state == "succeeded" || state == "failed" || state == "cancelled";
    const std::string workers = want > 0 && !ended ? absl::StrCat(j.value("workers", int64_t{0}), "/", want) : "-";
    std::printf("%-12s %-24s %-8s %-10s %-6s %-7s %-7s %-16s %s\n", j["id"].get<std::string>().c_str(),
                j["name"].get<std::string>().substr(0, 24).c_str(), j["kind"].get<std::string>().c_str(),
                j["state"].get<std::string>().c_str(), step > 0 ? std::to_string(step).c_str() : "-",
                reward.is_number() ? absl::StrFormat("%.3f", reward.get<double>()).c_str() : "-", workers.c_str(),
                j["owner"].get<std::string>().empty() ? "-" : j["owner"].get<std::string>().c_str(),
                age(j["created_ms"].get<int64_t>()).c_str());
  }
}

void print_workers(const json& workers) {
  std::printf("%-24s %-8s %-16s %-8s %-6s %-12s %-9s %-6s %s\n", "NAME", "KIND", "HOST", "PID", "STATE", "JOB",
              "RUN/WAIT", "CACHE", "UP");
  for (const json& w : workers) {
    // A pool worker's load while it runs a job (-1: not known).
    const int64_t running = w.value("running", int64_t{-1}), waiting = w.value("waiting", int64_t{-1});
    const double cache = w.value("cache_usage", -1.0);
    std::printf("%-24s %-8s %-16s %-8lld %-6s %-12s %-9s %-6s %s\n", w["name"].get<std::string>().substr(0, 24).c_str(),
                w["kind"].get<std::string>().c_str(), w["host"].get<std::string>().substr(0, 16).c_str(),
                static_cast<long long>(w["pid"].get<int64_t>()), w["state"].get<std::string>().c_str(),
                w["job"].get<std::string>().empty() ? "-" : w["job"].get<std::string>().c_str(),
                running >= 0 ? absl::StrCat(running, "/", waiting).c_str() : "-",
                cache >= 0 ? absl::StrFormat("%.1f%%", 100 * cache).c_str() : "-", age(w["started_ms"].get<int64_t>()).c_str());
  }
}

// The running train jobs' last step, as their learner reported it.
void print_training(const json& jobs) {
  bool header = false;
  for (const json& j : jobs) {
    if (j.value("state", "") != "running" || j.value("kind", "") != "train" || !j.contains("stats")) continue;
    const json& st = j["stats"];
    if (!st.is_object() || st.empty()) continue;
    if (!header)
      std::printf("\n%-12s %-6s %-9s %-9s %-9s %-9s %s\n", "TRAINING", "STEP", "TOK/S", "STALENESS", "CACHE HIT",
                  "|DLOGP|", "KL"), header = true;
    auto fig = [&](const char* k, const char* fmt, double scale = 1) {
      if (!st.contains(k) || !st[k].is_number()) return std::string("-");
      char text[32];
      std::snprintf(text, sizeof text, fmt, scale * st[k].get<double>());
      return std::string(text);
    };
    std::printf("%-12s %-6lld %-9s %-9s %-9s %-9s %s\n", j["id"].get<std::string>().c_str(),
                static_cast<long long>(j.value("step", int64_t{0})), fig("tokens_per_second", "%.0f").c_str(),
                fig("staleness_mean", "%.2f").c_str(), fig("cache_hit_rate", "%.0f%%", 100).c_str(),
                fig("logprob_abs_diff_mean", "%.2g").c_str(), fig("kl", "%.2g").c_str());
  }
}

bool final_state(const std::string& s) { return s == "succeeded" || s == "failed" || s == "cancelled"; }

struct SubmitArgs {
  ClientArgs client;
  std::string job, kind = "train", name, request_id;
  bool wait = false;
};

// The spec as text, with a relative model.init / model.path made absolute
// (relative to the spec's directory): the job runs elsewhere, where the
// spec's own directory means nothing. Comments are dropped only then.
absl::StatusOr<std::string> spec_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(path + ": cannot read it");
  std::stringstream text;
  text << in.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(path + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
  bool changed = false;
  auto make_absolute = [&](YAML::Node v) {
    if (!v || !v.IsScalar() || v.Scalar().empty() || v.Scalar()[0] == '/') return;
    const std::filesystem::path dir = std::filesystem::absolute(path).parent_path();
    v = (dir / v.Scalar()).lexically_normal().string();
    changed = true;
  };
  if (root.IsMap() && root["model"] && root["model"].IsMap())
    for (const char* key : {"init", "path"}) make_absolute(root["model"][key]);  // a train job's
  else if (root.IsMap() && root["model"])
    make_absolute(root["model"]);  // a rollout job's model directory
  if (!changed) return text.str();
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

// Follows a job's events until it ends (`logs -f`): 1 if it failed.
int wait_for(const ClientArgs& client, const std::string& id);

int submit(const SubmitArgs& a) {
  auto text = spec_text(a.job);
  if (!text.ok()) return fail(text.status());
  json body = {{"kind", a.kind}, {"spec", *text}};
  if (!a.name.empty()) body["name"] = a.name;
  if (!a.request_id.empty()) body["request_id"] = a.request_id;
  auto r = call(a.client, "POST", "/v1/jobs", body.dump());
  if (!r.ok()) return fail(absl::Status(r.status().code(), a.job + ": " + std::string(r.status().message())));
  if (a.client.output == "json") {
    std::printf("%s\n", r->dump(2).c_str());
  } else {
    const std::string id = (*r)["id"];
    std::printf("%s\n", id.c_str());
    if (!a.wait)
      std::fprintf(stderr, "queued; follow it with `interlace logs %s -f`, or `interlace status %s`\n", id.c_str(), id.c_str());
  }
  std::fflush(stdout);
  return a.wait ? wait_for(a.client, (*r)["id"]) : 0;
}

struct JobArgs {
  ClientArgs client;
  std::string id;
  bool follow = false;
};

int logs(const JobArgs& a) {
  std::string after = "0";
  for (;;) {
    auto r = call(a.client, "GET", "/v1/jobs/" + a.id + "/events?after=" + after);
    if (!r.ok()) return fail(r.status());
    for (const json& e : (*r)["events"]) {
      after = e["id"];
      if (a.client.output == "json")
        std::printf("%s\n", e.dump().c_str());
      else
        std::printf("[%s] %s\n", e["type"].get<std::string>().c_str(), e["message"].get<std::string>().c_str());
    }
    std::fflush(stdout);
    if (!a.follow) return 0;
    auto job = call(a.client, "GET", "/v1/jobs/" + a.id);
    if (!job.ok()) return fail(job.status());
    if (final_state((*job)["state"]) && (*r)["events"].empty()) return (*job)["state"] == "failed" ? 1 : 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

struct ResultsArgs {
  ClientArgs client;
  std::string id, out;
};

// Downloads a job's results to --out (through a .partial file: an interrupted
// download never looks like a whole one).
int results(const ResultsArgs& a) {
  auto e = endpoint(a.client);
  if (!e.ok()) return fail(e.status());
  httplib::Client client(e->server);
  if (!client.is_valid()) return fail("--server '" + e->server + "' is not a URL (http://HOST:PORT)");
  client.set_connection_timeout(5);
  client.set_read_timeout(300);
  client.set_bearer_token_auth(e->token);
  const std::string partial = a.out + ".partial";
  std::ofstream file;
  std::string error_body;
  int status = 0;
  int64_t bytes = 0;
  auto r = client.Get(
      "/v1/jobs/" + a.id + "/results",
      [&](const httplib::Response& res) {
        status = res.status;
        if (status == 200) file.open(partial, std::ios::binary | std::ios::trunc);
        return status != 200 || file.good();
      },
      [&](const char* data, size_t n) {
        if (status != 200) {
          if (error_body.size() < 65536) error_body.append(data, n);
          return true;
        }
        file.write(data, static_cast<std::streamsize>(n));
        bytes += static_cast<int64_t>(n);
        return file.good();
      });
  if (!r) {
    std::remove(partial.c_str());
    if (status == 200) return fail(absl::StrCat("cannot write ", partial, ", or the download broke off after ", bytes, " bytes"));
    return fail(unreachable(e->server, r.error()));
  }
  if (status != 200) return fail(absl::Status(refused(status, error_body).code(), a.id + ": " + std::string(refused(status, error_body).message())));
  file.close();
  if (!file || std::rename(partial.c_str(), a.out.c_str()) != 0) return fail("cannot write " + a.out);
  if (a.client.output == "json")
    std::printf("%s\n", json({{"id", a.id}, {"out", a.out}, {"bytes", bytes}}).dump().c_str());
  else
    std::fprintf(stderr, "%s: %lld bytes written to %s\n", a.id.c_str(), static_cast<long long>(bytes), a.out.c_str());
  return 0;
}

int wait_for(const ClientArgs& client, const std::string& id) { return logs({.client = client, .id = id, .follow = true}); }

struct TopArgs {
  ClientArgs client;
  double interval = 2.0;
  bool once = false;
};

// Jobs and runners, redrawn in place (ANSI clear) until interrupted.
int run_top(const TopArgs& a) {
  for (;;) {
    auto jobs = call(a.client, "GET", "/v1/jobs?limit=20");
    if (!jobs.ok()) return fail(jobs.status());
    auto workers = call(a.client, "GET", "/v1/workers");
    if (!workers.ok()) return fail(workers.status());
    if (a.client.output == "json") {
      std::printf("%s\n", json({{"jobs", (*jobs)["jobs"]}, {"workers", (*workers)["workers"]}}).dump().c_str());
    } else {
      if (!a.once) std::printf("\033[H\033[2J");
      int64_t running = 0, queued = 0, busy = 0;
      for (const json& j : (*jobs)["jobs"]) running += j["state"] == "running", queued += j["state"] == "queued";
      std::map<std::string, int64_t> kinds;  // runner, learner, worker
      for (const json& w : (*workers)["workers"]) busy += w["state"] == "busy", ++kinds[w.value("kind", "runner")];
      std::string registered;
      for (const char* kind : {"runner", "learner", "worker"})
        if (kinds[kind] > 0) absl::StrAppend(&registered, kinds[kind], " ", kind, "s, ");
      std::printf("interlace top: %lld running, %lld queued (of the newest 20); %s%lld busy\n\n",
                  static_cast<long long>(running), static_cast<long long>(queued),
                  registered.empty() ? "nobody to run jobs, " : registered.c_str(), static_cast<long long>(busy));
      print_jobs((*jobs)["jobs"]);
      print_training((*jobs)["jobs"]);
      std::printf("\n");
      print_workers((*workers)["workers"]);
    }
    std::fflush(stdout);
    if (a.once) return 0;
    std::this_thread::sleep_for(std::chrono::duration<double>(a.interval));
  }
}

struct ServeControllerArgs {
  std::string redis = "127.0.0.1:6379", listen = "127.0.0.1:8470", token, prefix = "interlace";
};

int serve_controller(const ServeControllerArgs& a) {
  auto redis = control::parse_redis_address(a.redis);
  if (!redis.ok()) return fail(redis.status());
  *redis = control::with_password_from_env(*redis);
  const size_t colon = a.listen.rfind(':');
  if (colon == std::string::npos) return fail("--listen '" + a.listen + "': expected HOST:PORT");
  control::ControllerOptions o;
  o.redis = *redis;
  o.host = a.listen.substr(0, colon);
  o.port = std::atoi(a.listen.c_str() + colon + 1);
  o.token = a.token.empty() ? env_or("INTERLACE_TOKEN", "") : a.token;
  o.prefix = a.prefix;
  // SIGINT/SIGTERM end the process through sigwait below, not a handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto controller = control::Controller::start(o);
  if (!controller.ok()) return fail(controller.status());
  std::fprintf(stderr, "controller: serving http://%s:%d (Redis %s)\n", o.host.c_str(), (*controller)->port(),
               redis->to_string().c_str());
  std::printf("http://%s:%d\n", o.host.c_str(), (*controller)->port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "controller: stopping (signal %d)\n", sig);
  (*controller)->stop();
  return 0;
}

std::atomic<bool> g_stop{false};

struct ServeRunnerArgs {
  std::string redis = "127.0.0.1:6379", dir, name, prefix = "interlace", health;
  double poll = 1.0;
};

std::string default_runner_name() { return "runner@" + control::this_host(); }

// What a runner, pool learner and pool worker share: Redis, a name, a
// directory, a health endpoint. Errors are bad usage (exit 2) or failures.
struct RoleSetup {
  control::RedisAddress redis;
  std::string dir, health_host;
  int health_port = 0;
};

absl::StatusOr<RoleSetup> role_setup(const std::string& redis_text, const std::string& dir, const std::string& health) {
  auto redis = control::parse_redis_address(redis_text);
  if (!redis.ok()) return redis.status();
  RoleSetup r;
  r.redis = control::with_password_from_env(*redis);
  const char* home = std::getenv("HOME");
  r.dir = dir.empty() ? std::string(home && *home ? home : "/tmp") + "/.interlace/jobs" : dir;
  if (!health.empty()) {
    const size_t colon = health.rfind(':');
    const int port = colon == std::string::npos ? 0 : std::atoi(health.c_str() + colon + 1);
    if (port <= 0 || port > 65535)
      return absl::InvalidArgumentError("--health '" + health + "': expected HOST:PORT, e.g. 0.0.0.0:8471");
    r.health_host = health.substr(0, colon);
    r.health_port = port;
  }
  signal(SIGINT, [](int) { g_stop = true; });
  signal(SIGTERM, [](int) { g_stop = true; });
  return r;
}

int serve_runner(const ServeRunnerArgs& a) {
  auto setup = role_setup(a.redis, a.dir, a.health);
  if (!setup.ok()) return fail(setup.status());
  control::JobRunnerOptions o;
  o.redis = setup->redis;
  o.prefix = a.prefix;
  o.name = a.name.empty() ? default_runner_name() : a.name;
  o.dir = setup->dir;
  o.interlace = self_exe();
  o.poll_seconds = a.poll;
  o.health_host = setup->health_host;
  o.health_port = setup->health_port;
  o.stop = [] { return g_stop.load(); };
  return control::run_jobs(o);
}

}  // namespace

void add_pool_role_options(CLI::App* command, PoolRoleArgs& a) {
  command->add_option("--redis", a.redis, "the control plane's Redis HOST:PORT (password: $INTERLACE_REDIS_PASSWORD)");
  command->add_option("--dir", a.dir, "with --redis: where jobs run, shared by learners and workers (default: ~/.interlace/jobs)");
  command->add_option("--name", a.name, "with --redis: its name in the registry; keep it across restarts (default: ROLE@HOST);\n"
                      "a worker with --run-dir: its name toward the learner (default: worker-INDEX)");
  command->add_option("--prefix", a.prefix, "with --redis: Redis key prefix")->capture_default_str();
  command->add_option("--health", a.health, "with --redis: HOST:PORT for GET /healthz and /metrics (default: none)");
  if (command->get_name() == "learner")
    command->add_option("--advertise", a.advertise,
                        "with --redis: the address its jobs' learner binds and pool workers connect to\n"
                        "(default 127.0.0.1: workers on this machine only; in a pod, its IP)");
  command->add_option("--poll", a.poll, "with --redis: seconds between looks for work and for a cancel")
      ->capture_default_str()
      ->check(CLI::Range(0.05, 60.0));
}

int serve_pool_role(const std::string& role, const PoolRoleArgs& a) {
  auto setup = role_setup(a.redis, a.dir, a.health);
  if (!setup.ok()) return fail(setup.status());
  const std::string name = a.name.empty() ? role + "@" + control::this_host() : a.name;
  if (role == "worker")
    return control::run_pool_worker({.redis = setup->redis,
                                     .prefix = a.prefix,
                                     .name = name,
                                     .dir = setup->dir,
                                     .interlace = self_exe(),
                                     .poll_seconds = std::min(a.poll, 0.5),
                                     .health_host = setup->health_host,
                                     .health_port = setup->health_port,
                                     .stop = [] { return g_stop.load(); }});
  control::JobRunnerOptions o;
  o.role = control::RunnerRole::kLearner;
  o.learner_host = a.advertise;
  o.redis = setup->redis;
  o.prefix = a.prefix;
  o.name = name;
  o.dir = setup->dir;
  o.interlace = self_exe();
  o.poll_seconds = a.poll;
  o.health_host = setup->health_host;
  o.health_port = setup->health_port;
  o.stop = [] { return g_stop.load(); };
  return control::run_jobs(o);
}

void add_control_commands(CLI::App& app, Action& action) {
  auto rn = std::make_shared<ServeRunnerArgs>();
  CLI::App* runner = app.get_subcommand("serve")->add_subcommand(
      "runner",
      "Claim queued jobs from Redis one at a time (train jobs first) and run each whole on\n"
      "this machine: a train job as `interlace run` does, a rollout job as `interlace rollout`;\n"
      "the job's events and state say how it went, its results are kept in --dir. A\n"
      "restarted runner (same --name) resumes the jobs it held. Example:\n"
      "  interlace serve runner --redis 127.0.0.1:6379 --dir /var/lib/interlace/jobs");
  runner->add_option("--redis", rn->redis, "Redis HOST:PORT (its password, if any: $INTERLACE_REDIS_PASSWORD)")
      ->capture_default_str();
  runner->add_option("--dir", rn->dir, "where jobs run (default: ~/.interlace/jobs)");
  runner->add_option("--name", rn->name, "owner name of its claims; keep it across restarts (default: runner@HOST)");
  runner->add_option("--prefix", rn->prefix, "Redis key prefix")->capture_default_str();
  runner->add_option("--health", rn->health,
                     "HOST:PORT for GET /healthz (200 while heartbeats reach Redis, else 503) and /metrics\n"
                     "(default: none; Kubernetes probes use it)");
  runner->add_option("--poll", rn->poll, "seconds between looks for work and for a cancel")->capture_default_str()
      ->check(CLI::Range(0.05, 60.0));
  runner->callback([rn, &action] { action = [rn] { return serve_runner(*rn); }; });

  auto s = std::make_shared<ServeControllerArgs>();
  CLI::App* serve = app.get_subcommand("serve");
  CLI::App* controller = serve->add_subcommand(
      "controller",
      "The control plane's HTTP API over Redis (stateless: run any number on one Redis).\n"
      "Example:\n"
      "  redis-server --port 6379 --appendonly yes &\n"
      "  INTERLACE_TOKEN=$(openssl rand -hex 16) interlace serve controller --redis 127.0.0.1:6379");
  controller->add_option("--redis", s->redis, "Redis HOST:PORT (its password, if any: $INTERLACE_REDIS_PASSWORD)")
      ->capture_default_str();
  controller->add_option("--listen", s->listen, "HOST:PORT to serve on (port 0: any free one, printed)")->capture_default_str();
  controller->add_option("--token", s->token, "the API token clients must send (default: $INTERLACE_TOKEN)");
  controller->add_option("--prefix", s->prefix, "Redis key prefix (one deployment per prefix)")->capture_default_str();
  controller->callback([s, &action] { action = [s] { return serve_controller(*s); }; });

  auto sub = std::make_shared<SubmitArgs>();
  CLI::App* submit_cmd = app.add_subcommand(
      "submit",
      "Queue a job with the controller; prints its id. A train job is a job spec as\n"
      "`interlace run` takes; a rollout job names a model (or a train job's final model),\n"
      "an environment and how many episodes (see docs/control-plane.md). Examples:\n"
      "  interlace submit examples/calculator/job.yaml --wait\n"
      "  interlace submit examples/calculator/rollout.yaml --kind rollout");
  submit_cmd->add_option("job", sub->job, "job spec (YAML)")->required()->check(CLI::ExistingFile);
  submit_cmd->add_option("--kind", sub->kind, "train or rollout")->check(CLI::IsMember({"train", "rollout"}))->capture_default_str();
  submit_cmd->add_option("--name", sub->name, "job name (default: the spec's name)");
  submit_cmd->add_option("--request-id", sub->request_id, "resubmitting the same id returns the same job (safe retries)");
  submit_cmd->add_flag("--wait", sub->wait, "follow the job's events until it ends; exit 1 if it fails");
  add_client_options(submit_cmd, sub->client);
  submit_cmd->callback([sub, &action] { action = [sub] { return submit(*sub); }; });

  auto list = std::make_shared<ClientArgs>();
  CLI::App* jobs = app.add_subcommand("jobs", "List the controller's jobs, newest first");
  add_client_options(jobs, *list);
  jobs->callback([list, &action] {
    action = [list] {
      auto r = call(*list, "GET", "/v1/jobs");
      if (!r.ok()) return fail(r.status());
      if (list->output == "json")
        std::printf("%s\n", (*r)["jobs"].dump(2).c_str());
      else
        print_jobs((*r)["jobs"]);
      return 0;
    };
  });

  for (const char* verb : {"status", "cancel"}) {
    auto j = std::make_shared<JobArgs>();
    const bool cancel = std::string(verb) == "cancel";
    CLI::App* cmd = app.add_subcommand(verb, cancel ? "Cancel a queued or running job" : "Show one job");
    cmd->add_option("id", j->id, "job id (see `interlace jobs`)")->required();
    add_client_options(cmd, j->client);
    cmd->callback([j, cancel, &action] {
      action = [j, cancel] {
        auto r = cancel ? call(j->client, "POST", "/v1/jobs/" + j->id + "/cancel") : call(j->client, "GET", "/v1/jobs/" + j->id);
        if (!r.ok()) return fail(r.status());
        if (j->client.output == "json") {
          std::printf("%s\n", r->dump(2).c_str());
        } else {
          print_jobs(json::array({*r}));
          if (!(*r)["reason"].get<std::string>().empty()) std::printf("reason: %s\n", (*r)["reason"].get<std::string>().c_str());
        }
        return 0;
      };
    });
  }

  auto wl = std::make_shared<ClientArgs>();
  CLI::App* workers = app.add_subcommand(
      "workers", "List the runners, pool learners and workers, and serving workers whose heartbeat is live\n"
                 "(a killed one drops out within 10 s); -o json also gives a serving worker's endpoint");
  add_client_options(workers, *wl);
  workers->callback([wl, &action] {
    action = [wl] {
      auto r = call(*wl, "GET", "/v1/workers");
      if (!r.ok()) return fail(r.status());
      if (wl->output == "json")
        std::printf("%s\n", (*r)["workers"].dump(2).c_str());
      else
        print_workers((*r)["workers"]);
      return 0;
    };
  });

  auto tp = std::make_shared<TopArgs>();
  CLI::App* top = app.add_subcommand(
      "top", "A live view of the control plane: jobs (state, RL step, reward) and runners, redrawn\n"
             "every --interval seconds until Ctrl-C (--once: draw once and exit)");
  add_client_options(top, tp->client);
  top->add_option("--interval", tp->interval, "seconds between redraws")->capture_default_str()->check(CLI::Range(0.2, 3600.0));
  top->add_flag("--once", tp->once, "draw once and exit (for scripts)");
  top->callback([tp, &action] { action = [tp] { return run_top(*tp); }; });

  auto res = std::make_shared<ResultsArgs>();
  CLI::App* results_cmd = app.add_subcommand(
      "results",
      "Download a finished job's results: a rollout job's trajectories (JSONL, one per line,\n"
      "as `interlace rollout` writes them), a train job's final model (a tar of its directory).\n"
      "Example:\n"
      "  interlace results job-4 --out trajectories.jsonl");
  results_cmd->add_option("id", res->id, "job id")->required();
  results_cmd->add_option("--out", res->out, "file to write")->required();
  add_client_options(results_cmd, res->client);
  results_cmd->callback([res, &action] { action = [res] { return results(*res); }; });

  auto l = std::make_shared<JobArgs>();
  CLI::App* logs_cmd = app.add_subcommand("logs", "A job's events and log lines; -f follows until it ends");
  logs_cmd->add_option("id", l->id, "job id")->required();
  logs_cmd->add_flag("-f,--follow", l->follow, "keep following; exits 1 if the job fails");
  add_client_options(logs_cmd, l->client);
  logs_cmd->callback([l, &action] { action = [l] { return logs(*l); }; });
}

}  // namespace interlace::cli
