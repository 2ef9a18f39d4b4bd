// Weights by NCCL on real GPUs (label gpu: scripts/device-check.sh runs it,
// scripts/test.sh skips it). On one GPU: a group whose peer never comes times
// out instead of hanging, and two ranks on one device end (refused, or the
// bytes arrive whole) without hanging. On two or more: the learner's sender
// and a worker's receiver move publications through fetch_weights over real
// ZeroMQ, reusing the group, and form a new one when the worker lost its own.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <random>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <cuda_runtime.h>

#include "interlace/transport/crc32c.h"
#include "interlace/transport/nccl_weights.h"
#include "interlace/transport/weight_sync.h"

namespace interlace::transport {
namespace {

using Clock = std::chrono::steady_clock;

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// The devices this process sees, or -1 (and why, on stdout) when fewer than `needed`.
int devices_or_skip(int needed) {
  auto n = nccl::device_count();
  if (!n.ok() || *n < needed) {
    std::printf("%s\n", n.ok() ? (std::to_string(*n) + " CUDA device(s)").c_str() : n.status().ToString().c_str());
    return -1;
  }
  return *n;
}

TEST(NcclPair, JoinTimesOutWhenThePeerNeverComes) {
  if (devices_or_skip(1) < 0) GTEST_SKIP() << "needs a CUDA device";
  auto id = nccl::NcclPair::new_unique_id();
  ASSERT_TRUE(id.ok()) << id.status();
  const auto t0 = Clock::now();
  auto pair = nccl::NcclPair::join(*id, 0, 0, std::chrono::milliseconds(1500));
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(pair.status().code(), absl::StatusCode::kDeadlineExceeded) << pair.status();
  EXPECT_LT(seconds, 10.0);
}

TEST(NcclPair, TwoRanksOnOneDeviceEndWithoutHanging) {
  if (devices_or_skip(1) < 0) GTEST_SKIP() << "needs a CUDA device";
  auto id = nccl::NcclPair::new_unique_id();
  ASSERT_TRUE(id.ok()) << id.status();
  const auto timeout = std::chrono::seconds(5);
  auto other = std::async(std::launch::async, [&] { return nccl::NcclPair::join(*id, 1, 0, timeout); });
  auto root = nccl::NcclPair::join(*id, 0, 0, timeout);
  ASSERT_EQ(other.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "rank 1 hung";
  auto peer = other.get();
  // NCCL does not support two ranks of a group on one device (it says
  // "Duplicate GPU", or older versions may hang): the deadlines must end both.
  // The services never form such a group (a one-GPU worker fetches over ZeroMQ).
  std::printf("two ranks on one device: rank 0 %s; rank 1 %s\n", root.status().ToString().c_str(),
              peer.status().ToString().c_str());
  if (!root.ok() || !peer.ok()) return;
  // Accepted after all: then the bytes must arrive whole.
  const std::string payload = random_bytes((1u << 20) + 3, 7);
  void *send_buf = nullptr, *recv_buf = nullptr;
  ASSERT_EQ(cudaMalloc(&send_buf, payload.size()), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&recv_buf, payload.size()), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(send_buf, payload.data(), payload.size(), cudaMemcpyHostToDevice), cudaSuccess);
  auto received = std::async(std::launch::async, [&] { return (*peer)->broadcast(recv_buf, payload.size(), timeout); });
  absl::Status sent = (*root)->broadcast(send_buf, payload.size(), timeout);
  absl::Status got = received.get();
  if (sent.ok() && got.ok()) {
    std::string back(payload.size(), '\0');
    ASSERT_EQ(cudaMemcpy(back.data(), recv_buf, back.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_TRUE(back == payload) << "bytes differ";
  }
  cudaFree(send_buf);
  cudaFree(recv_buf);
}

// A minimal learner: answers every request on a ROUTER with the sender's offer.
class OfferServer {
 public:
  OfferServer(zmq::context_t& ctx, nccl::WeightSender& sender) : router_(ctx, zmq::socket_type::router), sender_(sender) {
    router_.set(zmq::sockopt::linger, 0);
    router_.set(zmq::sockopt::rcvtimeo, 60000);  // a failed test ends the server instead of hanging it
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }
  // Answers `n` requests; returns the requests seen.
  std::future<std::vector<WeightRequestMessage>> serve(int n) {
    return std::async(std::launch::async, [this, n] {
      std::vector<WeightRequestMessage> seen;
      for (int i = 0; i < n; ++i) {
        std::vector<zmq::message_t> parts;
        if (!zmq::recv_multipart(router_, std::back_inserter(parts))) break;
        auto req = decode_weight_request(std::string_view(static_cast<const char*>(parts[1].data()), parts[1].size()));
        if (!req.ok()) break;
        seen.push_back(*req);
        auto offer = sender_.offer(req->worker, req->nccl_session);
        if (!offer.ok()) break;
        const std::string f = encode_weight_chunk(*offer);
        router_.send(zmq::buffer(parts[0].data(), parts[0].size()), zmq::send_flags::sndmore);
        router_.send(zmq::buffer(f));
      }
      return seen;
    });
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  zmq::socket_t router_;
  nccl::WeightSender& sender_;
  std::string endpoint_;
};

TEST(NcclWeights, PublicationsCrossTwoDevicesThroughFetchWeights) {
  if (devices_or_skip(2) < 0) GTEST_SKIP() << "needs two CUDA devices (NCCL does not support two ranks of a group on one)";
  auto sender = nccl::WeightSender::start(0, std::chrono::seconds(20));
  ASSERT_TRUE(sender.ok()) << sender.status();
  zmq::context_t ctx;
  OfferServer server(ctx, **sender);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(server.endpoint());
  auto receiver = std::make_unique<nccl::WeightReceiver>(1, std::chrono::seconds(20));
  auto seen = server.serve(4);
  NcclReceive by_nccl = [&](const WeightChunkFields& offer) { return receiver->receive(offer); };

  for (int version = 1; version <= 3; ++version) {
    // Odd sizes, and a larger third publication (the device buffers grow).
    const std::string payload = random_bytes(version == 3 ? (64u << 20) + 5 : (3u << 20) + 7 * version, version);
    (*sender)->publish(version, 100 + version, crc32c(payload), payload);
    const uint64_t held = receiver->session();
    const auto t0 = Clock::now();
    auto got = fetch_weights(dealer, {"w", 0, true, held}, std::chrono::seconds(20), nullptr, nullptr, by_nccl);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    ASSERT_TRUE(got.ok()) << "version " << version << ": " << got.status();
    EXPECT_TRUE(got->by_nccl);
    EXPECT_TRUE(got->bytes == payload) << "version " << version << ": bytes differ";
    EXPECT_EQ(got->version, version);
    EXPECT_EQ(got->weights_id, uint64_t(100 + version));
    if (version > 1) {
      EXPECT_EQ(receiver->session(), held) << "the group was not reused";
    }
    std::printf("version %d: %zu bytes by NCCL in %.3f s (%.2f GB/s, request to host bytes)\n", version,
                payload.size(), seconds, payload.size() / seconds / 1e9);
  }
  // A worker that restarted holds no group: the learner forms a new one.
  const uint64_t old_session = receiver->session();
  receiver = std::make_unique<nccl::WeightReceiver>(1, std::chrono::seconds(20));
  auto again = fetch_weights(dealer, {"w", 0, true, 0}, std::chrono::seconds(20), nullptr, nullptr, by_nccl);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE(receiver->session(), 0u);
  EXPECT_NE(receiver->session(), old_session);
  auto requests = seen.get();
  ASSERT_EQ(requests.size(), 4u);
  // Give the sender thread a moment to tally the last broadcast.
  for (auto until = Clock::now() + std::chrono::seconds(5); (*sender)->counts().sent < 4 && Clock::now() < until;)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ((*sender)->counts().sent, 4u);
  EXPECT_EQ((*sender)->counts().failed, 0u);
}

}  // namespace
}  // namespace interlace::transport
