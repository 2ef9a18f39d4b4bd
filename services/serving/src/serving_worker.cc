#include "interlace/serving/serving_worker.h"

#include <capnp/message.h>
#include <omp.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <map>
#include <random>
#include <zmq.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "interlace/cache/prefix_cache.h"
#include "interlace/control/presence.h"
#include "interlace/core/file_util.h"
#include "interlace/model/model.h"
#include "interlace/model/precision.h"
#include "interlace/metrics/registry.h"
#include "interlace/model/tokenizer.h"
#include "interlace/rl/engine_metrics.h"
#include "interlace/rl/service_util.h"
#include "interlace/rollout/engine.h"
#include "interlace/serving/weight_follower.h"
#include "interlace/transport/curve.h"
#include "interlace/transport/frame.h"
#include "proto/serving.capnp.h"
#include "spdlog/spdlog.h"

namespace interlace::serving {
namespace {

std::atomic<bool> g_stop{false};

// Requests are small (a prompt of token ids); 16 MiB is a 4M-token prompt.
constexpr transport::FrameLimits kRequestLimits{.max_bytes = size_t{16} << 20};
constexpr int64_t kMaxNewTokens = 1 << 20;
constexpr int64_t kMaxTopLogprobs = 20;  // OpenAI's bound
// Cache changes per CacheEvents message: a dropped version's tree can be many.
constexpr size_t kEntriesPerMessage = 1 << 16;
// Messages queued per subscriber before PUB drops (the gateway sees the gap and asks for a snapshot).
constexpr int kEventsHighWater = 10000;

// One request in the engine, and what has not been sent of it yet.
struct InFlight {
  zmq::message_t identity;  // the gateway connection it came from
  uint64_t gateway_id = 0;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int64_t> versions;
  std::vector<int32_t> top_tokens;  // k alternatives per token, when asked for
  std::vector<float> top_logprobs;
};

const char* reason_name(rollout::FinishReason r) {
  switch (r) {
    case rollout::FinishReason::kStopToken:
    case rollout::FinishReason::kStopString: return "stop";
    case rollout::FinishReason::kLength: return "length";
    case rollout::FinishReason::kAborted: return "aborted";
  }
  return "error";
}

class Server {
 public:
  Server(const ServingWorkerOptions& o, std::shared_ptr<model::Model> model, std::unique_ptr<model::Tokenizer> tokenizer,
         rollout::SpeculativeConfig speculate)
      : o_(o), model_(std::move(model)), tokenizer_(std::move(tokenizer)), speculate_(std::move(speculate)) {}

