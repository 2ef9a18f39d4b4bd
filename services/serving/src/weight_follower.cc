#include "interlace/serving/weight_follower.h"

#include <filesystem>
#include <zmq.hpp>

#include "absl/strings/str_cat.h"
#include "interlace/model/safetensors.h"
#include "interlace/rl/run_layout.h"
#include "interlace/rl/service_util.h"
#include "interlace/transport/curve.h"
#include "interlace/transport/weight_sync.h"
#include "spdlog/spdlog.h"

namespace interlace::serving {

absl::StatusOr<std::unique_ptr<WeightFollower>> WeightFollower::start(FollowOptions o, model::ModelConfig config,
                                                                      model::PrecisionProfile precision) {
  if (!std::filesystem::exists(rl::run_path(o.run_dir, "keys/server.pub")))
    return absl::NotFoundError(absl::StrCat("--follow ", o.run_dir, ": no keys/server.pub there; expected the run directory of ",
                                            "`interlace run` or of a control-plane job (JOBS_DIR/JOB_ID/run)"));
  std::unique_ptr<WeightFollower> f(new WeightFollower(std::move(o), std::move(config), precision));
  f->thread_ = std::thread([p = f.get()] { p->loop(); });
  return f;
}

WeightFollower::~WeightFollower() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  ctx_.shutdown();  // a fetch in progress ends (ETERM) instead of running out its timeout
  if (thread_.joinable()) thread_.join();
}

std::optional<WeightFollower::Update> WeightFollower::take() {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<Update> out = std::move(ready_);
  ready_.reset();
  return out;
}

void WeightFollower::loop() {
  absl::Status last = absl::OkStatus();
  while (true) {
    absl::Status s = poll_once();
    if (!s.ok() && s.ToString() != last.ToString())  // said once, not every poll
      spdlog::warn("serving worker: following {}: {}; keeping the weights in use", o_.run_dir, std::string(s.message()));
    last = s;
    std::unique_lock<std::mutex> lock(mu_);
    if (wake_.wait_for(lock, o_.poll, [this] { return stop_; })) return;
  }
}

absl::Status WeightFollower::poll_once() {
  try {
    return fetch_once();
  } catch (const zmq::error_t& e) {
    return absl::CancelledError(absl::StrCat("ZeroMQ: ", e.what()));  // ETERM: stopping
  }
}

absl::Status WeightFollower::fetch_once() {
  // Where the learner is now (a restarted one binds other ports), and its key.
  auto endpoints = rl::read_endpoints(o_.run_dir);
  if (!endpoints.ok()) return endpoints.status();
  if (endpoints->weights <= 0) return absl::UnavailableError("the learner has not bound its weights port yet");
  const std::string keys = rl::run_path(o_.run_dir, "keys");
  auto server = transport::read_curve_key(rl::run_path(keys, "server.pub"));
  if (!server.ok()) return server.status();
  auto mine = transport::load_or_make_curve_key_pair(transport::client_keys_dir(keys), o_.name);
  if (!mine.ok()) return mine.status();
  // A socket per poll: one a second is nothing, and a learner that moved or restarted needs a new one anyway.
  zmq::socket_t dealer = rl::make_socket(ctx_, zmq::socket_type::dealer, int64_t{1} << 30);
  dealer.set(zmq::sockopt::linger, 0);
  transport::make_curve_client(dealer, *server, *mine);
  dealer.connect(endpoints->tcp(endpoints->weights));
  transport::WeightRequestMessage request{.worker = o_.name, .have_weights_id = weights_id_, .only_if_newer = true};
  uint64_t rejected = 0;
  auto payload = transport::fetch_weights(dealer, request, std::chrono::seconds(30), &rejected);
  if (!payload.ok()) {
    if (rejected > 0) ++failures_;  // corrupt chunks; a learner not answering yet is not a failure
    return payload.status();
  }
  // Up to date; or a learner from before only_if_newer, which sends the same weights again.
  if (payload->up_to_date || payload->weights_id == weights_id_) return absl::OkStatus();
  bytes_ += int64_t(payload->bytes.size());
  auto tensors = model::parse_safetensors_bytes(payload->bytes, absl::StrCat("weights version ", payload->version, " from ", o_.run_dir));
  absl::StatusOr<std::unique_ptr<model::Model>> built = tensors.ok() ? model::Model::from_tensors(config_, *tensors, precision_)
                                                                     : absl::StatusOr<std::unique_ptr<model::Model>>(tensors.status());
  if (!built.ok()) {
    ++failures_;
    return built.status();
  }
  weights_id_ = payload->weights_id;
  version_ = payload->version;
  ++updates_;
  std::lock_guard<std::mutex> lock(mu_);
  ready_ = Update{std::shared_ptr<model::Model>(std::move(*built)), payload->version};
  return absl::OkStatus();
}

}  // namespace interlace::serving
