#include "interlace/rl/supervisor.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace interlace::rl {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kStableAfter = std::chrono::seconds(60);

struct Child {
  std::vector<std::string> args;
  pid_t pid = -1;
  int restarts = 0;
  int quick_deaths = 0;  // in a row, each within kStableAfter of its start
  bool finished = false;
  Clock::time_point started{}, restart_at{};
};

void write_pids(const std::string& path, const std::map<std::string, Child>& children) {
  if (path.empty()) return;
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, c] : children) j[name] = c.pid;
  (void)core::write_file(path, j.dump() + "\n");
}

void stop_children(std::map<std::string, Child>& children) {
  for (auto& [name, c] : children)
    if (c.pid > 0 && !c.finished) kill(c.pid, SIGTERM);
  const auto until = Clock::now() + std::chrono::seconds(5);
  for (auto& [name, c] : children) {
    if (c.pid <= 0 || c.finished) continue;
    int status;
    while (waitpid(c.pid, &status, WNOHANG) == 0 && Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (Clock::now() >= until) {
      kill(c.pid, SIGKILL);
      waitpid(c.pid, &status, 0);
    }
    c.finished = true;
  }
}

}  // namespace

Clock::duration restart_delay(int quick_deaths) {
  if (quick_deaths <= 1) return Clock::duration::zero();
  return std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(1 << std::min(quick_deaths - 2, 5)));
}

pid_t spawn_process(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

int run_process(const std::vector<std::string>& args, const std::function<bool()>& interrupted) {
  const pid_t pid = spawn_process(args);
  if (pid < 0) return 127;
  int status = 0;
  if (!interrupted) {
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  for (;;) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0 && errno != EINTR) return 127;
    if (interrupted()) {
      kill(pid, SIGTERM);
      for (int i = 0; i < 50 && waitpid(pid, &status, WNOHANG) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (waitpid(pid, &status, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
      }
      return 130;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int supervise(const std::vector<SupervisedProcess>& processes, const SupervisorOptions& o) {
  const char* prefix = o.log_prefix.c_str();
  std::map<std::string, Child> children;
  for (const auto& p : processes) children[p.name].args = p.args;
  for (auto& [name, c] : children) c.pid = spawn_process(c.args), c.started = Clock::now();
  write_pids(o.pids_file, children);
  for (;;) {
    for (auto& [name, c] : children)
      if (c.pid < 0 && !c.finished && Clock::now() >= c.restart_at) {
        c.pid = spawn_process(c.args);
        c.started = Clock::now();
        write_pids(o.pids_file, children);
      }
    if (o.interrupted && o.interrupted()) {
      std::fprintf(stderr, "%s: interrupted; stopping the services (resume with --resume)\n", prefix);
      stop_children(children);
      return 130;
    }
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    for (auto& [name, c] : children) {
      if (c.pid != pid) continue;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (ok) {
        c.finished = true;
        if (name == o.primary) {
          // The primary (the learner) lingers to tell the others the job is done; then stop any straggler.
          stop_children(children);
          return 0;
        }
        break;
      }
      const std::string how = WIFEXITED(status) ? absl::StrCat("exited with ", WEXITSTATUS(status))
                                                : absl::StrCat("was killed by signal ", WTERMSIG(status));
      if (c.restarts >= o.max_restarts) {
        std::fprintf(stderr, "%s: %s %s and has been restarted %d times already; giving up\n", prefix, name.c_str(),
                     how.c_str(), c.restarts);
        stop_children(children);
        return 1;
      }
      ++c.restarts;
      c.quick_deaths = Clock::now() - c.started < kStableAfter ? c.quick_deaths + 1 : 1;
      const auto delay = restart_delay(c.quick_deaths);
      c.restart_at = Clock::now() + delay;
      c.pid = -1;
      if (delay == Clock::duration::zero())
        std::fprintf(stderr, "%s: %s %s; restarting it (restart %d)\n", prefix, name.c_str(), how.c_str(), c.restarts);
      else
        std::fprintf(stderr, "%s: %s %s; restarting it in %.0f s (restart %d; %d quick failures in a row)\n", prefix,
                     name.c_str(), how.c_str(), std::chrono::duration<double>(delay).count(), c.restarts,
                     c.quick_deaths);
      break;
    }
  }
}

}  // namespace interlace::rl