  absl::Status start() {
    auto server = transport::load_or_make_curve_key_pair(o_.keys_dir, "server");
    if (!server.ok()) return server.status();
    auto zap = transport::ZapAuthenticator::start(ctx_, transport::client_keys_dir(o_.keys_dir));
    if (!zap.ok()) return zap.status();
    zap_ = std::move(*zap);
    socket_ = rl::make_socket(ctx_, zmq::socket_type::router, int64_t(kRequestLimits.max_bytes));
    transport::make_curve_server(socket_, *server);
    try {
      socket_.bind(o_.listen);
    } catch (const zmq::error_t& e) {
      return absl::UnavailableError(absl::StrCat("serving worker: cannot bind ", o_.listen, ": ", e.what()));
    }
    endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
    if (o_.cache_bytes >= 0) {
      events_ = zmq::socket_t(ctx_, zmq::socket_type::pub);
      events_.set(zmq::sockopt::sndhwm, kEventsHighWater);
      events_.set(zmq::sockopt::linger, 0);
      transport::make_curve_server(events_, *server);
      const std::string events_at = !o_.events_listen.empty() ? o_.events_listen
                                                              : o_.listen.substr(0, o_.listen.rfind(':')) + ":*";
      try {
        events_.bind(events_at);
      } catch (const zmq::error_t& e) {
        return absl::UnavailableError(absl::StrCat("serving worker: cannot bind the cache events socket ", events_at, ": ", e.what(),
                                                   " (--events-listen)"));
      }
      const std::string bound = events_.get(zmq::sockopt::last_endpoint);
      if (!absl::SimpleAtoi(bound.substr(bound.rfind(':') + 1), &events_port_))
        return absl::InternalError(absl::StrCat("serving worker: no port in the events endpoint ", bound));
    }
    instance_ = std::random_device{}() | (uint64_t(std::random_device{}()) << 32);
    if (!o_.endpoint_file.empty()) {
      if (auto s = core::write_file(o_.endpoint_file, endpoint_ + "\n"); !s.ok()) return s;
    }
    if (o_.cache_bytes >= 0)
      cache_ = std::make_unique<cache::PrefixCache>(*model_, cache::CacheConfig{.max_bytes = o_.cache_bytes,
                                                                                .state_dtype = model_->precision().state});
    engine_ = std::make_unique<rollout::Engine>(model_, /*version=*/0,
                                                rollout::EngineConfig{.max_running = o_.max_running,
                                                                      .vocab_limit = tokenizer_->vocab_size(),
                                                                      .speculate = speculate_},
                                                tokenizer_.get());
    engine_->set_cache(cache_.get());
    if (cache_) cache_->set_listener([this](const cache::UsablePrefix& p, bool stored) { changes_.push_back({p, stored}); });
    engine_->set_token_hook([this](int64_t id, const rollout::TokenSample& sample, int64_t version) {
      auto it = in_flight_.find(id);
      if (it == in_flight_.end()) return;
      it->second.tokens.push_back(sample.token);
      it->second.logprobs.push_back(sample.raw_logprob);
      it->second.versions.push_back(version);
      for (const auto& [token, logprob] : sample.top) {
        it->second.top_tokens.push_back(token);
        it->second.top_logprobs.push_back(logprob);
      }
    });
    if (auto s = start_metrics(); !s.ok()) return s;
    if (auto s = register_in_control_plane(); !s.ok()) return s;
    if (!o_.follow.empty()) {
      const std::string key = "serving-" + (o_.name.empty() ? control::this_host() : o_.name);
      auto follower = WeightFollower::start({.run_dir = o_.follow, .name = key, .poll = std::chrono::milliseconds(o_.follow_poll_ms)},
                                            model_->config(), model_->precision());
      if (!follower.ok()) return follower.status();
      follower_ = std::move(*follower);
      if (!o_.quiet) std::fprintf(stderr, "serving worker: following the weights of %s\n", o_.follow.c_str());
    }
    if (!o_.quiet)
      std::fprintf(stderr, "serving worker: %s on %s (keys %s)\n", o_.model_dir.c_str(), endpoint_.c_str(), o_.keys_dir.c_str());
    return absl::OkStatus();
  }

  void run() {
    while (!g_stop) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      try {
        zmq::poll(&item, 1, std::chrono::milliseconds(engine_->idle() ? 100 : 0));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
        continue;  // SIGTERM: the loop's condition sees it
      }
      if (item.revents & ZMQ_POLLIN) receive_all();
      swap_in_new_weights();
      if (!engine_->idle()) engine_->step();
      send_progress();
      publish_cache_events();
      engine_metrics_.update(*engine_);
      running_ = engine_->running();
      waiting_ = engine_->waiting();
      if (cache_) cache_usage_ = double(cache_->counters().bytes()) / double(std::max<int64_t>(1, cache_->max_bytes()));
    }
  }

 private:
  absl::Status start_metrics() {
    if (o_.metrics_listen.empty()) return absl::OkStatus();
    const std::vector<std::string> hp = absl::StrSplit(o_.metrics_listen, absl::MaxSplits(':', 1));
    int port = -1;
    if (hp.size() != 2 || !absl::SimpleAtoi(hp[1], &port) || port < 0 || port > 65535)
      return absl::InvalidArgumentError(absl::StrCat("--metrics-listen ", o_.metrics_listen, ": expected HOST:PORT (port 0: any free one)"));
    metrics::register_build_info(registry_, false);
    auto http = metrics::MetricsExposer::start(registry_, hp[0], port);
    if (!http.ok()) return http.status();
    http_ = std::move(*http);
    if (!o_.metrics_port_file.empty())
      if (auto s = core::write_file(o_.metrics_port_file, absl::StrCat(http_->port(), "\n")); !s.ok()) return s;
    return absl::OkStatus();
  }

  // Between steps: running requests go on under the new weights (each token
  // carries its version), and the cache keeps prefixes per version.
  void swap_in_new_weights() {
    if (!follower_) return;
    weight_sync_failures_.set(double(follower_->failures()));
    weight_sync_bytes_.set(double(follower_->bytes()));
    auto update = follower_->take();
    if (!update) return;
    engine_->update_weights(update->model, update->version);
    model_ = update->model;
    weights_version_.set(double(update->version));
    if (!o_.quiet) std::fprintf(stderr, "serving worker: now serving weights version %lld\n", static_cast<long long>(update->version));
  }

