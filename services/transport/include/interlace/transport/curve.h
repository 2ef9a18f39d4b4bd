// Authenticated, encrypted service connections: ZeroMQ CURVE with a ZAP
// handler that admits only known client keys.
//
// A key directory (a run's RUN/keys/, made by `interlace run`) holds
//   server.pub, server.key     the learner's key pair (clients pin server.pub)
//   clients/NAME.pub           one file per admitted client; NAME is the
//   clients/NAME.key           identity the server sees (ZeroMQ's User-Id)
// Each file is one Z85 key (40 characters) and a newline; secret keys are
// 0600. Whoever can write clients/ decides who may connect: a worker on
// another machine makes its own pair and only its .pub is copied there.
//
// Without a ZAP handler, libzmq lets every CURVE client in; so a server
// socket is only made after ZapAuthenticator has started on its context.
#pragma once

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "absl/status/statusor.h"

namespace interlace::transport {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;
};

CurveKeyPair make_curve_key_pair();
// Reads one Z85 key file; says which file and what is wrong with it.
absl::StatusOr<std::string> read_curve_key(const std::string& path);
// Writes NAME.pub (0644) and NAME.key (0600) into `dir` (created 0700 if missing).
absl::Status write_curve_key_pair(const std::string& dir, const std::string& name, const CurveKeyPair& keys);
// The pair in dir/NAME.{pub,key}, made and written first if there is none.
absl::StatusOr<CurveKeyPair> load_or_make_curve_key_pair(const std::string& dir, const std::string& name);

// Where the admitted clients' keys are: keys_dir/clients (the server's pair is
// keys_dir/server.{pub,key}).
std::string client_keys_dir(const std::string& keys_dir);

// Socket roles. The server's secret key stays in this process; a client pins
// the server's public key, so a process that took the server's port without
// its secret key cannot talk to it.
void make_curve_server(zmq::socket_t& socket, const CurveKeyPair& server);
void make_curve_client(zmq::socket_t& socket, const std::string& server_public_key, const CurveKeyPair& client);

// The authenticated name of the peer that sent `message` (ZeroMQ's User-Id,
// set by the ZAP handler); empty if there is none.
std::string peer_name(const zmq::message_t& message);

// The ZAP handler (RFC 27) of one ZeroMQ context: a thread answering on
// inproc://zeromq.zap.01. It admits CURVE clients whose public key is one of
// clients/*.pub, with User-Id = the file's name; everything else (unknown
// keys, other mechanisms) is refused. An unknown key makes it read the
// directory again if it changed, so a client added while the server runs is
// admitted without a restart. (libzmq closes a refused connection for good:
// a client refused before its key was added must connect again.)
class ZapAuthenticator {
 public:
  static absl::StatusOr<std::unique_ptr<ZapAuthenticator>> start(zmq::context_t& ctx, std::string clients_dir);
  ~ZapAuthenticator();
  int64_t admitted() const { return admitted_.load(); }
  int64_t refused() const { return refused_.load(); }

 private:
  ZapAuthenticator(zmq::context_t& ctx, std::string clients_dir);
  void serve();
  void reload();
  std::string name_of(const std::string& public_key_binary);

  zmq::socket_t socket_;
  std::string clients_dir_;
  std::map<std::string, std::string> names_;  // 32-byte public key -> name
  std::filesystem::file_time_type clients_dir_mtime_{};
  std::chrono::steady_clock::time_point last_reload_{};
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> admitted_{0}, refused_{0};
  std::thread thread_;
};

}  // namespace interlace::transport
