#include "interlace/serving/worker_pool.h"

#include <capnp/message.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "interlace/rl/service_util.h"
#include "interlace/transport/curve.h"
#include "interlace/transport/frame.h"
#include "proto/serving.capnp.h"
#include "spdlog/spdlog.h"

namespace interlace::serving {

// An event frame holds one step's tokens of one request: small.
constexpr transport::FrameLimits kEventLimits{.max_bytes = size_t{4} << 20};
// A cache events message: up to 65536 changes, or a snapshot of a whole cache (24 bytes an entry).
constexpr transport::FrameLimits kCacheEventLimits{.max_bytes = size_t{256} << 20, .traversal_words = uint64_t{64} << 20};
// How long to wait for an asked-for snapshot, or a hello's answer, before asking again.
constexpr std::chrono::milliseconds kSnapshotRetry{500};
constexpr std::chrono::milliseconds kHelloRetry{1000};
constexpr size_t kMaxWorkers = 200;

std::vector<WorkerEvent> RequestStream::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [this] { return !events_.empty(); });
  std::vector<WorkerEvent> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

void RequestStream::push(WorkerEvent e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::start(std::vector<std::string> endpoints, const std::string& keys_dir,
                                                               RoutingOptions routing, std::unique_ptr<SessionStore> sessions) {
  if (routing.policy != "cache_aware" && routing.policy != "least_loaded" && routing.policy != "round_robin")
    return absl::InvalidArgumentError(absl::StrCat("--routing ", routing.policy, ": expected cache_aware, least_loaded or round_robin"));
  auto server_key = transport::read_curve_key(keys_dir + "/server.pub");
  if (!server_key.ok()) return server_key.status();
  auto mine = transport::load_or_make_curve_key_pair(transport::client_keys_dir(keys_dir), "gateway");
  if (!mine.ok()) return mine.status();
  std::unique_ptr<WorkerPool> pool(new WorkerPool());
  pool->server_key_ = *server_key;
  pool->keys_ = *mine;
  pool->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  pool->routing_ = routing;
  pool->sessions_ = sessions ? std::move(sessions) : std::make_unique<MemorySessionStore>();
  pool->index_ = std::make_unique<PrefixIndex>(0);
  for (const std::string& e : endpoints)
    if (auto s = pool->add_worker(e); !s.ok()) return s;
  pool->thread_ = std::thread([p = pool.get()] { p->loop(); });
  return pool;
}

absl::Status WorkerPool::add_worker(const std::string& endpoint) {
  // tcp://HOST:PORT (what ZeroMQ would accept is wider; a registry entry is input from elsewhere).
  const size_t colon = endpoint.rfind(':');
  int port = 0;
  if (!endpoint.starts_with("tcp://") || endpoint.size() > 256 || colon <= 6 || !absl::SimpleAtoi(endpoint.substr(colon + 1), &port) ||
      port <= 0 || port > 65535)
    return absl::InvalidArgumentError(absl::StrCat("serving worker endpoint '", endpoint, "': expected tcp://HOST:PORT"));
  std::lock_guard<std::mutex> lock(mu_);
  for (const WorkerStatus& w : workers_)
    if (w.endpoint == endpoint) return absl::OkStatus();
  // Each worker costs four ZeroMQ sockets (of 1023 a context has) and a poll slot; workers that left stay listed (down).
  if (workers_.size() >= kMaxWorkers)
    return absl::ResourceExhaustedError(absl::StrCat("serving worker ", endpoint, " not added: this gateway already has ", kMaxWorkers,
                                                     " (restart it to forget workers that left)"));
  workers_.push_back({.endpoint = endpoint});
  index_->add_worker();
  to_connect_.push_back(endpoint);
  if (thread_.joinable()) wake();
  return absl::OkStatus();
}

void WorkerPool::connect_worker(const std::string& endpoint) {
  try {
    connect_worker_sockets(endpoint);
  } catch (const zmq::error_t& e) {
    // Out of sockets or file descriptors: the worker stays down (never chosen); the gateway goes on.
    spdlog::error("gateway: cannot make the sockets for the serving worker {}: {}", endpoint, e.what());
    sockets_.emplace_back();
    monitors_.emplace_back();
    subscribers_.emplace_back();
  }
  feeds_.emplace_back();
  endpoints_.push_back(endpoint);
  subscribed_.emplace_back();
  hello_sent_.emplace_back();
  hello_answered_.push_back(false);
}

void WorkerPool::connect_worker_sockets(const std::string& endpoint) {
  const size_t i = sockets_.size();
  zmq::socket_t s = rl::make_socket(ctx_, zmq::socket_type::dealer, int64_t(kEventLimits.max_bytes));
  transport::make_curve_client(s, server_key_, keys_);
  const std::string monitor = absl::StrCat("inproc://serving-worker-monitor-", i);
  if (zmq_socket_monitor(s.handle(), monitor.c_str(), ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) != 0)
    spdlog::error("gateway: cannot watch the connection to {}: {}", endpoint, zmq_strerror(zmq_errno()));
  zmq::socket_t m(ctx_, zmq::socket_type::pair);
  m.connect(monitor);
  try {
    s.connect(endpoint);
  } catch (const zmq::error_t& e) {
    spdlog::error("gateway: cannot connect to the serving worker {}: {}", endpoint, e.what());  // stays down
  }
  zmq::socket_t sub = rl::make_socket(ctx_, zmq::socket_type::sub, int64_t(kCacheEventLimits.max_bytes));
  transport::make_curve_client(sub, server_key_, keys_);
  sub.set(zmq::sockopt::subscribe, "");
  sockets_.push_back(std::move(s));
  monitors_.push_back(std::move(m));
  subscribers_.push_back(std::move(sub));
}

WorkerPool::~WorkerPool() {
  stop_ = true;
  wake();
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) close(wake_fd_);
}