  absl::Status register_in_control_plane() {
    if (o_.redis.empty()) return absl::OkStatus();
    auto address = control::parse_redis_address(o_.redis);
    if (!address.ok()) return address.status();
    std::string advertised = o_.advertise;
    if (advertised.empty()) {
      advertised = endpoint_;
      for (const char* any : {"0.0.0.0", "[::]", "*"})
        if (const size_t at = advertised.find(any); at != std::string::npos) advertised.replace(at, std::strlen(any), control::this_host());
    }
    presence_ = std::make_unique<control::Presence>(
        control::with_password_from_env(*address), o_.prefix, o_.name.empty() ? "serving@" + control::this_host() : o_.name, "serving",
        [this, advertised](control::WorkerEntry& e) {
          e.endpoint = advertised;
          e.state = "serving";
          e.running = running_;
          e.waiting = waiting_;
          e.cache_usage = cache_usage_;
        });
    if (!o_.quiet) std::fprintf(stderr, "serving worker: registered in %s as %s\n", o_.redis.c_str(), advertised.c_str());
    return absl::OkStatus();
  }

  void receive_all() {
    while (true) {
      zmq::message_t identity, frame;
      if (!socket_.recv(identity, zmq::recv_flags::dontwait)) return;
      if (!identity.more() || !socket_.recv(frame, zmq::recv_flags::dontwait)) continue;
      while (frame.more()) {  // a peer sending more parts than the protocol has: drain them
        zmq::message_t extra;
        if (!socket_.recv(extra, zmq::recv_flags::dontwait)) break;
        frame.move(extra);
      }
      handle(identity, std::string_view(static_cast<const char*>(frame.data()), frame.size()));
    }
  }

  void handle(zmq::message_t& identity, std::string_view frame) {
    uint64_t id = 0;
    rollout::Request request;
    std::optional<uint64_t> abort;
    bool hello = false, snapshot = false;
    std::string refusal;
    auto read = transport::read_frame<proto::ServeRequest>(frame, kRequestLimits, "serve request", [&](proto::ServeRequest::Reader r) {
      if (r.isAbort()) {
        abort = r.getAbort();
        return;
      }
      hello = r.isHello();
      snapshot = r.isCacheSnapshot();
      if (!r.isGenerate()) return;
      auto g = r.getGenerate();
      id = g.getId();
      for (int32_t t : g.getPrompt()) request.prompt.push_back(t);
      request.sampling.temperature = g.getTemperature();
      request.sampling.top_p = g.getTopP();
      request.sampling.top_k = g.getTopK();
      request.sampling.max_new_tokens = g.getMaxTokens();
      request.sampling.seed = g.getSeed();
      for (int32_t t : g.getStopTokens()) request.sampling.stop_token_ids.push_back(t);
      for (auto s : g.getStopStrings()) request.sampling.stop_strings.emplace_back(s.cStr());
      request.sampling.top_logprobs = g.getTopLogprobs();
    });
    if (!read.ok()) {
      ++rejected_;
      frames_rejected_.inc();
      spdlog::warn("serving worker: dropped a request: {} ({} dropped so far)", std::string(read.message()), rejected_);
      return;
    }
    if (hello) {
      capnp::MallocMessageBuilder message;
      auto h = message.initRoot<proto::ServeEvent>().initHello();
      h.setEventsPort(uint16_t(events_port_));
      h.setInstance(instance_);
      send_frame(identity, transport::flat_frame(message));
      return;
    }
    if (snapshot) {
      snapshot_asked_ = true;  // published after this round's changes, once however many gateways asked
      return;
    }
    if (abort) {
      for (auto& [engine_id, f] : in_flight_)
        if (f.gateway_id == *abort && f.identity == identity) {
          engine_->abort(engine_id);
          break;
        }
      return;
    }
    const int64_t vocab = tokenizer_->vocab_size();
    if (request.prompt.empty()) refusal = "the prompt is empty";
    for (size_t i = 0; i < request.prompt.size() && refusal.empty(); ++i)
      if (request.prompt[i] < 0 || request.prompt[i] >= vocab)
        refusal = absl::StrCat("prompt token ", i, " is ", request.prompt[i], ", outside the vocabulary [0, ", vocab, ")");
    if (refusal.empty() && (request.sampling.max_new_tokens < 1 || request.sampling.max_new_tokens > kMaxNewTokens))
      refusal = absl::StrCat("maxTokens ", request.sampling.max_new_tokens, " is not in [1, ", kMaxNewTokens, "]");
    if (refusal.empty() && !(request.sampling.top_p > 0 && request.sampling.top_p <= 1))
      refusal = absl::StrCat("topP ", request.sampling.top_p, " is not in (0, 1]");
    if (refusal.empty() && request.sampling.top_logprobs > kMaxTopLogprobs)
      refusal = absl::StrCat("topLogprobs ", request.sampling.top_logprobs, " is not in [0, ", kMaxTopLogprobs, "]");
    if (refusal.empty() && engine_->waiting() >= o_.max_waiting)
      refusal = absl::StrCat("queue full: ", engine_->waiting(), " requests waiting");
    if (!refusal.empty()) {
      requests_refused_.inc();
      send_event(identity, id, InFlight{}, "error", 0, 0, refusal);
      return;
    }
    const int64_t engine_id = engine_->submit(std::move(request));
    InFlight& f = in_flight_[engine_id];
    f.identity.copy(identity);
    f.gateway_id = id;
  }

