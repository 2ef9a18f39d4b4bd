// interlace bench transport | weight-sync | async: the services' data paths.
//   transport    trajectories/s and MB/s through ZeroMQ + Cap'n Proto (encode,
//                send, receive, decode with every check) against raw ZeroMQ
//                moving the same bytes, side by side in one run.
//   weight-sync  a weights publication fetched over ZeroMQ (chunks, CRC-32C,
//                assembly) against bytes / loopback bandwidth measured with raw
//                ZeroMQ messages of the same size in the same run.
//   async        the same RL job run synchronously and asynchronously
//                (`interlace run`), end-to-end throughput of each.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "absl/strings/str_cat.h"
#include "interlace/bench/bench_util.h"
#include "interlace/bench/suites.h"
#include "interlace/core/file_util.h"
#include "interlace/model/config.h"
#include "interlace/model/model.h"
#include "interlace/model/safetensors.h"
#include "interlace/model/weights.h"
#include "absl/strings/str_format.h"
#include "interlace/core/status.h"
#include "interlace/transport/trajectory_codec.h"
#include "interlace/transport/curve.h"
#include "interlace/transport/weight_sync.h"

namespace interlace::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
namespace fs = std::filesystem;


double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? NAN : v[v.size() / 2];
}

transport::TrajectoryMessage bench_trajectory(int64_t tokens, int64_t generated) {
  std::mt19937_64 rng(7);
  transport::TrajectoryMessage m;
  m.job = "bench";
  m.env = "calculator";
  m.worker = "worker-0";
  rollout::Trajectory& t = m.trajectory;
  for (int64_t i = 0; i < tokens; ++i) {
    const bool gen = i >= tokens - generated;
    t.tokens.push_back(static_cast<int32_t>(rng() % 50000));
    t.loss_mask.push_back(gen);
    t.logprobs.push_back(gen ? -float(rng() % 1000) / 100 : NAN);
    t.sampled_logprobs.push_back(gen ? -float(rng() % 1000) / 100 : NAN);
    t.versions.push_back(gen ? 3 : -1);
  }
  t.turns = {{"system", 0, tokens / 4}, {"user", tokens / 4, tokens - generated}, {"assistant", tokens - generated, tokens}};
  t.reward = 1;
  t.finish_reason = "done";
  return m;
}


// One pass: `n` messages DEALER -> ROUTER over loopback TCP; seconds.
double transport_pass(zmq::context_t& ctx, int64_t n, bool codec, const transport::TrajectoryMessage& m,
                      const std::string& raw) {
  zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
  router.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::rcvhwm, 1000);
  dealer.set(zmq::sockopt::sndhwm, 1000);
  router.bind("tcp://127.0.0.1:*");
  dealer.connect(router.get(zmq::sockopt::last_endpoint));
  int64_t bad = 0;
  const auto t0 = Clock::now();
  std::thread receiver([&] {
    for (int64_t i = 0; i < n; ++i) {
      std::vector<zmq::message_t> parts;
      (void)zmq::recv_multipart(router, std::back_inserter(parts));
      if (codec) {
        auto d = transport::decode_trajectory(std::string_view(static_cast<const char*>(parts[1].data()), parts[1].size()));
        bad += !d.ok();
      }
    }
  });
  for (int64_t i = 0; i < n; ++i) {
    if (codec) {
      const std::string f = transport::encode_trajectory(m);
      dealer.send(zmq::buffer(f));
    } else {
      dealer.send(zmq::buffer(raw));
    }
  }
  receiver.join();
  const double s = seconds_since(t0);
  INTERLACE_CHECK(bad == 0, "bench transport: a frame failed to decode");
  return s;
}





constexpr char kAsyncJob[] = R"(name: bench-async
env: "calculator:max_number=5,short_prompt=1"
model: {init: EXAMPLES/tiny-hybrid.json}
algorithm: {name: grpo, steps: STEPS, groups_per_step: 4, group_size: 8, lr: 1e-4}
rollout: {workers: 1, max_turns: 2, max_turn_tokens: 96}
eval: {prompts: 0}
)";

}  // namespace


