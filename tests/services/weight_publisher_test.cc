// The learner's weight publisher alone: a publication's chunks reassemble to
// the safetensors bytes of the weights, a worker's fetch over real ZeroMQ
// sockets gets them, non-finite weights are refused, and what it sends is
// counted.
#include "interlace/rl/weight_publisher.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <thread>
#include <zmq_addon.hpp>

#include "interlace/model/safetensors.h"
#include "interlace/transport/weight_sync.h"

namespace interlace::rl {
namespace {

model::NamedTensors random_tensors(std::mt19937_64& rng) {
  model::NamedTensors w;
  std::normal_distribution<float> normal;
  for (const char* name : {"a.weight", "b.weight"}) {
    core::Tensor t = core::Tensor::zeros({int64_t(3 + rng() % 300), 17}, core::DType::kF32);
    for (float& x : t.span_f32()) x = normal(rng);
    w.emplace(name, std::move(t));
  }
  return w;
}

std::string safetensors_of(const model::NamedTensors& w) {
  std::vector<std::pair<std::string, core::Tensor>> tensors(w.begin(), w.end());
  return model::safetensors_bytes(tensors);
}

TEST(WeightPublisher, APublicationsChunksReassembleToTheWeights) {
  std::mt19937_64 rng(std::random_device{}());
  metrics::Registry registry;
  WeightPublisher publisher(registry, WeightsTransport::kZeroMq);
  EXPECT_EQ(publisher.weights_id(), 0u);
  const model::NamedTensors w = random_tensors(rng);
  ASSERT_TRUE(publisher.publish(w, 7).ok());
  EXPECT_NE(publisher.weights_id(), 0u);
  transport::WeightAssembler assembler;
  for (const std::string& frame : publisher.chunk_frames()) ASSERT_TRUE(assembler.add_frame(frame).ok());
  ASSERT_TRUE(assembler.complete());
  EXPECT_EQ(assembler.version(), 7);
  EXPECT_EQ(assembler.weights_id(), publisher.weights_id());
  auto payload = assembler.finish();
  ASSERT_TRUE(payload.ok()) << payload.status();
  EXPECT_EQ(*payload, safetensors_of(w));
  EXPECT_EQ(registry.gauge("interlace_weights_version_published", "").get(), 7.0);

  const uint64_t first_id = publisher.weights_id();
  ASSERT_TRUE(publisher.publish(w, 8).ok());
  EXPECT_NE(publisher.weights_id(), first_id) << "each publication has its own id";
}

TEST(WeightPublisher, NonFiniteWeightsAreNotPublished) {
  std::mt19937_64 rng(std::random_device{}());
  metrics::Registry registry;
  WeightPublisher publisher(registry, WeightsTransport::kZeroMq);
  model::NamedTensors w = random_tensors(rng);
  ASSERT_TRUE(publisher.publish(w, 1).ok());
  const uint64_t good = publisher.weights_id();
  auto& t = w.at("b.weight");
  t.span_f32()[rng() % t.span_f32().size()] = NAN;
  absl::Status s = publisher.publish(w, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("b.weight"), std::string_view::npos) << s;
  EXPECT_EQ(publisher.weights_id(), good) << "the last good publication is still served";
  EXPECT_EQ(publisher.version(), 1);
}

TEST(WeightPublisher, AWorkersFetchOverZeroMqGetsTheWeightsAndIsCounted) {
  std::mt19937_64 rng(std::random_device{}());
  metrics::Registry registry;
  WeightPublisher publisher(registry, WeightsTransport::kZeroMq);
  const model::NamedTensors w = random_tensors(rng);
  ASSERT_TRUE(publisher.publish(w, 3).ok());

  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router), dealer(ctx, zmq::socket_type::dealer);
  router.bind("inproc://weights");
  dealer.connect("inproc://weights");
  std::thread server([&] {
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(router, std::back_inserter(parts)) || parts.size() != 2) return;
    auto req = transport::decode_weight_request(
        std::string_view(static_cast<const char*>(parts[1].data()), parts[1].size()));
    if (req.ok()) publisher.answer(router, parts[0], "worker-0", *req);
  });
  auto fetched = transport::fetch_weights(dealer, {.worker = "worker-0"}, std::chrono::seconds(10));
  server.join();
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(fetched->version, 3);
  EXPECT_EQ(fetched->bytes, safetensors_of(w));
  size_t frame_bytes = 0;
  for (const auto& f : publisher.chunk_frames()) frame_bytes += f.size();
  EXPECT_EQ(registry.counter("interlace_weight_publish_bytes_total", "").get(), double(frame_bytes));
}

}  // namespace
}  // namespace interlace::rl
