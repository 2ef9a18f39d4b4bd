#include "interlace/transport/curve.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>
#include <zmq_addon.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "interlace/core/file_util.h"
#include "spdlog/spdlog.h"

namespace interlace::transport {
namespace {

namespace fs = std::filesystem;

// A key is 32 bytes; Z85 writes them as 40 characters.
bool decode_z85_key(const std::string& z85, std::string* binary) {
  if (z85.size() != 40) return false;
  uint8_t out[32];
  if (zmq_z85_decode(out, z85.c_str()) == nullptr) return false;
  binary->assign(reinterpret_cast<const char*>(out), 32);
  return true;
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  return true;
}

}  // namespace

CurveKeyPair make_curve_key_pair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    throw zmq::error_t();  // only without libsodium (Debian's libzmq has it)
  return {pub, sec};
}

absl::StatusOr<std::string> read_curve_key(const std::string& path) {
  auto text = core::read_file(path);
  if (!text.ok()) return text.status();
  std::string key(absl::StripAsciiWhitespace(*text));
  std::string binary;
  if (!decode_z85_key(key, &binary))
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a CURVE key (expected 40 Z85 characters, as zmq_curve_keypair writes them)"));
  return key;
}

std::string client_keys_dir(const std::string& keys_dir) { return (fs::path(keys_dir) / "clients").string(); }

absl::Status write_curve_key_pair(const std::string& dir, const std::string& name, const CurveKeyPair& keys) {
  if (!valid_name(name))
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' cannot name a key: use 1-64 of A-Z a-z 0-9 . _ -"));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  ::chmod(dir.c_str(), 0700);
  const fs::path base = fs::path(dir) / name;
  // The secret first: a .pub without its .key would admit a key nobody holds.
  if (absl::Status s = core::write_file(base.string() + ".key", keys.secret_key + "\n", 0600); !s.ok()) return s;
  return core::write_file(base.string() + ".pub", keys.public_key + "\n", 0644);
}

absl::StatusOr<CurveKeyPair> load_or_make_curve_key_pair(const std::string& dir, const std::string& name) {
  const fs::path base = fs::path(dir) / name;
  if (!fs::exists(base.string() + ".key")) {
    // Several processes may start at once with an empty directory (serving
    // workers sharing one server pair): one makes the pair, the others wait
    // on the lock and then read it, so all of them hold the same keys.
    std::error_code ec;
    fs::create_directories(dir, ec);
    const std::string lock_path = base.string() + ".lock";
    const int lock = ::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (lock < 0) return absl::PermissionDeniedError(absl::StrCat(lock_path, ": cannot open: ", std::strerror(errno)));
    ::flock(lock, LOCK_EX);
    absl::Status made = fs::exists(base.string() + ".key") ? absl::OkStatus() : write_curve_key_pair(dir, name, make_curve_key_pair());
    ::close(lock);  // releases the lock
    if (!made.ok()) return made;
  }
  CurveKeyPair keys;
  auto pub = read_curve_key(base.string() + ".pub");
  if (!pub.ok()) return pub.status();
  auto sec = read_curve_key(base.string() + ".key");
  if (!sec.ok()) return sec.status();
  // The pair must belong together, or the peer would be admitted under a key it cannot use.
  char derived[41];
  if (zmq_curve_public(derived, sec->c_str()) != 0 || *pub != derived)
    return absl::InvalidArgumentError(absl::StrCat(base.string(), ".pub is not the public key of ", base.string(), ".key"));
  return CurveKeyPair{*pub, *sec};
}

void make_curve_server(zmq::socket_t& socket, const CurveKeyPair& server) {
  socket.set(zmq::sockopt::curve_server, true);
  socket.set(zmq::sockopt::curve_secretkey, server.secret_key);
  socket.set(zmq::sockopt::zap_domain, "interlace");
}

