// The gateway's side of the serving workers: one CURVE DEALER socket per
// worker, owned by one I/O thread (ZeroMQ sockets are not thread-safe; HTTP
// handler threads hand it frames through a queue and an eventfd). Each
// request's events come back on its own RequestStream. A worker counts as up
// once a CURVE handshake with it succeeded and down when the connection
// drops; its requests in flight then end with an error event, not a hang.
// Each worker's cache events arrive on a SUB socket (one per worker, owned by
// the same thread) and keep the routing index: see cache_feed.h.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "absl/status/statusor.h"
#include "interlace/rollout/sampling.h"
#include "interlace/serving/cache_feed.h"
#include "interlace/serving/prefix_index.h"
#include "interlace/serving/session_store.h"
#include "interlace/transport/curve.h"

namespace interlace::serving {

struct WorkerEvent {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int64_t> versions;
  std::vector<int32_t> top_tokens;  // with top_logprobs asked: k alternatives per token, flattened
  std::vector<float> top_logprobs;
  bool finished = false;
  std::string reason;  // with finished: stop, length, aborted, error
  int64_t prompt_tokens = 0, cached_tokens = 0;
  std::string error;
};

class RequestStream {
 public:
  // The events that arrived, waiting up to `timeout` for the first one.
  std::vector<WorkerEvent> wait(std::chrono::milliseconds timeout);
  void push(WorkerEvent e);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WorkerEvent> events_;
};

struct WorkerStatus {
  std::string endpoint;
  bool up = false;
  int64_t in_flight = 0;
  int64_t running = 0, waiting = 0;  // as the worker last reported
};

// What the cache events did, over all workers (for /metrics).
struct CacheEventCounts {
  int64_t messages = 0;   // change messages applied
  int64_t lost = 0;       // change messages that never arrived (a gap in seq)
  int64_t snapshots = 0;  // snapshots applied
  int64_t malformed = 0;  // messages that did not decode
  int64_t refused = 0;    // entries not indexed: a worker's share was full
};

// How a request picks its worker. cache_aware is SGLang's rule: when the
// loads are imbalanced (busiest - idlest above balance_abs and busiest above
// balance_rel x idlest) the least loaded worker; otherwise the worker holding
// the longest prefix of the prompt if it covers at least cache_threshold of
// it; otherwise the least loaded. A session key (X-Session-Id) pins a
// conversation to the worker it first went to while that worker is up.
struct RoutingOptions {
  std::string policy = "cache_aware";  // cache_aware | least_loaded | round_robin
  double cache_threshold = 0.5;
  int64_t balance_abs = 32;
  double balance_rel = 1.5;
};

class WorkerPool {
 public:
  // KEYS: the serving workers' key directory (server.pub; this gateway's pair is clients/gateway.{pub,key}).
  // ENDPOINTS may be empty when workers are added later (found in the registry).
  // SESSIONS: where X-Session-Id pins live (default: in memory).
  static absl::StatusOr<std::unique_ptr<WorkerPool>> start(std::vector<std::string> endpoints, const std::string& keys_dir,
                                                           RoutingOptions routing = {},
                                                           std::unique_ptr<SessionStore> sessions = nullptr);
  ~WorkerPool();

  struct Submitted {
    uint64_t id;
    size_t worker;
    std::shared_ptr<RequestStream> stream;
    std::string reason;      // why that worker: prefix_hit, least_loaded, load_imbalance, session, round_robin
    int64_t matched = 0;     // prompt tokens the index says that worker holds
  };
  // Unavailable if no worker is up.
  absl::StatusOr<Submitted> submit(const std::vector<int32_t>& prompt, const rollout::SamplingParams& sampling,
                                   const std::string& session = "");
  // Connects to one more worker (one the registry listed); an endpoint already known is ignored.
  absl::Status add_worker(const std::string& endpoint);
  // The client went away: the worker ends the request; its stream is dropped.
  void abort(uint64_t id);
  // After the final event: the stream is dropped.
  void done(uint64_t id);
  std::vector<WorkerStatus> status() const;
  int64_t in_flight() const;
  size_t index_entries() const;
  CacheEventCounts cache_event_counts() const;
  int64_t session_errors() const { return sessions_->errors(); }

 private:
  WorkerPool() = default;
  // The I/O thread's part of adding a worker: its sockets.
  void connect_worker(const std::string& endpoint);
  void connect_worker_sockets(const std::string& endpoint);
  absl::StatusOr<Submitted> submit_locked(const std::vector<int32_t>& prompt, const rollout::SamplingParams& sampling,
                                          const std::string& session, const std::optional<std::string>& pinned, std::string& pin);
  void loop();
  void wake();
  void on_event(size_t worker, const zmq::message_t& frame);
  void worker_down(size_t worker);
  void on_hello(size_t worker, uint16_t events_port, uint64_t instance);
  void send_hello(size_t worker, CacheFeed::Clock::time_point now);
  void on_cache_events(size_t worker, const zmq::message_t& frame);
  // Re-sends unanswered hellos and asks for the snapshots the feeds want.
  void keep_up_with_workers();

  zmq::context_t ctx_;
  std::vector<zmq::socket_t> sockets_, monitors_, subscribers_;
  // The I/O thread's alone, by worker: its feed, endpoint, the events endpoint its SUB is connected to, its hello.
  std::vector<CacheFeed> feeds_;
  std::vector<std::string> endpoints_, subscribed_;
  std::vector<CacheFeed::Clock::time_point> hello_sent_;
  std::vector<bool> hello_answered_;
  std::string server_key_;
  transport::CurveKeyPair keys_;
  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  mutable std::mutex mu_;
  std::vector<WorkerStatus> workers_;
  std::deque<std::pair<size_t, std::string>> outbox_;  // worker, frame
  std::deque<std::string> to_connect_;                 // workers added, for the I/O thread to connect
  struct Pending {
    size_t worker;
    std::shared_ptr<RequestStream> stream;
    std::vector<int32_t> prompt;  // in the index as in flight until the request ends
  };
  std::map<uint64_t, Pending> pending_;
  void forget(std::map<uint64_t, Pending>::iterator it);  // with mu_ held
  CacheEventCounts counts_;
  RoutingOptions routing_;
  std::unique_ptr<PrefixIndex> index_;
  std::unique_ptr<SessionStore> sessions_;
  uint64_t next_id_ = 1;
  size_t round_robin_ = 0;
};

}  // namespace interlace::serving
