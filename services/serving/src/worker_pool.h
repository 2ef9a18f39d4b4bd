// The gateway's side of the serving workers: one CURVE DEALER socket per
// worker, owned by one I/O thread (ZeroMQ sockets are not thread-safe; HTTP
// handler threads hand it frames through a queue and an eventfd). Each
// request's events come back on its own RequestStream. A worker counts as up
// once a CURVE handshake with it succeeded and down when the connection
// drops; its requests in flight then end with an error event, not a hang.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "absl/status/statusor.h"
#include "interlace/rollout/sampling.h"

namespace interlace::serving {

struct WorkerEvent {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int64_t> versions;
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

class WorkerPool {
 public:
  // KEYS: the serving workers' key directory (server.pub; this gateway's pair is clients/gateway.{pub,key}).
  static absl::StatusOr<std::unique_ptr<WorkerPool>> start(std::vector<std::string> endpoints, const std::string& keys_dir);
  ~WorkerPool();

  struct Submitted {
    uint64_t id;
    size_t worker;
    std::shared_ptr<RequestStream> stream;
  };
  // To the up worker with the fewest requests in flight; Unavailable if none is up.
  absl::StatusOr<Submitted> submit(const std::vector<int32_t>& prompt, const rollout::SamplingParams& sampling);
  // The client went away: the worker ends the request; its stream is dropped.
  void abort(uint64_t id);
  // After the final event: the stream is dropped.
  void done(uint64_t id);
  std::vector<WorkerStatus> status() const;
  int64_t in_flight() const;

 private:
  WorkerPool() = default;
  void loop();
  void wake();
  void on_event(size_t worker, const zmq::message_t& frame);
  void worker_down(size_t worker);

  zmq::context_t ctx_;
  std::vector<zmq::socket_t> sockets_, monitors_;
  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  mutable std::mutex mu_;
  std::vector<WorkerStatus> workers_;
  std::deque<std::pair<size_t, std::string>> outbox_;  // worker, frame
  struct Pending {
    size_t worker;
    std::shared_ptr<RequestStream> stream;
  };
  std::map<uint64_t, Pending> pending_;
  uint64_t next_id_ = 1;
  size_t round_robin_ = 0;
};

}  // namespace interlace::serving
