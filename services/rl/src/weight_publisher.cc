#include "interlace/rl/weight_publisher.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "interlace/model/safetensors.h"
#include "interlace/rl/service_util.h"
#include "interlace/transport/weight_sync.h"
#include "spdlog/spdlog.h"

namespace interlace::rl {

using Clock = std::chrono::steady_clock;

WeightPublisher::WeightPublisher(metrics::Registry& r, WeightsTransport transport)
    // The worker's interlace_weights_version / interlace_weight_sync_* are what
    // it uses and fetched; the learner's are what it published and sent.
    : version_gauge_(r.gauge("interlace_weights_version_published", "weights version published")),
      bytes_(r.counter("interlace_weight_publish_bytes_total",
                       "weight bytes sent to workers (ZeroMQ chunks and NCCL broadcasts)")),
      seconds_(r.counter("interlace_weight_publish_seconds_total", "seconds spent serialising and sending weights")),
      nccl_offers_(r.counter("interlace_weight_sync_nccl_offers_total",
                             "weight requests answered with an NCCL broadcast (weights.transport nccl)")),
      nccl_sent_(r.counter("interlace_weight_sync_nccl_broadcasts_total", "NCCL weight broadcasts", {{"result", "sent"}})),
      nccl_failed_(
          r.counter("interlace_weight_sync_nccl_broadcasts_total", "NCCL weight broadcasts", {{"result", "failed"}})),
      transport_(transport) {}

void WeightPublisher::start_nccl() {
  // Broadcast from CUDA device 0 when this process sees one (workers take
  // devices 1, 2, ...; on a one-device machine they do not ask for NCCL);
  // otherwise say why and answer every request with ZeroMQ chunks.
  if (transport_ != WeightsTransport::kNccl || nccl_) return;
  auto sender = transport::nccl::WeightSender::start(0, std::chrono::seconds(10));
  if (!sender.ok()) {
    spdlog::warn("learner: weights.transport is nccl, but {}; weights go over ZeroMQ",
                 std::string(sender.status().message()));
    return;
  }
  nccl_ = std::move(*sender);
  spdlog::info("learner: weights by NCCL from CUDA device 0");
}

WeightPublisher::~WeightPublisher() = default;

absl::Status WeightPublisher::publish(const model::NamedTensors& weights, int64_t version) {
  const auto t0 = Clock::now();
  for (const auto& [name, t] : weights)
    for (float x : t.span_f32())
      if (!std::isfinite(x))
        return absl::DataLossError(absl::StrCat("the weights of version ", version, " are not finite (", name, " holds ",
                                                x, "): not published; the training diverged"));
  std::vector<std::pair<std::string, core::Tensor>> tensors(weights.begin(), weights.end());
  std::string payload = model::safetensors_bytes(tensors);
  weights_id_ = rng_() | 1;
  version_ = version;
  auto frames = std::make_shared<std::vector<std::string>>();
  const auto chunks = transport::chunk_weights(payload, version, weights_id_);
  for (const auto& c : chunks) frames->push_back(transport::encode_weight_chunk(c));
  chunk_frames_ = std::move(frames);
  if (nccl_) nccl_->publish(version, weights_id_, chunks.front().total_crc32c, std::move(payload));
  version_gauge_.set(double(version));
  seconds_.add(std::chrono::duration<double>(Clock::now() - t0).count());
  return absl::OkStatus();
}

void WeightPublisher::answer(zmq::socket_t& router, const zmq::message_t& identity, const std::string& worker,
                             const transport::WeightRequestMessage& request) {
  if (request.only_if_newer && request.have_weights_id == weights_id_ && weights_id_ != 0) {
    send_routed(router, identity,
                transport::encode_weight_chunk({{.version = version_, .weights_id = weights_id_, .index = 0, .count = 0}}));
    return;
  }
  if (nccl_ && request.accepts_nccl) {
    auto offer = nccl_->offer(worker, request.nccl_session);
    if (offer.ok()) {
      send_routed(router, identity, transport::encode_weight_chunk(*offer));
      nccl_offers_.inc();
      return;
    }
    spdlog::warn("learner: no NCCL offer for {} ({}); sending chunks over ZeroMQ", worker,
                 std::string(offer.status().message()));
  }
  const auto t0 = Clock::now();
  for (const std::string& chunk : *chunk_frames_) {
    send_routed_shared(router, identity, chunk, chunk_frames_);
    bytes_.add(double(chunk.size()));
  }
  seconds_.add(std::chrono::duration<double>(Clock::now() - t0).count());
}

void WeightPublisher::count_nccl() {
  if (!nccl_) return;
  const auto now = nccl_->counts();
  if (now.failed > nccl_counted_.failed)
    spdlog::warn("learner: NCCL weight broadcast failed {}; the worker fetches over ZeroMQ", now.last_error);
  nccl_sent_.add(double(now.sent - nccl_counted_.sent));
  nccl_failed_.add(double(now.failed - nccl_counted_.failed));
  bytes_.add(double(now.bytes - nccl_counted_.bytes));
  seconds_.add(now.seconds - nccl_counted_.seconds);
  nccl_counted_ = now;
}

}  // namespace interlace::rl