void make_curve_client(zmq::socket_t& socket, const std::string& server_public_key, const CurveKeyPair& client) {
  socket.set(zmq::sockopt::curve_serverkey, server_public_key);
  socket.set(zmq::sockopt::curve_publickey, client.public_key);
  socket.set(zmq::sockopt::curve_secretkey, client.secret_key);
}

std::string peer_name(const zmq::message_t& message) {
  const char* name = zmq_msg_gets(const_cast<zmq_msg_t*>(message.handle()), "User-Id");
  return name ? std::string(name) : std::string();
}

absl::StatusOr<std::unique_ptr<ZapAuthenticator>> ZapAuthenticator::start(zmq::context_t& ctx,
                                                                           std::string clients_dir) {
  std::unique_ptr<ZapAuthenticator> zap(new ZapAuthenticator(ctx, std::move(clients_dir)));
  try {
    zap->socket_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return absl::InternalError(absl::StrCat("cannot start the ZAP handler: ", e.what()));
  }
  zap->reload();
  zap->thread_ = std::thread([z = zap.get()] { z->serve(); });
  return zap;
}

ZapAuthenticator::ZapAuthenticator(zmq::context_t& ctx, std::string clients_dir)
    : socket_(ctx, zmq::socket_type::rep), clients_dir_(std::move(clients_dir)) {
  socket_.set(zmq::sockopt::linger, 0);
}

ZapAuthenticator::~ZapAuthenticator() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ZapAuthenticator::reload() {
  last_reload_ = std::chrono::steady_clock::now();
  std::error_code ec;
  clients_dir_mtime_ = fs::last_write_time(clients_dir_, ec);
  std::map<std::string, std::string> names;
  for (const auto& e : fs::directory_iterator(clients_dir_, ec)) {
    if (e.path().extension() != ".pub") continue;
    const std::string name = e.path().stem().string();
    auto key = read_curve_key(e.path().string());
    std::string binary;
    if (!valid_name(name) || !key.ok() || !decode_z85_key(*key, &binary)) {
      spdlog::warn("ZAP: ignoring {}: {}", e.path().string(),
                   key.ok() ? "not a valid client name" : std::string(key.status().message()));
      continue;
    }
    names[binary] = name;
  }
  names_ = std::move(names);
}

std::string ZapAuthenticator::name_of(const std::string& public_key_binary) {
  if (auto it = names_.find(public_key_binary); it != names_.end()) return it->second;
  // Read the directory again if it changed (adding a file changes its mtime),
  // or at most once a second in case the change fell within the mtime's
  // granularity: strangers with made-up keys cost a stat each, not a scan.
  std::error_code ec;
  const bool changed = fs::last_write_time(clients_dir_, ec) != clients_dir_mtime_;
  if (!changed && std::chrono::steady_clock::now() - last_reload_ < std::chrono::seconds(1)) return "";
  reload();
  auto it = names_.find(public_key_binary);
  return it == names_.end() ? "" : it->second;
}

void ZapAuthenticator::serve() {
  while (!stop_) {
    zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) == 0) continue;
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(socket_, std::back_inserter(request))) continue;
      // version, request id, domain, address, routing id, mechanism, credentials...
      auto frame = [&](size_t i) { return i < request.size() ? request[i].to_string() : std::string(); };
      std::string name;
      if (frame(0) == "1.0" && frame(5) == "CURVE" && request.size() == 7) name = name_of(frame(6));
      const bool ok = !name.empty();
      (ok ? admitted_ : refused_).fetch_add(1);
      if (!ok) spdlog::debug("ZAP: refused a {} connection from {}", frame(5), frame(3));
      const std::string reply[] = {"1.0", frame(1), ok ? "200" : "400", ok ? "OK" : "not an admitted key", name, ""};
      for (size_t i = 0; i < 6; ++i)
        socket_.send(zmq::buffer(reply[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      spdlog::warn("ZAP: {}", e.what());
    }
  }
}

}  // namespace interlace::transport