absl::Status run_bench_transport(const Common& c, const TransportArgs& a) {
  zmq::context_t ctx;
  const transport::TrajectoryMessage m = bench_trajectory(a.tokens, a.generated);
  const std::string frame = transport::encode_trajectory(m);
  transport_pass(ctx, std::min<int64_t>(a.messages, 2000), true, m, frame);  // warm-up
  std::vector<double> codec, raw;
  for (int r = 0; r < a.reps; ++r) {  // alternating, so both see the same machine
    codec.push_back(transport_pass(ctx, a.messages, true, m, frame));
    raw.push_back(transport_pass(ctx, a.messages, false, m, frame));
  }
  const double sc = median(codec), sr = median(raw);
  const double mb = double(frame.size()) * double(a.messages) / 1e6;
  json results = {{"frame_bytes", frame.size()},
                  {"capnp_messages_per_second", double(a.messages) / sc},
                  {"capnp_mb_per_second", mb / sc},
                  {"raw_messages_per_second", double(a.messages) / sr},
                  {"raw_mb_per_second", mb / sr},
                  {"capnp_over_raw", sr / sc},
                  {"target_ratio", 0.8}};
  emit(c, "transport", {{"messages", a.messages}, {"tokens", a.tokens}, {"generated", a.generated}, {"reps", a.reps}},
       results, [&] {
         std::printf("trajectory of %lld tokens (%lld generated) = %zu-byte frame, %lld messages, median of %d\n",
                     static_cast<long long>(a.tokens), static_cast<long long>(a.generated), frame.size(),
                     static_cast<long long>(a.messages), a.reps);
         std::printf("  ZeroMQ + Cap'n Proto (encode, decode, checks): %8.0f msg/s  %7.1f MB/s\n",
                     double(a.messages) / sc, mb / sc);
         std::printf("  raw ZeroMQ, same bytes:                        %8.0f msg/s  %7.1f MB/s\n",
                     double(a.messages) / sr, mb / sr);
         std::printf("  ratio %.2f (target >= 0.80)\n", sr / sc);
       });
  return absl::OkStatus();
}

