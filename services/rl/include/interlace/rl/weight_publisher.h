// The learner's side of weight delivery: each published version is checked
// (finite), serialised once and cut into chunk frames that every request is
// answered with over ZeroMQ; with weights.transport nccl and a CUDA device, a
// request that accepts NCCL is answered with an offer and the bytes go by an
// NCCL broadcast instead (see transport/nccl_weights.h). Counts what it sends
// in the registry it is given.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "absl/status/status.h"
#include "interlace/metrics/registry.h"
#include "interlace/model/weights.h"
#include "interlace/rl/job_spec.h"
#include "interlace/transport/messages.h"
#include "interlace/transport/nccl_weights.h"

namespace interlace::rl {

class WeightPublisher {
 public:
  WeightPublisher(metrics::Registry& registry, WeightsTransport transport);
  ~WeightPublisher();
  // weights.transport nccl: starts the NCCL sender (device 0) or says why
  // weights go over ZeroMQ. Call once, when the service is up.
  void start_nccl();

  // Refuses (DataLoss, naming the tensor) weights that are not finite:
  // workers would sample garbage and every later step would train on it.
  absl::Status publish(const model::NamedTensors& weights, int64_t version);
  // Answers one request from `worker` (its authenticated name) on `router`.
  void answer(zmq::socket_t& router, const zmq::message_t& identity, const std::string& worker,
              const transport::WeightRequestMessage& request);
  // The NCCL sender thread's tallies into the metrics; call now and then.
  void count_nccl();

  int64_t version() const { return version_; }
  uint64_t weights_id() const { return weights_id_; }  // 0 before the first publish
  const std::vector<std::string>& chunk_frames() const { return *chunk_frames_; }

 private:
  metrics::Value &version_gauge_, &bytes_, &seconds_, &nccl_offers_, &nccl_sent_, &nccl_failed_;
  // The current publication's chunk frames, shared by every send of them.
  std::shared_ptr<const std::vector<std::string>> chunk_frames_ = std::make_shared<std::vector<std::string>>();
  int64_t version_ = -1;
  uint64_t weights_id_ = 0;
  std::mt19937_64 rng_{std::random_device{}()};
  WeightsTransport transport_;
  std::unique_ptr<transport::nccl::WeightSender> nccl_;  // weights.transport nccl, when a device is there
  transport::nccl::WeightSender::Counts nccl_counted_;
};

}  // namespace interlace::rl
