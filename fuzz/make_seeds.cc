// Writes the seed corpora under fuzz/corpus/: one or two well-formed inputs
// per target, so the fuzzers start from inputs that get past the first checks.
// Run once (scripts/fuzz.sh --seeds); the files are committed.
#include <filesystem>
#include <fstream>
#include <string>

#include "interlace/core/file_util.h"
#include "interlace/model/safetensors.h"
#include "interlace/transport/messages.h"
#include "interlace/transport/spool.h"
#include "interlace/transport/trajectory_codec.h"

namespace fs = std::filesystem;
using namespace interlace;

void put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const fs::path out = argv[1], source = argv[2];
  transport::TrajectoryMessage m;
  m.job = "calc";
  m.env = "calculator";
  m.worker = "worker-0";
  m.trajectory.group = 3;
  m.trajectory.sample = 1;
  m.trajectory.tokens = {5, 6, 7, 8, 9};
  m.trajectory.loss_mask = {0, 0, 1, 1, 0};
  m.trajectory.logprobs = m.trajectory.sampled_logprobs = {0, 0, -1.5f, -0.25f, 0};
  m.trajectory.versions = {-1, -1, 2, 2, -1};
  m.trajectory.turns = {{"user", 0, 2}, {"assistant", 2, 4}};
  m.trajectory.reward = 1;
  m.trajectory.finish_reason = "done";
  const std::string frame = transport::encode_trajectory(m);
  put(out / "trajectory_frame_fuzz", "one", frame);

  put(out / "message_frames_fuzz", "ack", std::string(1, '\0') + transport::encode_ack({"calc", 3, 1, 0, false, "why"}));
  transport::HeartbeatMessage hb;
  hb.service = "worker-0";
  hb.want_tasks = 2;
  hb.incarnation = 9;
  put(out / "message_frames_fuzz", "heartbeat", std::string(1, '\1') + transport::encode_heartbeat(hb));
  transport::TaskGrantMessage grant;
  grant.tasks.resize(2);
  grant.tasks[0].job = "calc";
  grant.weights_version = 4;
  put(out / "message_frames_fuzz", "grant", std::string(1, '\2') + transport::encode_task_grant(grant));
  put(out / "message_frames_fuzz", "request", std::string(1, '\3') + transport::encode_weight_request({"worker-0", 7}));
  transport::WeightChunkMessage chunk;
  chunk.count = 1;
  chunk.total_bytes = 4;
  chunk.data = "abcd";
  put(out / "message_frames_fuzz", "chunk", std::string(1, '\4') + transport::encode_weight_chunk(chunk));

  const fs::path spool_path = fs::temp_directory_path() / "interlace-seed-spool.bin";
  fs::remove(spool_path);
  {
    auto spool = transport::Spool::open(spool_path.string(), nullptr);
    if (!spool.ok()) return 1;
    for (const std::string& rec : {frame, std::string("a short record"), frame})
      if (!spool->append(rec).ok()) return 1;
    if (!spool->sync().ok()) return 1;
  }
  put(out / "spool_fuzz", "three-records", *core::read_file(spool_path.string()));
  fs::remove(spool_path);

  put(out / "safetensors_fuzz", "two-tensors",
      model::safetensors_bytes({{"a.weight", core::Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3})},
                                {"b", core::Tensor::from_vector({0.5f}, {1})}},
                               {{"format", "pt"}}));

  put(out / "job_spec_fuzz", "calculator", *core::read_file((source / "examples/calculator/job.yaml").string()));
  put(out / "job_spec_fuzz", "small",
      "name: x\nmodel: {init: m.json}\nalgorithm: {name: grpo, steps: 3, lr: 1e-4}\n"
      "rollout: {workers: 2, temperature: 0.7}\nstaleness: {mode: async, eta: 1}\n");
  return 0;
}