void WorkerPool::wake() {
  const uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) < 0) {
  }  // a full counter still wakes the loop
}

absl::StatusOr<WorkerPool::Submitted> WorkerPool::submit(const std::vector<int32_t>& prompt,
                                                         const rollout::SamplingParams& sampling, const std::string& session) {
  // The session's pin first, outside the lock (with Redis, a round trip).
  const bool keyed = !session.empty() && session.size() <= 256;
  const std::optional<std::string> pinned = keyed ? sessions_->get(session) : std::nullopt;
  std::string pin;  // set: pin the session to this worker, after the lock
  absl::StatusOr<Submitted> out = submit_locked(prompt, sampling, keyed ? session : std::string(), pinned, pin);
  if (!pin.empty()) sessions_->set(session, pin);
  return out;
}

absl::StatusOr<WorkerPool::Submitted> WorkerPool::submit_locked(const std::vector<int32_t>& prompt,
                                                                const rollout::SamplingParams& sampling, const std::string& session,
                                                                const std::optional<std::string>& pinned, std::string& pin) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t n = workers_.size();
  // The up worker with the fewest requests in flight (ties in turn), and the busiest.
  size_t idlest = n, busiest = n;
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (round_robin_ + k) % n;
    if (!workers_[i].up) continue;
    if (idlest == n || workers_[i].in_flight < workers_[idlest].in_flight) idlest = i;
    if (busiest == n || workers_[i].in_flight > workers_[busiest].in_flight) busiest = i;
  }
  if (idlest == n) return absl::UnavailableError("no serving worker is connected");
  size_t best = idlest;
  std::string reason = "least_loaded";
  const std::vector<int64_t> matched = index_->match(prompt);
  size_t pinned_worker = n;
  if (pinned)
    for (size_t i = 0; i < n; ++i)
      if (workers_[i].endpoint == *pinned && workers_[i].up) pinned_worker = i;
  if (pinned_worker < n) {
    best = pinned_worker;
    reason = "session";
  } else if (routing_.policy == "round_robin") {
    for (size_t k = 0; k < n; ++k)
      if (workers_[(round_robin_ + k) % n].up) {
        best = (round_robin_ + k) % n;
        break;
      }
    reason = "round_robin";
  } else if (routing_.policy == "cache_aware") {
    const int64_t max_load = workers_[busiest].in_flight, min_load = workers_[idlest].in_flight;
    if (max_load - min_load > routing_.balance_abs && double(max_load) > routing_.balance_rel * double(min_load)) {
      reason = "load_imbalance";
    } else {
      size_t longest = n;
      for (size_t i = 0; i < n; ++i)
        if (workers_[i].up && matched[i] > 0 && (longest == n || matched[i] > matched[longest])) longest = i;
      if (longest != n && double(matched[longest]) >= routing_.cache_threshold * double(prompt.size())) {
        best = longest;
        reason = "prefix_hit";
      }
    }
  }
  if (!session.empty() && (!pinned || *pinned != workers_[best].endpoint)) pin = workers_[best].endpoint;
  round_robin_ = (best + 1) % n;
  index_->add_in_flight(best, prompt);  // its sampling group and repeats follow it here before its cache events do
  const uint64_t id = next_id_++;
  capnp::MallocMessageBuilder message;
  auto g = message.initRoot<proto::ServeRequest>().initGenerate();
  g.setId(id);
  auto p = g.initPrompt(uint32_t(prompt.size()));
  for (size_t i = 0; i < prompt.size(); ++i) p.set(uint32_t(i), prompt[i]);
  g.setTemperature(sampling.temperature);
  g.setTopP(sampling.top_p);
  g.setTopK(int32_t(sampling.top_k));
  g.setMaxTokens(int32_t(sampling.max_new_tokens));
  g.setSeed(sampling.seed);
  auto st = g.initStopTokens(uint32_t(sampling.stop_token_ids.size()));
  for (size_t i = 0; i < sampling.stop_token_ids.size(); ++i) st.set(uint32_t(i), sampling.stop_token_ids[i]);
  auto ss = g.initStopStrings(uint32_t(sampling.stop_strings.size()));
  for (size_t i = 0; i < sampling.stop_strings.size(); ++i) ss.set(uint32_t(i), sampling.stop_strings[i]);
  g.setTopLogprobs(uint8_t(std::clamp<int64_t>(sampling.top_logprobs, 0, 255)));
  outbox_.emplace_back(best, transport::flat_frame(message));
  auto stream = std::make_shared<RequestStream>();
  pending_[id] = {best, stream, prompt};
  ++workers_[best].in_flight;
  wake();
  return Submitted{id, best, stream, reason, matched[best]};
}

