// Keeps a job's local service processes alive: what `interlace run` does on
// one machine (on Kubernetes the kubelet does it). Each process is started;
// one that dies (crash, kill -9, non-zero exit) is started again, at once the
// first time and then after 1, 2, 4 ... 32 s while it keeps dying within a
// minute of its start (a poison input or a full disk must not use up every
// restart within a second); a process that ran for a minute starts the count
// again. The run ends when the primary process exits 0 (the others are then
// stopped), when one has died more than max_restarts times, or when
// `interrupted` says so.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace interlace::rl {

struct SupervisedProcess {
  std::string name;               // for messages and the pids file
  std::vector<std::string> args;  // argv; args[0] is a path
};

struct SupervisorOptions {
  std::string primary;               // its exit 0 ends the run
  int max_restarts = 10;             // per process
  std::string pids_file;             // JSON {name: pid}, rewritten on every (re)start; "" for none
  std::function<bool()> interrupted;  // polled; true stops everything
  std::string log_prefix = "run";    // messages go to stderr as "PREFIX: ..."
};

// 0: the primary finished; 1: a process kept dying (the message says which and
// how); 130: interrupted. Every child is stopped (SIGTERM, then SIGKILL after
// 5 s) before it returns.
int supervise(const std::vector<SupervisedProcess>& processes, const SupervisorOptions& options);

// The wait before restart number `quick_deaths` of a process that keeps dying
// soon after it starts: 0, 0, 1, 2, 4 ... 32 s.
std::chrono::steady_clock::duration restart_delay(int quick_deaths);

// posix_spawn of args[0] with this process's environment; -1 if it failed.
// The child's stdout goes to this process's stderr: the children are parts of
// a run whose own stdout is its result (`interlace run -o json` prints one
// JSON document there, which the children's progress lines once broke).
pid_t spawn_process(const std::vector<std::string>& args);
// Runs a process to completion: its exit code, 128 + signal if killed, 127 if
// it could not be started. With `interrupted` (polled every 100 ms), the
// process is stopped when it says so (SIGTERM, SIGKILL after 5 s) and 130 is
// returned: a cancelled job must not wait for its SFT warm-up to end.
int run_process(const std::vector<std::string>& args, const std::function<bool()>& interrupted = {});

}  // namespace interlace::rl