absl::Status run_bench_weight_sync(const Common& c, const WeightSyncArgs& a) {
  zmq::context_t ctx;
  json per_model = json::array();
  std::vector<std::string> lines;
  for (const std::string& name : a.models) {
    auto config = model::load_config(find_example(name));
    if (!config.ok()) return config.status();
    const model::NamedTensors weights = model::random_weights(*config, 1);
    std::vector<std::pair<std::string, core::Tensor>> tensors(weights.begin(), weights.end());
    auto t_pub = Clock::now();
    const std::string payload = model::safetensors_bytes(tensors);
    std::vector<std::string> frames;
    for (const auto& ch : transport::chunk_weights(payload, 1, 99)) frames.push_back(transport::encode_weight_chunk(ch));
    const double publish_s = seconds_since(t_pub);

    zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
    for (zmq::socket_t* s : {&router, &dealer}) s->set(zmq::sockopt::linger, 0);
    if (a.curve) {  // no ZAP handler here: libzmq admits any key, the encryption is what costs
      const transport::CurveKeyPair server = transport::make_curve_key_pair();
      transport::make_curve_server(router, server);
      transport::make_curve_client(dealer, server.public_key, transport::make_curve_key_pair());
    }
    router.bind("tcp://127.0.0.1:*");
    dealer.connect(router.get(zmq::sockopt::last_endpoint));
    // The server answers a request with either the chunk frames or (raw) the
    // payload cut into same-size plain messages.
    std::atomic<bool> raw_mode{false}, stop{false};
    std::vector<std::string> raw_parts;
    for (size_t off = 0; off < payload.size(); off += size_t{1} << 20) raw_parts.push_back(payload.substr(off, size_t{1} << 20));
    std::thread server([&] {
      while (!stop) {
        zmq::pollitem_t item{static_cast<void*>(router), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(50));
        std::vector<zmq::message_t> parts;
        if (!zmq::recv_multipart(router, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
        for (const std::string& f : raw_mode ? raw_parts : frames) {
          router.send(zmq::buffer(parts[0].data(), parts[0].size()), zmq::send_flags::sndmore);
          router.send(zmq::buffer(f));
        }
      }
    });
    std::vector<double> sync_s, raw_s, swap_s;
    std::string buffer;  // reused across fetches, as a worker does
    for (int r = 0; r <= a.reps; ++r) {  // rep 0 warms up
      raw_mode = false;
      const auto t0 = Clock::now();
      auto got = transport::fetch_weights(dealer, {"bench", 0}, std::chrono::seconds(60), nullptr, &buffer);
      const double s = seconds_since(t0);
      INTERLACE_CHECK(got.ok() && got->bytes == payload, "bench weight-sync: fetch failed");
      const auto t1 = Clock::now();
      auto parsed = model::parse_safetensors_bytes(got->bytes, "bench");
      auto m = model::Model::from_tensors(*config, *parsed, {});
      INTERLACE_CHECK(m.ok(), "bench weight-sync: model from fetched weights failed");
      const double swap = seconds_since(t1);
      buffer = std::move(got->bytes);
      raw_mode = true;
      const auto t2 = Clock::now();
      dealer.send(zmq::str_buffer("raw please"));
      size_t received = 0;
      while (received < payload.size()) {
        zmq::message_t msg;
        (void)dealer.recv(msg);
        received += msg.size();
      }
      const double rs = seconds_since(t2);
      if (r == 0) continue;
      sync_s.push_back(s);
      raw_s.push_back(rs);
      swap_s.push_back(swap);
    }
    stop = true;
    server.join();
    const double ms = median(sync_s), mr = median(raw_s), mw = median(swap_s);
    const double bandwidth = double(payload.size()) / mr;
    per_model.push_back({{"model", name},
                         {"curve", a.curve},
                         {"payload_bytes", payload.size()},
                         {"chunks", frames.size()},
                         {"publish_seconds", publish_s},
                         {"sync_seconds", ms},
                         {"loopback_bytes_per_second", bandwidth},
                         {"ideal_seconds", mr},
                         {"sync_over_ideal", ms / mr},
                         {"swap_seconds", mw},
                         {"target_ratio", 1.5}});
    lines.push_back(absl::StrFormat(
        "%-12s %7.1f MB in %3zu chunks: fetch+verify %.3f s, bytes/loopback bandwidth (%.2f GB/s) %.3f s, ratio %.2f "
        "(target <= 1.5); build model %.3f s; publish (serialise + checksum) %.3f s",
        name, payload.size() / 1e6, frames.size(), ms, bandwidth / 1e9, mr, ms / mr, mw, publish_s));
  }
  emit(c, "weight-sync", {{"models", a.models}, {"reps", a.reps}, {"chunk_bytes", 1 << 20}}, {{"models", per_model}},
       [&] {
         for (const auto& l : lines) std::printf("%s\n", l.c_str());
       });
  return absl::OkStatus();
}

absl::Status run_bench_async(const Common& c, const AsyncArgs& a) {
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("interlace-bench-async-", ::getpid());
  fs::create_directories(dir);
  std::string base;
  if (a.job.empty()) {
    base = kAsyncJob;
    base.replace(base.find("EXAMPLES/tiny-hybrid.json"), 25, fs::absolute(find_example("tiny-hybrid.json")).string());
    base.replace(base.find("STEPS"), 5, std::to_string(a.steps));
  } else {
    auto text = core::read_file(a.job);
    if (!text.ok()) return text.status();
    base = *text;
    if (base.find("staleness:") != std::string::npos)
      return absl::FailedPreconditionError(absl::StrCat(a.job, ": remove its staleness section; the benchmark sets mode sync and async itself"));
  }
  json results = json::object();
  for (const char* mode : {"sync", "async"}) {
    const fs::path job = dir / absl::StrCat(mode, ".yaml");
    std::ofstream(job) << base << "staleness: {mode: " << mode << ", eta: 1}\n";
    const std::string cmd = absl::StrCat(a.interlace, " run ", job.string(), " --run-dir ", (dir / mode).string(),
                                         " --quiet -o json 2>", (dir / mode).string(), ".log");
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    if (pclose(p) != 0) return absl::FailedPreconditionError(absl::StrCat("bench async: the ", mode, " run failed; see ", (dir / mode).string(), ".log"));
    json s = json::parse(out, nullptr, false);
    if (s.is_discarded()) return absl::FailedPreconditionError(absl::StrCat("bench async: the ", mode, " run printed no summary"));
    results[mode] = {{"rl_seconds", s["rl_seconds"]},
                     {"trajectories_per_second", s["trajectories_per_second"]},
                     {"tokens_per_second", s["tokens_per_second"]},
                     {"staleness_mean", s["staleness_mean"]},
                     {"trajectories_stale_dropped", s["trajectories_stale_dropped"]}};
  }
  const double ratio = results["async"]["trajectories_per_second"].get<double>() /
                       results["sync"]["trajectories_per_second"].get<double>();
  results["async_over_sync"] = ratio;
  fs::remove_all(dir);
  emit(c, "async", {{"job", a.job.empty() ? "built-in (tiny-hybrid, calculator:max_number=5)" : a.job}, {"steps", a.steps}},
       results, [&] {
         for (const char* mode : {"sync", "async"})
           std::printf("%-5s  %.1f s  %.2f trajectories/s  %.0f tokens/s  staleness %.2f\n", mode,
                       results[mode]["rl_seconds"].get<double>(), results[mode]["trajectories_per_second"].get<double>(),
                       results[mode]["tokens_per_second"].get<double>(), results[mode]["staleness_mean"].get<double>());
         std::printf("async / sync throughput: %.2fx (AReaL reports 2.77x on GPUs)\n", ratio);
       });
  return absl::OkStatus();
}

}  // namespace interlace::bench
