#include "interlace/metrics/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace interlace::metrics {
namespace {

constexpr size_t kMaxRequestBytes = 8192;
constexpr int kReadTimeoutMs = 2000;
constexpr size_t kMaxConnections = 256;

// The socket is non-blocking: a reply larger than the socket's send buffer
// waits for room, at most a second in all, so a client that does not read
// cannot hold the server.
void send_all(int fd, const std::string& s) {
  size_t off = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (off < s.size() && std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 100);
    } else {
      return;
    }
  }
}

std::string response(const char* status, const std::string& type, const std::string& body) {
  return absl::StrCat("HTTP/1.0 ", status, "\r\nContent-Type: ", type, "\r\nContent-Length: ", body.size(),
                      "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::start(Registry& registry, const std::string& host, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);  // accepts until EAGAIN
  if (fd < 0) return absl::InternalError(absl::StrCat("metrics: socket: ", std::strerror(errno)));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("metrics: '", host, "' is not an IPv4 address"));
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 16) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", host, ":", port, ": ", why,
                                               " (is another service using the port?)"));
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<HttpServer>(new HttpServer(registry, fd, ntohs(addr.sin_port)));
}

HttpServer::HttpServer(Registry& registry, int fd, int port)
    : registry_(registry),
      fd_(fd),
      port_(port),
      rejected_(registry.counter("interlace_http_requests_rejected_total",
                                 "HTTP requests to the metrics port that were malformed, too large or too slow")) {
  thread_ = std::thread([this] { serve(); });
}

HttpServer::~HttpServer() {
  stop_ = true;
  thread_.join();
  ::close(fd_);
}

// One thread serves every connection, each with its own deadline: idle or
// slow clients cannot hold up a scrape (one at a time, 2 s each, ten idle
// connections once delayed a scrape by 20 s). Past kMaxConnections the oldest
// is dropped.
void HttpServer::serve() {
  struct Connection {
    int fd;
    std::string request;
    std::chrono::steady_clock::time_point deadline;
  };
  std::vector<Connection> open;
  auto drop = [&](size_t i, bool counted) {
    if (counted) rejected_.inc();
    ::close(open[i].fd);
    open.erase(open.begin() + static_cast<std::ptrdiff_t>(i));
  };
  while (!stop_) {
    std::vector<pollfd> fds{{fd_, POLLIN, 0}};
    for (const Connection& c : open) fds.push_back({c.fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 100) < 0) continue;
    const auto now = std::chrono::steady_clock::now();
    // Serve or drop the open connections, newest first so erasing keeps indices valid.
    for (size_t i = open.size(); i-- > 0;) {
      Connection& c = open[i];
      if (fds[i + 1].revents) {
        char buf[4096];
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n <= 0) {
          drop(i, true);  // closed before a whole request
          continue;
        }
        c.request.append(buf, static_cast<size_t>(n));
        if (c.request.size() > kMaxRequestBytes) {
          rejected_.inc();
          send_all(c.fd, response("431 Request Header Fields Too Large", "text/plain", "request too large\n"));
          drop(i, false);
          continue;
        }
        if (c.request.find("\r\n\r\n") != std::string::npos || c.request.find("\n\n") != std::string::npos) {
          handle(c.fd, c.request);
          drop(i, false);
          continue;
        }
      }
      if (now > c.deadline) drop(i, true);  // too slow
    }
    if (fds[0].revents & POLLIN) {
      for (int client; (client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0;) {
        if (open.size() >= kMaxConnections) drop(0, true);
        open.push_back({client, {}, now + std::chrono::milliseconds(kReadTimeoutMs)});
      }
    }
  }
  for (const Connection& c : open) ::close(c.fd);
}

absl::StatusOr<RequestLine> parse_request_line(std::string_view request) {
  const std::string_view line = request.substr(0, request.find_first_of("\r\n"));
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.substr(sp2 + 1, 5) != "HTTP/")
    return absl::InvalidArgumentError("expected 'GET /metrics HTTP/1.x'");
  return RequestLine{std::string(line.substr(0, sp1)), std::string(line.substr(sp1 + 1, sp2 - sp1 - 1))};
}

void HttpServer::handle(int client, const std::string& request) {
  auto parsed = parse_request_line(request);
  if (!parsed.ok()) {
    rejected_.inc();
    send_all(client, response("400 Bad Request", "text/plain", std::string(parsed.status().message()) + "\n"));
    return;
  }
  const std::string& method = parsed->method;
  const std::string& path = parsed->path;
  if (method != "GET") {
    send_all(client, response("405 Method Not Allowed", "text/plain", "only GET\n"));
  } else if (path != "/metrics") {
    send_all(client, response("404 Not Found", "text/plain", "see /metrics\n"));
  } else {
    send_all(client, response("200 OK", "text/plain; version=0.0.4; charset=utf-8", registry_.render()));
  }
}

}  // namespace interlace::metrics
