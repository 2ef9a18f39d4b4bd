// interlace up / down: the control plane on this machine, as separate
// processes that outlive the command: a redis-server (data and AOF under
// DIR/redis, fsync on every write: an acknowledged submission survives a
// crash; a fresh password in DIR/redis/redis.conf), a controller with a fresh
// token, and job runners. DIR/stack.json says where they
// are; the control commands (submit, jobs, ...) fall back to it when neither
// --server nor INTERLACE_SERVER is given.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "cli_util.h"
#include "commands.h"
#include "nlohmann/json.hpp"
#include "stack_file.h"

namespace interlace::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string random_token() {
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  unsigned char bytes[16] = {};
  urandom.read(reinterpret_cast<char*>(bytes), sizeof bytes);
  std::string hex;
  for (unsigned char b : bytes) {
    const char* digits = "0123456789abcdef";
    hex += digits[b >> 4];
    hex += digits[b & 15];
  }
  return hex;
}

// Starts `args` in a session of its own (it outlives this process and a
// Ctrl-C here), stdout and stderr to `log`; `env` added to the environment.
pid_t start_detached(const std::vector<std::string>& args, const std::string& log,
                     const std::vector<std::string>& env = {}) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::setsid();
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
  }
  const int null = ::open("/dev/null", O_RDONLY);
  if (null >= 0) ::dup2(null, 0);
  for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  std::fprintf(stderr, "cannot start %s: %s\n", argv[0], std::strerror(errno));
  ::_exit(127);
}

// Running, not a zombie: a process `up` started is reparented when `up`
// exits, and where PID 1 does not reap (a container's shell), a dead one
// stays a zombie that kill(pid, 0) still finds.
bool alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'Z';
}

bool healthy(const std::string& server, const std::string& path) {
  httplib::Client c(server);
  c.set_connection_timeout(1);
  auto r = c.Get(path);
  return r && r->status == 200;
}

// Stops `pid` (SIGTERM, then SIGKILL after 10 s) and reaps it if it is ours.
void stop(pid_t pid) {
  if (!alive(pid)) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 200 && alive(pid); ++i) {
    ::waitpid(pid, nullptr, WNOHANG);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (alive(pid)) ::kill(pid, SIGKILL);
}

struct UpArgs {
  std::string dir = default_stack_dir(), output = "table";
  int port = 8470, redis_port = 6390, runners = 1, learners = 0, workers = 0;
  std::string serve;  // a model directory to serve (serving workers and a gateway)
  int serving_workers = 1, gateway_port = 8000;
};