void WorkerPool::abort(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  capnp::MallocMessageBuilder message;
  message.initRoot<proto::ServeRequest>().setAbort(id);
  outbox_.emplace_back(it->second.worker, transport::flat_frame(message));
  forget(it);
  wake();
}

void WorkerPool::forget(std::map<uint64_t, Pending>::iterator it) {
  --workers_[it->second.worker].in_flight;
  index_->remove_in_flight(it->second.worker, it->second.prompt);
  pending_.erase(it);
}

void WorkerPool::done(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  forget(it);
}

std::vector<WorkerStatus> WorkerPool::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return workers_;
}

int64_t WorkerPool::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return int64_t(pending_.size());
}

size_t WorkerPool::index_entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_->entries();
}

CacheEventCounts WorkerPool::cache_event_counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

void WorkerPool::on_event(size_t worker, const zmq::message_t& frame) {
  WorkerEvent e;
  uint64_t id = 0;
  uint32_t running = 0, waiting = 0;
  std::optional<std::pair<uint16_t, uint64_t>> hello;  // events port, instance
  auto read = transport::read_frame<proto::ServeEvent>(
      std::string_view(static_cast<const char*>(frame.data()), frame.size()), kEventLimits, "serve event",
      [&](proto::ServeEvent::Reader r) {
        id = r.getId();
        for (int32_t t : r.getTokens()) e.tokens.push_back(t);
        for (float l : r.getLogprobs()) e.logprobs.push_back(l);
        for (int64_t v : r.getVersions()) e.versions.push_back(v);
        for (int32_t t : r.getTopTokens()) e.top_tokens.push_back(t);
        for (float l : r.getTopLogprobs()) e.top_logprobs.push_back(l);
        e.finished = r.getFinished();
        e.reason = r.getFinishReason().cStr();
        e.prompt_tokens = r.getPromptTokens();
        e.cached_tokens = r.getCachedTokens();
        e.error = r.getError().cStr();
        running = r.getRunning();
        waiting = r.getWaiting();
        if (r.hasHello()) hello = {r.getHello().getEventsPort(), r.getHello().getInstance()};
      });
  const size_t top = e.top_tokens.size();
  const bool top_ok = top == e.top_logprobs.size() &&
                      (e.tokens.empty() ? top == 0 : top % e.tokens.size() == 0 && top / e.tokens.size() <= 20);
  if (!read.ok() || e.logprobs.size() != e.tokens.size() || e.versions.size() != e.tokens.size() || !top_ok) {
    spdlog::warn("gateway: dropped an event from {}: {}", endpoints_[worker],
                 !read.ok() ? std::string(read.message())
                 : top_ok   ? "tokens, logprobs and versions differ in length"
                            : "its alternatives are not k per token");
    return;
  }
  if (hello) return on_hello(worker, hello->first, hello->second);
  std::lock_guard<std::mutex> lock(mu_);
  workers_[worker].running = running;
  workers_[worker].waiting = waiting;
  auto it = pending_.find(id);
  if (it == pending_.end() || it->second.worker != worker) return;  // aborted, or not this worker's
  it->second.stream->push(std::move(e));
}

