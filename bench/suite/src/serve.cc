// `interlace bench serve`: the serving path as it is deployed, as processes on
// loopback: serving workers (`serve worker --serve`, the cores split between
// them) behind gateways (`serve gateway`). Clients stream multi-turn
// conversations through /v1/completions (one SSE chunk per engine step, so
// chunk gaps are inter-token latencies); each turn's prompt is the previous
// one plus its answer and a new question, as an agent's history grows.
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "interlace/bench/suites.h"
#include "interlace/rl/supervisor.h"
#include "interlace/serving/worker_pool.h"

namespace interlace::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;
constexpr const char* kToken = "bench-serve-token";

std::string read_line_when_there(const std::string& path, double seconds) {
  const auto t0 = Clock::now();
  while (seconds_since(t0) < seconds) {
    std::ifstream in(path);
    std::string line;
    if (in && std::getline(in, line) && !line.empty()) return line;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return "";
}

struct Load {
  std::vector<double> ttft_ms, itl_ms;
  int64_t output_tokens = 0, prompt_tokens = 0, cached_tokens = 0, errors = 0;
  double seconds = 0;
  json summary() const {
    return {{"ttft", latency_stats(ttft_ms)},
            {"itl", latency_stats(itl_ms)},
            {"output_tokens_per_s", seconds > 0 ? double(output_tokens) / seconds : 0},
            {"cached_prompt_share", prompt_tokens > 0 ? double(cached_tokens) / double(prompt_tokens) : 0},
            {"errors", errors}};
  }
};

// CLIENTS conversations at once, TURNS streamed turns each.
Load converse(int port, int clients, const ServeBenchArgs& a, const std::string& tag) {
  Load load;
  std::mutex mu;
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      httplib::Client cl("127.0.0.1", port);
      cl.set_read_timeout(120);
      std::string history = absl::StrCat(tag, " client ", c, ": a shop sells pens at 3 each and books at 7 each. ");
      Load mine;
      for (int turn = 0; turn < a.turns; ++turn) {
        history += absl::StrCat("Question ", turn, ": what do ", c + turn, " pens cost? Answer: ");
        httplib::Request req;
        req.method = "POST";
        req.path = "/v1/completions";
        req.headers = {{"Authorization", std::string("Bearer ") + kToken}, {"Content-Type", "application/json"}};
        req.body = json({{"prompt", history}, {"max_tokens", a.max_tokens}, {"stream", true}, {"ignore_eos", true},
                         {"stream_options", {{"include_usage", true}}}, {"seed", c * 100 + turn}})
                       .dump();
        std::string buffer, text;
        const auto sent = Clock::now();
        auto last = sent;
        bool first = true;
        req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
          buffer.append(data, n);
          for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
            const std::string event = buffer.substr(0, end);
            if (!event.starts_with("data: ") || event == "data: [DONE]") continue;
            const json j = json::parse(event.substr(6), nullptr, false);
            if (j.is_discarded()) continue;
            if (j.contains("usage")) {
              mine.output_tokens += j["usage"]["completion_tokens"].get<int64_t>();
              mine.prompt_tokens += j["usage"]["prompt_tokens"].get<int64_t>();
              mine.cached_tokens += j["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>();
              continue;
            }
            if (!j.contains("choices") || j["choices"].empty()) continue;
            const auto now = Clock::now();
            (first ? mine.ttft_ms : mine.itl_ms).push_back(1e3 * std::chrono::duration<double>(now - (first ? sent : last)).count());
            first = false;
            last = now;
            text += j["choices"][0].value("text", "");
          }
          return true;
        };
        auto r = cl.send(req);
        if (!r || r->status != 200) {
          ++mine.errors;
          break;
        }
        history += text + " ";
      }
      std::lock_guard<std::mutex> lock(mu);
      load.ttft_ms.insert(load.ttft_ms.end(), mine.ttft_ms.begin(), mine.ttft_ms.end());
      load.itl_ms.insert(load.itl_ms.end(), mine.itl_ms.begin(), mine.itl_ms.end());
      load.output_tokens += mine.output_tokens;
      load.prompt_tokens += mine.prompt_tokens;
      load.cached_tokens += mine.cached_tokens;
      load.errors += mine.errors;
    });
  for (auto& t : threads) t.join();
  load.seconds = seconds_since(t0);
  return load;
}

}  // namespace

