// /metrics over a real TCP socket: the exposition format, and bad requests
// answered, counted and survived.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "interlace/metrics/http_server.h"
#include "interlace/metrics/registry.h"

namespace interlace::metrics {
namespace {

std::string http_exchange(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

TEST(Metrics, ExpositionFormat) {
  Registry r;
  r.counter("interlace_x_total", "things", {{"port", "a"}}).add(3);
  r.counter("interlace_x_total", "things", {{"port", "b\"q"}}).inc();
  r.gauge("interlace_g", "a gauge").set(0.25);
  const std::string text = r.render();
  EXPECT_NE(text.find("# HELP interlace_x_total things\n# TYPE interlace_x_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("interlace_x_total{port=\"a\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("interlace_x_total{port=\"b\\\"q\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE interlace_g gauge\ninterlace_g 0.25\n"), std::string::npos) << text;
}

TEST(Metrics, ServesAndSurvivesBadRequests) {
  Registry r;
  r.counter("interlace_steps_total", "steps").add(5);
  auto server = HttpServer::start(r, "127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::string ok = http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.0 200 OK", 0), 0u) << ok;
  EXPECT_NE(ok.find("interlace_steps_total 5"), std::string::npos);
  EXPECT_NE(http_exchange(port, "GET /other HTTP/1.1\r\n\r\n").find("404"), std::string::npos);
  EXPECT_NE(http_exchange(port, "\x01\x02garbage\r\n\r\n").find("400"), std::string::npos);
  EXPECT_NE(http_exchange(port, std::string(20000, 'A')).find("431"), std::string::npos);
  EXPECT_EQ(http_exchange(port, "GET /metr"), "");  // closed before a whole request: dropped
  ok = http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(ok.find("interlace_http_requests_rejected_total 3"), std::string::npos) << ok;
}

}  // namespace
}  // namespace interlace::metrics