void WorkerPool::worker_down(size_t worker) {
  std::lock_guard<std::mutex> lock(mu_);
  workers_[worker].up = false;
  index_->clear_worker(worker);  // a restarted worker starts with an empty cache
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.worker != worker) {
      ++it;
      continue;
    }
    it->second.stream->push({.finished = true, .reason = "error",
                             .error = absl::StrCat("the serving worker ", workers_[worker].endpoint, " went away")});
    forget(it++);
  }
}

void WorkerPool::on_hello(size_t worker, uint16_t events_port, uint64_t instance) {
  std::string endpoint;
  if (events_port > 0) {
    // The worker's host as this gateway reaches it (it may have bound 0.0.0.0), its events port.
    const std::string& requests = endpoints_[worker];
    endpoint = absl::StrCat(requests.substr(0, requests.rfind(':')), ":", events_port);
  }
  if (endpoint != subscribed_[worker]) {
    try {
      if (!subscribed_[worker].empty()) subscribers_[worker].disconnect(subscribed_[worker]);
      subscribed_[worker].clear();
      if (!endpoint.empty()) subscribers_[worker].connect(endpoint);
      subscribed_[worker] = endpoint;
    } catch (const zmq::error_t& e) {
      // Unanswered, so the hello goes again in a moment and this is retried.
      spdlog::warn("gateway: cannot follow the cache events of {} at {}: {}", endpoints_[worker], endpoint, e.what());
      return;
    }
  }
  hello_answered_[worker] = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    index_->clear_worker(worker);
  }
  feeds_[worker] = CacheFeed();
  if (!endpoint.empty()) feeds_[worker].hello(instance);
}

void WorkerPool::send_hello(size_t worker, CacheFeed::Clock::time_point now) {
  capnp::MallocMessageBuilder message;
  message.initRoot<proto::ServeRequest>().setHello();
  const std::string frame = transport::flat_frame(message);
  (void)sockets_[worker].send(zmq::buffer(frame), zmq::send_flags::dontwait);  // its answer says where its cache events are
  hello_sent_[worker] = now;
}

void WorkerPool::on_cache_events(size_t worker, const zmq::message_t& frame) {
  uint64_t instance = 0, seq = 0;
  bool snapshot = false;
  std::vector<std::pair<cache::UsablePrefix, bool>> entries;
  auto read = transport::read_frame<proto::CacheEvents>(
      std::string_view(static_cast<const char*>(frame.data()), frame.size()), kCacheEventLimits, "cache events",
      [&](proto::CacheEvents::Reader r) {
        instance = r.getInstance();
        seq = r.getSeq();
        snapshot = r.getSnapshot();
        entries.reserve(r.getEntries().size());
        for (auto x : r.getEntries())
          entries.push_back({{.hash = x.getHash(), .length = int64_t(x.getLength()), .version = x.getVersion()}, x.getStored()});
      });
  const CacheFeed::Decision d = read.ok() ? feeds_[worker].on_message(instance, seq, snapshot) : feeds_[worker].on_malformed();
  if (!read.ok()) spdlog::warn("gateway: dropped cache events from {}: {}", endpoints_[worker], std::string(read.message()));
  std::lock_guard<std::mutex> lock(mu_);
  counts_.malformed += read.ok() ? 0 : 1;
  counts_.lost += d.lost;
  if (d.clear) index_->clear_worker(worker);
  if (d.apply) {
    for (const auto& [prefix, stored] : entries) counts_.refused += index_->apply(worker, prefix, stored) ? 0 : 1;
    ++(snapshot ? counts_.snapshots : counts_.messages);
  }
}

