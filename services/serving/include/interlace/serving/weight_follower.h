// A serving worker following a training run (`serve worker --serve MODEL
// --follow RUN`): a thread that asks the run's learner, every poll, whether
// it published newer weights (on its weights port, CURVE; the run's
// keys/clients/ admits this worker by a key made there on first use, as for
// the run's own workers) and, when it did, fetches them and builds the
// model, for the serving loop to swap in between engine steps. Asking costs
// one small message when nothing is new (the request says only_if_newer).
// The run's endpoints file is read again on each poll, so a learner that
// restarts on other ports is followed. A failed fetch keeps the weights in
// use, and is counted.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "absl/status/statusor.h"
#include "interlace/model/model.h"

namespace interlace::serving {

struct FollowOptions {
  std::string run_dir;
  std::string name = "serving";  // its key's name in the run's keys/clients/
  std::chrono::milliseconds poll{1000};
};

class WeightFollower {
 public:
  // CONFIG and PRECISION: how to build each new model (the served model's).
  static absl::StatusOr<std::unique_ptr<WeightFollower>> start(FollowOptions options, model::ModelConfig config,
                                                               model::PrecisionProfile precision);
  ~WeightFollower();

  struct Update {
    std::shared_ptr<model::Model> model;
    int64_t version = 0;
  };
  // The newest weights fetched and not yet taken (older ones were superseded).
  std::optional<Update> take();

  int64_t updates() const { return updates_; }      // publications fetched and built
  int64_t failures() const { return failures_; }    // fetches or builds that failed
  int64_t bytes() const { return bytes_; }          // payload bytes fetched
  int64_t version() const { return version_; }      // of the newest fetched (-1: none yet)

 private:
  WeightFollower(FollowOptions options, model::ModelConfig config, model::PrecisionProfile precision)
      : o_(std::move(options)), config_(std::move(config)), precision_(precision) {}
  void loop();
  absl::Status poll_once();
  absl::Status fetch_once();

  const FollowOptions o_;
  const model::ModelConfig config_;
  const model::PrecisionProfile precision_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::optional<Update> ready_;
  std::atomic<int64_t> updates_{0}, failures_{0}, bytes_{0}, version_{-1};
  uint64_t weights_id_ = 0;  // the loop thread's
  zmq::context_t ctx_;       // shut down to cut a fetch short when the worker stops
  std::thread thread_;
};

}  // namespace interlace::serving
