// /metrics over a real TCP socket (prometheus-cpp's exposer): the exposition
// format, and bad requests answered, counted and survived.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

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

// A counter that mirrors a cumulative total kept elsewhere never goes down.
TEST(Metrics, CounterSetAddsTheDifference) {
  Registry r;
  Value& c = r.counter("interlace_hits_total", "hits");
  c.set(5);
  c.set(3);  // an older reading: ignored
  c.set(9);
  EXPECT_EQ(c.get(), 9);
  EXPECT_EQ(&c, &r.counter("interlace_hits_total", "hits"));
}

TEST(Metrics, HistogramBucketsObservations) {
  Registry r;
  auto& h = r.histogram("interlace_step_duration_seconds", "step time", seconds_buckets(), {{"phase", "rl"}});
  h.Observe(0.3);
  h.Observe(7);
  const std::string text = r.render();
  EXPECT_NE(text.find("# TYPE interlace_step_duration_seconds histogram"), std::string::npos) << text;
  EXPECT_NE(text.find("interlace_step_duration_seconds_bucket{phase=\"rl\",le=\"0.5\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("interlace_step_duration_seconds_bucket{phase=\"rl\",le=\"10\"} 2\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("interlace_step_duration_seconds_count{phase=\"rl\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("interlace_step_duration_seconds_sum{phase=\"rl\"} 7.3"), std::string::npos) << text;
}

TEST(Metrics, ATakenPortIsAClearError) {
  Registry r;
  auto first = MetricsExposer::start(r, "127.0.0.1", 0);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = MetricsExposer::start(r, "127.0.0.1", (*first)->port());
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("is the port taken?"), std::string::npos) << second.status();
}

TEST(Metrics, ServesAndSurvivesBadRequests) {
  Registry r;
  r.counter("interlace_steps_total", "steps").add(5);
  auto server = MetricsExposer::start(r, "127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::string ok = http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200 OK", 0), 0u) << ok;
  EXPECT_NE(ok.find("interlace_steps_total 5"), std::string::npos);
  EXPECT_NE(http_exchange(port, "GET /other HTTP/1.1\r\n\r\n").find("404"), std::string::npos);
  EXPECT_NE(http_exchange(port, "\x01\x02garbage\r\n\r\n").find("400"), std::string::npos);
  EXPECT_NE(http_exchange(port, std::string(20000, 'A')).find("400"), std::string::npos);
  ok = http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(ok.find("interlace_http_requests_rejected_total 3"), std::string::npos) << ok;
}

// Ten clients that connect and send half a request do not delay a scrape
// (civetweb has a thread per connection: fewer idle clients than threads);
// they are dropped (and counted) at their deadline.
TEST(Metrics, IdleConnectionsDoNotDelayAScrape) {
  Registry r;
  r.counter("interlace_steps_total", "steps").add(1);
  auto server = MetricsExposer::start(r, "127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::vector<int> idle;
  for (int i = 0; i < 10; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::send(fd, "GET /met", 8, MSG_NOSIGNAL);  // half a request, then nothing
    idle.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto t0 = std::chrono::steady_clock::now();
  const std::string ok = http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(ok.find("interlace_steps_total 1"), std::string::npos) << ok;
  EXPECT_LT(seconds, 5.0) << "a scrape waited behind idle connections (2 s each, one at a time, before)";
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // past their deadline
  const std::string after = http_exchange(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_NE(after.find("interlace_http_requests_rejected_total 10"), std::string::npos) << after;
  static_assert(MetricsExposer::kThreads > 10);
  for (int fd : idle) ::close(fd);
}

// interlace_build_info says which build a series came from.
TEST(Registry, BuildInfoNamesVersionCommitAndWhatWasBuiltIn) {
  Registry r;
  register_build_info(r, /*nccl=*/true);
  const std::string text = r.render();
  EXPECT_NE(text.find("# TYPE interlace_build_info gauge"), std::string::npos) << text;
  EXPECT_NE(text.find("interlace_build_info{commit=\""), std::string::npos) << text;
  EXPECT_NE(text.find(",nccl=\"true\",version=\"0.1.0\"} 1\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("commit=\"\""), std::string::npos) << "an empty commit label";
}

}  // namespace
}  // namespace interlace::metrics