  void send_progress() {
    std::map<int64_t, rollout::RequestOutput> done;
    for (auto& out : engine_->take_finished()) done.emplace(out.id, std::move(out));
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
      InFlight& f = it->second;
      auto d = done.find(it->first);
      if (f.tokens.empty() && d == done.end()) {
        ++it;
        continue;
      }
      const char* reason = d == done.end() ? "" : reason_name(d->second.finish);
      send_event(f.identity, f.gateway_id, f, reason, d == done.end() ? 0 : d->second.prompt_tokens,
                 d == done.end() ? 0 : d->second.cached_tokens, "");
      f.tokens.clear();
      f.logprobs.clear();
      f.versions.clear();
      f.top_tokens.clear();
      f.top_logprobs.clear();
      it = d == done.end() ? std::next(it) : in_flight_.erase(it);
    }
  }

  // The tokens, log-probs, versions and alternatives F holds (not yet sent).
  void send_event(zmq::message_t& identity, uint64_t id, const InFlight& f, const std::string& reason, int64_t prompt_tokens,
                  int64_t cached_tokens, const std::string& error) {
    capnp::MallocMessageBuilder message;
    auto e = message.initRoot<proto::ServeEvent>();
    e.setId(id);
    auto t = e.initTokens(uint32_t(f.tokens.size()));
    auto l = e.initLogprobs(uint32_t(f.tokens.size()));
    auto v = e.initVersions(uint32_t(f.tokens.size()));
    for (size_t i = 0; i < f.tokens.size(); ++i) {
      t.set(uint32_t(i), f.tokens[i]);
      l.set(uint32_t(i), f.logprobs[i]);
      v.set(uint32_t(i), f.versions[i]);
    }
    auto tt = e.initTopTokens(uint32_t(f.top_tokens.size()));
    auto tl = e.initTopLogprobs(uint32_t(f.top_tokens.size()));
    for (size_t i = 0; i < f.top_tokens.size(); ++i) {
      tt.set(uint32_t(i), f.top_tokens[i]);
      tl.set(uint32_t(i), f.top_logprobs[i]);
    }
    e.setFinished(!reason.empty());
    e.setFinishReason(reason);
    e.setPromptTokens(uint32_t(prompt_tokens));
    e.setCachedTokens(uint32_t(cached_tokens));
    e.setError(error);
    e.setRunning(uint32_t(engine_->running()));
    e.setWaiting(uint32_t(engine_->waiting()));
    send_frame(identity, transport::flat_frame(message));
  }

  void send_frame(zmq::message_t& identity, const std::string& frame) {
    zmq::message_t to;
    to.copy(identity);
    // A gateway that went away leaves its messages undeliverable: ROUTER drops them.
    if (socket_.send(to, zmq::send_flags::sndmore | zmq::send_flags::dontwait))
      socket_.send(zmq::buffer(frame), zmq::send_flags::dontwait);
  }

  // This round's cache changes, in order, then a snapshot if one was asked for
  // (after the changes, so its seq covers them).
  void publish_cache_events() {
    if (!cache_) return;
    for (size_t from = 0; from < changes_.size(); from += kEntriesPerMessage) {
      const size_t n = std::min(kEntriesPerMessage, changes_.size() - from);
      capnp::MallocMessageBuilder message;
      auto e = message.initRoot<proto::CacheEvents>();
      e.setInstance(instance_);
      e.setSeq(++seq_);
      auto entries = e.initEntries(uint32_t(n));
      for (size_t i = 0; i < n; ++i) fill(entries[uint32_t(i)], changes_[from + i].first, changes_[from + i].second);
      publish(transport::flat_frame(message));
    }
    changes_.clear();
    if (!snapshot_asked_) return;
    snapshot_asked_ = false;
    const std::vector<cache::UsablePrefix> held = cache_->usable_prefixes();
    capnp::MallocMessageBuilder message;
    auto e = message.initRoot<proto::CacheEvents>();
    e.setInstance(instance_);
    e.setSeq(seq_);
    e.setSnapshot(true);
    auto entries = e.initEntries(uint32_t(held.size()));
    for (size_t i = 0; i < held.size(); ++i) fill(entries[uint32_t(i)], held[i], true);
    publish(transport::flat_frame(message));
  }