// `up --serve MODEL`: serving workers (the cores split between them) and a
// gateway with the stack's token; their pids join the runners' for `down`.
// PASSWORD_ENV: INTERLACE_REDIS_PASSWORD=..., for the stack's Redis.
absl::Status start_serving(const UpArgs& a, StackInfo& s, const std::string& password_env) {
  const fs::path dir = fs::path(s.dir) / "serving";
  std::error_code ec;
  fs::remove_all(dir / "endpoints", ec);
  fs::create_directories(dir / "endpoints", ec);
  const std::string model = fs::absolute(a.serve).string();
  const int threads = std::max(1, int(std::thread::hardware_concurrency()) / a.serving_workers);
  // Workers register in the stack's Redis (`interlace workers` lists them), and the gateway keeps session pins there;
  // it is given the workers too, so it is ready as soon as they are.
  std::vector<std::string> gateway = {self_exe(), "serve", "gateway", "--model", model, "--keys", (dir / "keys").string(),
                                      "--listen", "127.0.0.1:" + std::to_string(a.gateway_port), "--port-file",
                                      (dir / "gateway.port").string(), "--redis", s.redis};
  for (int i = 0; i < a.serving_workers; ++i) {
    const std::string name = "serving-worker-" + std::to_string(i);
    const std::string endpoint_file = (dir / "endpoints" / name).string();
    s.runner_pids.push_back(start_detached({self_exe(), "serve", "worker", "--serve", model, "--keys", (dir / "keys").string(),
                                            "--endpoint-file", endpoint_file, "--threads", std::to_string(threads), "--redis", s.redis,
                                            "--name", name},
                                           (fs::path(s.dir) / (name + ".log")).string(), {password_env}));
    std::string endpoint;
    for (int t = 0; t < 600 && endpoint.empty() && alive(s.runner_pids.back()); ++t) {
      std::ifstream in(endpoint_file);
      std::getline(in, endpoint);
      if (endpoint.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (endpoint.empty()) return absl::UnavailableError(absl::StrCat(name, " did not start; see ", s.dir, "/", name, ".log"));
    gateway.insert(gateway.end(), {"--worker", endpoint});
  }
  fs::remove(dir / "gateway.port", ec);
  s.runner_pids.push_back(
      start_detached(gateway, (fs::path(s.dir) / "gateway.log").string(), {"INTERLACE_TOKEN=" + s.token, password_env}));
  s.gateway = "http://127.0.0.1:" + std::to_string(a.gateway_port) + "/v1";
  for (int t = 0; t < 300; ++t) {
    if (healthy("http://127.0.0.1:" + std::to_string(a.gateway_port), "/readyz")) return absl::OkStatus();
    if (!alive(s.runner_pids.back())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::UnavailableError(absl::StrCat("the gateway did not get ready; see ", s.dir,
                                             "/gateway.log (a port in use? pass --gateway-port)"));
}

int up(const UpArgs& a) {
  std::error_code ec;
  fs::create_directories(fs::path(a.dir) / "redis", ec);
  if (ec) return fail(a.dir + ": cannot create it: " + ec.message());
  if (auto existing = read_stack(a.dir); existing.ok() && alive(existing->controller_pid) && alive(existing->redis_pid)) {
    std::fprintf(stderr, "up: already running (from %s/stack.json)\n", a.dir.c_str());
    print_stack(*existing, a.output);
    return 0;
  }
  const std::string token = random_token();
  StackInfo s;
  s.dir = fs::absolute(a.dir).string();
  s.server = "http://127.0.0.1:" + std::to_string(a.port);
  s.redis = "127.0.0.1:" + std::to_string(a.redis_port);
  s.token = token;
  // Redis asks for a password too (anyone on this machine can reach
  // loopback): in a 0600 config file, not on the command line where `ps`
  // shows it; the services get it in their environment.
  const std::string redis_password = random_token();
  const fs::path redis_conf = fs::path(s.dir) / "redis" / "redis.conf";
  {
    std::ofstream conf(redis_conf, std::ios::trunc);
    conf << "requirepass " << redis_password << "\n";
    if (!conf) return fail("cannot write " + redis_conf.string());
  }
  fs::permissions(redis_conf, fs::perms::owner_read | fs::perms::owner_write, ec);
  s.redis_pid = start_detached({"redis-server", redis_conf.string(), "--port", std::to_string(a.redis_port), "--bind",
                                "127.0.0.1", "--dir", (fs::path(s.dir) / "redis").string(), "--appendonly", "yes",
                                "--appendfsync", "always", "--save", "", "--daemonize", "no"},
                               (fs::path(s.dir) / "redis.log").string());
  const std::string password_env = "INTERLACE_REDIS_PASSWORD=" + redis_password;
  s.controller_pid =
      start_detached({self_exe(), "serve", "controller", "--redis", s.redis, "--listen", "127.0.0.1:" + std::to_string(a.port)},
                     (fs::path(s.dir) / "controller.log").string(), {"INTERLACE_TOKEN=" + token, password_env});
  for (int i = 0; i < a.runners; ++i)
    s.runner_pids.push_back(start_detached(
        {self_exe(), "serve", "runner", "--redis", s.redis, "--dir", (fs::path(s.dir) / "jobs").string(), "--name",
         "runner-" + std::to_string(i) + "@local"},
        (fs::path(s.dir) / ("runner-" + std::to_string(i) + ".log")).string(), {password_env}));
  // Pool learners and workers share DIR/jobs (stack.json lists their pids with the runners').
  for (const auto& [role, n] : {std::pair<std::string, int>{"learner", a.learners}, {"worker", a.workers}})
    for (int i = 0; i < n; ++i) {
      const std::string name = role + "-" + std::to_string(i);
      s.runner_pids.push_back(start_detached({self_exe(), "serve", role, "--redis", s.redis, "--dir",
                                              (fs::path(s.dir) / "jobs").string(), "--name", name + "@local"},
                                             (fs::path(s.dir) / (name + ".log")).string(), {password_env}));
    }
  // The controller retries Redis while it loads; ready when both answer.
  for (int i = 0; i < 300 && !(alive(s.controller_pid) && healthy(s.server, "/readyz")); ++i) {
    if (!alive(s.redis_pid) || (i > 20 && !alive(s.controller_pid))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!alive(s.redis_pid) || !alive(s.controller_pid) || !healthy(s.server, "/readyz")) {
    const bool redis_died = !alive(s.redis_pid);
    for (int pid : s.runner_pids) stop(pid);
    stop(s.controller_pid);
    stop(s.redis_pid);
    return fail(std::string(redis_died ? "redis-server" : "the controller") + " did not start; see " + s.dir + "/" +
                (redis_died ? "redis.log" : "controller.log") + " (a port in use? pass --port / --redis-port)");
  }
  if (!a.serve.empty()) {
    if (absl::Status st = start_serving(a, s, password_env); !st.ok()) {
      for (int pid : s.runner_pids) stop(pid);
      stop(s.controller_pid);
      stop(s.redis_pid);
      return fail(st);
    }
  }
  if (absl::Status st = write_stack(s); !st.ok()) return fail(st);
  print_stack(s, a.output);
  if (a.output != "json")
    std::fprintf(stderr, "up: the control commands use this stack by default; `interlace down` stops it\n");
  return 0;
}

int down(const std::string& dir) {
  auto s = read_stack(dir);
  if (!s.ok()) return fail(s.status());
  for (int pid : s->runner_pids) stop(pid);  // a running job stays running, resumed by the next `up`
  stop(s->controller_pid);
  stop(s->redis_pid);  // SIGTERM: Redis flushes its AOF and exits
  std::error_code ec;
  fs::remove(fs::path(dir) / "stack.json", ec);
  std::fprintf(stderr, "down: stopped %zu runner, learner and worker process(es), the controller (pid %d) and redis-server (pid %d); data kept in %s\n",
               s->runner_pids.size(), s->controller_pid, s->redis_pid, dir.c_str());
  return 0;
}

}  // namespace

void add_stack_commands(CLI::App& app, Action& action) {
  auto u = std::make_shared<UpArgs>();
  CLI::App* up_cmd = app.add_subcommand(
      "up",
      "Start the control plane on this machine: redis-server (AOF under DIR/redis), a\n"
      "controller with a fresh token, and job runners (each runs a submitted job whole, with\n"
      "its own rollout workers), or pool learners and pool workers (a learner claims a train\n"
      "job and the controller gives it workers from the pool); jobs run in DIR/jobs/. Prints\n"
      "the server URL and the token. The control commands (submit, jobs, status, cancel,\n"
      "logs) then use it without --server/--token. Examples:\n"
      "  interlace up && interlace submit examples/calculator/job.yaml && interlace jobs\n"
      "  interlace up --runners 0 --learners 1 --workers 2\n"
      "  interlace up --serve MODEL_DIR --serving-workers 2   # and an OpenAI API at the printed gateway URL");
  up_cmd->add_option("--dir", u->dir, "where the stack keeps its data, logs and stack.json")->capture_default_str();
  up_cmd->add_option("--port", u->port, "the controller's port (loopback)")->capture_default_str()->check(CLI::Range(1, 65535));
  up_cmd->add_option("--redis-port", u->redis_port, "redis-server's port (loopback)")->capture_default_str()->check(CLI::Range(1, 65535));
  up_cmd->add_option("--runners", u->runners, "job runners (`serve runner`): train jobs run one at a time on each")
      ->capture_default_str()->check(CLI::Range(0, 64));
  up_cmd->add_option("--learners", u->learners, "pool learners (`serve learner --redis`): claim train jobs")
      ->capture_default_str()->check(CLI::Range(0, 64));
  up_cmd->add_option("--workers", u->workers, "pool workers (`serve worker --redis`): run the rollout of assigned jobs")
      ->capture_default_str()->check(CLI::Range(0, 256));
  up_cmd->add_option("--serve", u->serve, "also serve this model directory: serving workers and an OpenAI-compatible gateway");
  up_cmd->add_option("--serving-workers", u->serving_workers, "with --serve: serving workers (the cores split between them)")
      ->capture_default_str()->check(CLI::Range(1, 64));
  up_cmd->add_option("--gateway-port", u->gateway_port, "with --serve: the gateway's port (loopback)")
      ->capture_default_str()->check(CLI::Range(1, 65535));
  up_cmd->add_option("-o,--output", u->output, "table or json ({\"server\", \"token\"}, and \"gateway\" with --serve)")
      ->check(CLI::IsMember({"table", "json"}))->capture_default_str();
  up_cmd->callback([u, &action] { action = [u] { return up(*u); }; });

  auto dir = std::make_shared<std::string>(default_stack_dir());
  CLI::App* down_cmd = app.add_subcommand("down", "Stop what `interlace up` started (its data stays)");
  down_cmd->add_option("--dir", *dir, "the stack's directory")->capture_default_str();
  down_cmd->callback([dir, &action] { action = [dir] { return down(*dir); }; });
}

}  // namespace interlace::cli
