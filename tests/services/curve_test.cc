// CURVE and the ZAP handler over real TCP sockets on loopback: an admitted
// key is heard under its file's name; a peer without keys, with a key nobody
// admitted, or pinned to another server's key gets nothing through.
#include "interlace/transport/curve.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <zmq_addon.hpp>

namespace interlace::transport {
namespace {

namespace fs = std::filesystem;

class Curve : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("interlace-curve-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    auto server = load_or_make_curve_key_pair(dir_.string(), "server");
    ASSERT_TRUE(server.ok()) << server.status();
    server_keys_ = *server;
    auto zap = ZapAuthenticator::start(server_ctx_, client_keys_dir(dir_.string()));
    ASSERT_TRUE(zap.ok()) << zap.status();
    zap_ = std::move(*zap);
    router_.set(zmq::sockopt::linger, 0);
    make_curve_server(router_, server_keys_);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Sends "hello" from `dealer` and returns the name the server saw, or
  // nullopt if nothing arrived within `wait`.
  std::optional<std::string> hello(zmq::socket_t& dealer, std::chrono::milliseconds wait = std::chrono::seconds(5)) {
    dealer.set(zmq::sockopt::linger, 0);
    dealer.connect(endpoint_);
    dealer.send(zmq::str_buffer("hello"), zmq::send_flags::dontwait);
    zmq::pollitem_t item{static_cast<void*>(router_), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, wait) != 1) return std::nullopt;
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(router_, std::back_inserter(parts)) || parts.size() != 2) return std::nullopt;
    EXPECT_EQ(parts[1].to_string(), "hello");
    return peer_name(parts[1]);
  }

  fs::path dir_;
  CurveKeyPair server_keys_;
  zmq::context_t server_ctx_, client_ctx_;
  std::unique_ptr<ZapAuthenticator> zap_;
  zmq::socket_t router_{server_ctx_, zmq::socket_type::router};
  std::string endpoint_;
};

TEST_F(Curve, AnAdmittedKeyIsHeardUnderItsName) {
  auto keys = load_or_make_curve_key_pair(client_keys_dir(dir_.string()), "worker-7");
  ASSERT_TRUE(keys.ok()) << keys.status();
  zmq::socket_t dealer(client_ctx_, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::routing_id, "worker-0");  // a name it chooses does not count
  make_curve_client(dealer, server_keys_.public_key, *keys);
  EXPECT_EQ(hello(dealer), "worker-7");
  EXPECT_GE(zap_->admitted(), 1);
  EXPECT_EQ(zap_->refused(), 0);
}

TEST_F(Curve, APeerWithoutAnAdmittedKeyGetsNothingThrough) {
  // No CURVE at all.
  zmq::socket_t plain(client_ctx_, zmq::socket_type::dealer);
  EXPECT_EQ(hello(plain, std::chrono::milliseconds(1500)), std::nullopt);
  // A key of its own that nobody admitted.
  zmq::socket_t stranger(client_ctx_, zmq::socket_type::dealer);
  make_curve_client(stranger, server_keys_.public_key, make_curve_key_pair());
  EXPECT_EQ(hello(stranger, std::chrono::milliseconds(1500)), std::nullopt);
  EXPECT_GE(zap_->refused(), 1);
  EXPECT_EQ(zap_->admitted(), 0);
}

TEST_F(Curve, AClientPinnedToAnotherServersKeyDoesNotTalkToThisOne) {
  // What a process that took a restarting learner's port looks like to a
  // worker: the worker's key is admitted, but the server's key is not the one
  // the worker pinned, so the handshake fails and nothing is exchanged.
  auto keys = load_or_make_curve_key_pair(client_keys_dir(dir_.string()), "worker-0");
  ASSERT_TRUE(keys.ok()) << keys.status();
  zmq::socket_t dealer(client_ctx_, zmq::socket_type::dealer);
  make_curve_client(dealer, make_curve_key_pair().public_key, *keys);
  EXPECT_EQ(hello(dealer, std::chrono::milliseconds(1500)), std::nullopt);
}

TEST_F(Curve, AKeyAddedWhileTheServerRunsIsAdmitted) {
  zmq::socket_t early(client_ctx_, zmq::socket_type::dealer);
  const CurveKeyPair later = make_curve_key_pair();
  make_curve_client(early, server_keys_.public_key, later);
  EXPECT_EQ(hello(early, std::chrono::milliseconds(1200)), std::nullopt);
  ASSERT_TRUE(write_curve_key_pair(client_keys_dir(dir_.string()), "late-worker", later).ok());
  // libzmq gives up on a connection refused by ZAP; a new one is admitted (the
  // handler reads the directory again when it meets a key it does not know).
  zmq::socket_t again(client_ctx_, zmq::socket_type::dealer);
  make_curve_client(again, server_keys_.public_key, later);
  EXPECT_EQ(hello(again), "late-worker");
}

TEST_F(Curve, KeyFilesAreCheckedAndSecretsArePrivate) {
  const std::string clients = client_keys_dir(dir_.string());
  auto keys = load_or_make_curve_key_pair(clients, "w");
  ASSERT_TRUE(keys.ok()) << keys.status();
  struct stat st{};
  ASSERT_EQ(::stat((fs::path(clients) / "w.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(clients.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u) << "the key directory is open to others";
  // The same pair comes back.
  auto again = load_or_make_curve_key_pair(clients, "w");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->public_key, keys->public_key);
  // A .pub that does not belong to the .key is refused, naming both.
  std::ofstream(fs::path(clients) / "w.pub") << make_curve_key_pair().public_key << "\n";
  auto mismatched = load_or_make_curve_key_pair(clients, "w");
  ASSERT_FALSE(mismatched.ok());
  EXPECT_NE(mismatched.status().message().find("w.pub is not the public key of"), std::string::npos)
      << mismatched.status();
  std::ofstream(fs::path(clients) / "bad.pub") << "not a key\n";
  auto bad = read_curve_key((fs::path(clients) / "bad.pub").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.pub: not a CURVE key"), std::string::npos) << bad.status();
  EXPECT_FALSE(write_curve_key_pair(clients, "../escape", make_curve_key_pair()).ok());
}

}  // namespace
}  // namespace interlace::transport