  static void fill(proto::CacheEntry::Builder b, const cache::UsablePrefix& p, bool stored) {
    b.setHash(p.hash);
    b.setLength(uint32_t(std::min<int64_t>(p.length, UINT32_MAX)));
    b.setVersion(p.version);
    b.setStored(stored);
  }

  void publish(const std::string& frame) {
    // PUB never blocks: past a subscriber's high-water mark it drops, which the subscriber sees as a gap in seq.
    (void)events_.send(zmq::buffer(frame), zmq::send_flags::dontwait);
  }

  const ServingWorkerOptions& o_;
  std::shared_ptr<model::Model> model_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  rollout::SpeculativeConfig speculate_;
  zmq::context_t ctx_;
  std::unique_ptr<transport::ZapAuthenticator> zap_;
  zmq::socket_t socket_;
  std::string endpoint_;
  zmq::socket_t events_;  // cache events (PUB); none without a cache
  int events_port_ = 0;
  uint64_t instance_ = 0, seq_ = 0;
  std::vector<std::pair<cache::UsablePrefix, bool>> changes_;  // since the last publish
  bool snapshot_asked_ = false;
  std::unique_ptr<cache::PrefixCache> cache_;
  std::unique_ptr<rollout::Engine> engine_;
  std::map<int64_t, InFlight> in_flight_;  // engine id -> request
  int64_t rejected_ = 0;                   // malformed frames dropped
  // Exported only with --metrics-listen; kept either way (they cost nothing).
  metrics::Registry registry_;
  rl::EngineMetrics engine_metrics_{registry_};
  metrics::Value& frames_rejected_ = registry_.counter("interlace_frames_rejected_total",
                                                      "frames that failed to decode or check, dropped", {{"port", "serve"}});
  metrics::Value& requests_refused_ = registry_.counter(
      "interlace_serve_requests_refused_total", "well-formed requests answered with an error (bad prompt or sampling, queue full)");
  std::unique_ptr<metrics::MetricsExposer> http_;
  // The load the registry entry reports (its heartbeat runs on a thread of its own).
  std::atomic<int64_t> running_{0}, waiting_{0};
  std::atomic<double> cache_usage_{0};
  std::unique_ptr<control::Presence> presence_;
  std::unique_ptr<WeightFollower> follower_;
  metrics::Value& weights_version_ = registry_.gauge("interlace_weights_version", "weights version in use");
  metrics::Value& weight_sync_bytes_ =
      registry_.counter("interlace_weight_sync_bytes_total", "weight payload bytes received and applied");
  metrics::Value& weight_sync_failures_ =
      registry_.counter("interlace_weight_sync_failures_total", "weight fetches rejected (corrupt or partial); old weights kept");
};

}  // namespace

int run_serving_worker(const ServingWorkerOptions& o) {
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  if (o.keys_dir.empty()) {
    std::fprintf(stderr, "error: serve worker --serve needs --keys DIR (its CURVE keys; clients/ holds the gateway's)\n");
    return 2;
  }
  // Workers that share a machine and each spin all its cores' OpenMP threads
  // slow each other down by orders of magnitude (measured: 4 workers on 2
  // cores, 1.4 s for what one answers in 0.03 s).
  if (o.threads > 0) omp_set_num_threads(o.threads);
  auto precision = model::parse_precision(o.precision);
  if (!precision.ok()) {
    std::fprintf(stderr, "error: --precision: %s\n", std::string(precision.status().message()).c_str());
    return 2;
  }
  auto loaded = model::Model::load(o.model_dir, *precision);
  if (!loaded.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  auto speculate = rollout::parse_speculate(o.speculate);
  if (speculate.ok()) {
    if (auto s = rollout::load_draft_model(*speculate, **loaded, *precision); !s.ok()) speculate = s;
  }
  if (!speculate.ok()) {
    std::fprintf(stderr, "error: --speculate: %s\n", std::string(speculate.status().message()).c_str());
    return 2;
  }
  auto tokenizer = model::load_tokenizer(o.model_dir);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  Server server(o, std::shared_ptr<model::Model>(std::move(*loaded)), std::move(*tokenizer), *speculate);
  if (auto s = server.start(); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  server.run();
  return 0;
}

}  // namespace interlace::serving