absl::Status run_bench_serve(const Common& c, const ServeBenchArgs& a) {
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("interlace-bench-serve-", ::getpid());
  fs::create_directories(dir);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{dir};
  const std::string config = a.model.empty() ? find_example("tiny-hybrid.json") : a.model;
  const std::string model = (dir / "model").string();
  if (rl::run_process({a.interlace, "model", "init", "--config", config, "--out", model}) != 0)
    return absl::InternalError(absl::StrCat("interlace model init --config ", config, " failed"));
  ChildProcesses children;
  const int threads = std::max(1, int(std::thread::hardware_concurrency()) / (2 * a.workers));
  // Two pools of workers: with the prefix/state cache and without.
  std::vector<std::string> cached, uncached;
  for (int i = 0; i < 2 * a.workers; ++i) {
    const bool with_cache = i < a.workers;
    const std::string endpoint_file = (dir / absl::StrCat("worker-", i)).string();
    children.pids.push_back(rl::spawn_process({a.interlace, "serve", "worker", "--serve", model, "--keys", (dir / "keys").string(),
                                               "--endpoint-file", endpoint_file, "--threads", std::to_string(threads),
                                               "--cache-bytes", with_cache ? "0" : "-1", "--quiet"}));
    const std::string endpoint = read_line_when_there(endpoint_file, 60);
    if (endpoint.empty()) return absl::UnavailableError("a serving worker did not start");
    (with_cache ? cached : uncached).push_back(endpoint);
  }
  std::ofstream(dir / "token") << kToken << "\n";
  auto gateway = [&](const std::string& name, const std::vector<std::string>& workers, const std::string& routing) -> int {
    std::vector<std::string> args = {a.interlace, "serve", "gateway", "--model", model, "--keys", (dir / "keys").string(),
                                     "--listen", "127.0.0.1:0", "--port-file", (dir / (name + ".port")).string(), "--token-file",
                                     (dir / "token").string(), "--routing", routing, "--quiet"};
    for (const auto& w : workers) args.insert(args.end(), {"--worker", w});
    children.pids.push_back(rl::spawn_process(args));
    const int port = std::atoi(read_line_when_there((dir / (name + ".port")).string(), 60).c_str());
    httplib::Client cl("127.0.0.1", port);
    for (int i = 0; i < 500; ++i) {
      auto r = cl.Get("/readyz");
      if (r && r->body.starts_with(absl::StrCat(workers.size(), " of "))) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return port;
  };
  const int aware = gateway("aware", cached, "cache_aware");
  const int round_robin = gateway("round-robin", cached, "round_robin");
  const int no_cache = gateway("no-cache", uncached, "cache_aware");
  if (aware <= 0 || round_robin <= 0 || no_cache <= 0) return absl::UnavailableError("a gateway did not start");

  json by_clients = json::array();
  for (int n : a.clients) {
    const Load l = converse(aware, n, a, absl::StrCat("load", n));
    by_clients.push_back({{"clients", n}, {"cache_aware_cache_on", l.summary()}});
    std::fprintf(stderr, "serve: %d clients: %.0f output tokens/s\n", n, double(l.output_tokens) / std::max(l.seconds, 1e-9));
  }
  const int compare_at = a.clients.size() > 1 ? a.clients[1] : a.clients[0];
  const Load cache_on = converse(aware, compare_at, a, "on");
  const Load cache_off = converse(no_cache, compare_at, a, "off");
  const Load rr = converse(round_robin, compare_at, a, "rr");

  // The gateway's own cost: one-token /generate through it, against the same
  // request sent to a worker with the gateway's client library, alternated.
  auto pool = serving::WorkerPool::start({cached[0]}, (dir / "keys").string());
  if (!pool.ok()) return pool.status();
  for (int i = 0; i < 500 && !(*pool)->status()[0].up; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const int single = gateway("single", {cached[0]}, "least_loaded");
  httplib::Client cl("127.0.0.1", single);
  rollout::SamplingParams one{.temperature = 0, .max_new_tokens = 1};
  const std::vector<int32_t> prompt = {10, 20, 30, 40, 50, 60, 70, 80};
  const std::string body = json({{"input_ids", prompt}, {"sampling_params", {{"max_new_tokens", 1}, {"temperature", 0}}}}).dump();
  std::vector<double> via_gateway, direct;
  for (int i = 0; i < 201; ++i) {
    auto t = Clock::now();
    auto r = cl.Post("/generate", {{"Authorization", std::string("Bearer ") + kToken}}, body, "application/json");
    if (i > 0) via_gateway.push_back(1e3 * seconds_since(t));  // the first one warms the cache
    if (!r || r->status != 200) return absl::InternalError("/generate through the gateway failed");
    t = Clock::now();
    auto s = (*pool)->submit(prompt, one);
    if (!s.ok()) return s.status();
    for (bool done = false; !done;)
      for (const auto& e : s->stream->wait(std::chrono::milliseconds(1000))) done = done || e.finished;
    (*pool)->done(s->id);
    if (i > 0) direct.push_back(1e3 * seconds_since(t));
  }
  const json via = latency_stats(via_gateway), straight = latency_stats(direct);
  const json overhead = {{"via_gateway", via}, {"direct", straight},
                         {"gateway_overhead_median_ms", via["median_ms"].get<double>() - straight["median_ms"].get<double>()}};
  json settings = {{"model", config}, {"workers", a.workers}, {"threads_per_worker", threads}, {"turns", a.turns},
                   {"max_tokens", a.max_tokens}, {"clients", a.clients}, {"compare_at_clients", compare_at}};
  json results = {{"by_clients", by_clients},
                  {"cache_on", cache_on.summary()},
                  {"cache_off", cache_off.summary()},
                  {"cache_aware", cache_on.summary()},
                  {"round_robin", rr.summary()},
                  {"gateway_overhead", overhead}};
  emit(c, "serve", settings, results, [&] {
    std::printf("%-28s %10s %10s %10s %10s %12s %8s\n", "RUN", "TTFT MED", "TTFT P99", "ITL MED", "ITL P99", "OUT TOK/S", "CACHED");
    auto row = [](const std::string& name, const json& s) {
      std::printf("%-28s %8.1fms %8.1fms %8.1fms %8.1fms %12.0f %7.0f%%\n", name.c_str(), s["ttft"]["median_ms"].get<double>(),
                  s["ttft"]["p99_ms"].get<double>(), s["itl"]["median_ms"].get<double>(), s["itl"]["p99_ms"].get<double>(),
                  s["output_tokens_per_s"].get<double>(), 100 * s["cached_prompt_share"].get<double>());
    };
    for (const json& b : by_clients) row(absl::StrCat(b["clients"].get<int>(), " clients"), b["cache_aware_cache_on"]);
    row(absl::StrCat(compare_at, " clients, cache on"), results["cache_on"]);
    row(absl::StrCat(compare_at, " clients, cache off"), results["cache_off"]);
    row(absl::StrCat(compare_at, " clients, round-robin"), results["round_robin"]);
    std::printf("gateway overhead per /generate: %.2f ms median (%.2f via the gateway, %.2f direct)\n",
                overhead["gateway_overhead_median_ms"].get<double>(), overhead["via_gateway"]["median_ms"].get<double>(),
                overhead["direct"]["median_ms"].get<double>());
  });
  return absl::OkStatus();
}

}  // namespace interlace::bench