void WorkerPool::keep_up_with_workers() {
  const auto now = CacheFeed::Clock::now();
  std::vector<bool> up(feeds_.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t w = 0; w < up.size(); ++w) up[w] = workers_[w].up;
  }
  for (size_t w = 0; w < feeds_.size(); ++w) {
    if (!up[w]) continue;
    // A hello or its answer can be lost (both are sent without blocking): ask again until one comes.
    if (!hello_answered_[w] && now - hello_sent_[w] >= kHelloRetry) send_hello(w, now);
    if (!feeds_[w].should_ask(now, kSnapshotRetry)) continue;
    capnp::MallocMessageBuilder message;
    message.initRoot<proto::ServeRequest>().setCacheSnapshot();
    const std::string frame = transport::flat_frame(message);
    if (sockets_[w].send(zmq::buffer(frame), zmq::send_flags::dontwait)) feeds_[w].asked(now);
  }
}

void WorkerPool::loop() {
  std::vector<zmq::pollitem_t> items;
  while (!stop_) {
    std::deque<std::string> added;
    {
      std::lock_guard<std::mutex> lock(mu_);
      added.swap(to_connect_);
    }
    for (const std::string& e : added) connect_worker(e);
    const size_t n = sockets_.size();
    if (items.size() != 3 * n + 1) {  // workers were added: poll their sockets too
      items.clear();
      // A worker whose sockets could not be made has none: fd -1, which poll ignores.
      auto item = [](zmq::socket_t& s) { return zmq::pollitem_t{s.handle(), s.handle() ? 0 : -1, ZMQ_POLLIN, 0}; };
      for (auto& s : sockets_) items.push_back(item(s));
      for (auto& m : monitors_) items.push_back(item(m));
      for (auto& s : subscribers_) items.push_back(item(s));
      items.push_back({nullptr, wake_fd_, ZMQ_POLLIN, 0});
    }
    try {
      zmq::poll(items.data(), items.size(), kSnapshotRetry / 2);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;  // a signal (SIGTERM for the gateway) landed on this thread
    }
    if (items.back().revents & ZMQ_POLLIN) {
      uint64_t count;
      if (read(wake_fd_, &count, sizeof count) < 0) {
      }
    }
    std::deque<std::pair<size_t, std::string>> out;
    {
      std::lock_guard<std::mutex> lock(mu_);
      out.swap(outbox_);
    }
    for (auto& [w, frame] : out) {
      if (!sockets_[w].send(zmq::buffer(frame), zmq::send_flags::dontwait))
        spdlog::warn("gateway: could not send to {} (its queue is full)", endpoints_[w]);
    }
    for (size_t w = 0; w < n; ++w) {
      while (items[w].revents & ZMQ_POLLIN) {
        zmq::message_t frame;
        if (!sockets_[w].recv(frame, zmq::recv_flags::dontwait)) break;
        on_event(w, frame);
      }
      while (items[n + w].revents & ZMQ_POLLIN) {
        zmq::message_t event, address;
        if (!monitors_[w].recv(event, zmq::recv_flags::dontwait)) break;
        if (event.more()) (void)monitors_[w].recv(address, zmq::recv_flags::dontwait);
        if (event.size() < 2) continue;
        uint16_t kind;
        std::memcpy(&kind, event.data(), sizeof kind);
        if (kind == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            workers_[w].up = true;
          }
          hello_answered_[w] = false;
          send_hello(w, CacheFeed::Clock::now());
        } else if (kind == ZMQ_EVENT_DISCONNECTED) {
          worker_down(w);
          feeds_[w] = CacheFeed();  // nothing to follow until it says hello again
          hello_answered_[w] = false;
        }
      }
      while (items[2 * n + w].revents & ZMQ_POLLIN) {
        zmq::message_t frame;
        if (!subscribers_[w].recv(frame, zmq::recv_flags::dontwait)) break;
        on_cache_events(w, frame);
      }
    }
    keep_up_with_workers();
  }
  for (auto& s : sockets_)
    if (s.handle()) zmq_socket_monitor(s.handle(), nullptr, 0);
}

}  // namespace interlace::serving
