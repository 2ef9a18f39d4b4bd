// Children the service tests start: each in a process group of its own, so
// the whole group (a service and whatever it started) can be killed at once.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace interlace::test {

// execv of args[0] (a path) in a new process group; the child exits 127 if it cannot start.
inline pid_t start_group(const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  return pid;
}

// Signals the child's whole group and reaps the child.
inline void kill_group(pid_t pid, int sig) {
  ::kill(-pid, sig);
  ::waitpid(pid, nullptr, 0);
}

}  // namespace interlace::test
