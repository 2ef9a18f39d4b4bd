// A real redis-server for a test: its own loopback port, its data and AOF
// (appendfsync always: what Redis acknowledged is on disk) in a temporary
// directory; kill9() and start() again restart it on the same port and data.
// REDIS_SERVER_BIN is the binary CMake found (Debian's redis-server).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "support/ports.h"
#include "support/temp_dir.h"

namespace interlace::test {

class RedisServer {
 public:
  RedisServer() : port_(free_loopback_port()) { start(); }
  ~RedisServer() { kill9(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  const std::string& dir() const { return dir_.path(); }

  void start() {
    const std::string port = std::to_string(port_);
    const std::string log = dir_.path() + "/redis.log";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(REDIS_SERVER_BIN, REDIS_SERVER_BIN, "--port", port.c_str(), "--bind", "127.0.0.1", "--dir",
              dir_.path().c_str(), "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile",
              log.c_str(), "--daemonize", "no", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Ready when it accepts a connection and answers (it may still be loading its AOF).
    for (int i = 0; i < 500; ++i) {
      if (answers_ping()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("redis-server did not start on port " + port + "; see " + log);
  }

  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  bool answers_ping() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    bool ok = false;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      const char ping[] = "PING\r\n";
      char buf[8] = {};
      ok = ::write(fd, ping, sizeof ping - 1) == sizeof ping - 1 && ::read(fd, buf, sizeof buf) >= 5 &&
           std::string(buf, 5) == "+PONG";
    }
    ::close(fd);
    return ok;
  }

  TempDir dir_;
  int port_;
  pid_t pid_ = -1;
};

}  // namespace interlace::test
