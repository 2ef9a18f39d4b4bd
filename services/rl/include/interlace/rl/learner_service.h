// The learner service: receives trajectories, makes them durable, trains on
// complete sampling groups, and publishes new weights. It is also the job's
// embedded task source (no controller on one machine): workers ask it for
// groups to run with their heartbeats.
//
// Sockets (ZeroMQ ROUTER; CURVE servers that admit only the keys in
// RUN/keys/clients, a peer named by its key's file; bound once on ports the
// system picks, written to endpoints.json; see docs/wire-protocol.md):
//   trajectories  Trajectory frames in; an Ack for each, sent only after the
//                 spool holding it is fsync'ed. Duplicates (same job, group,
//                 sample) are acknowledged and dropped.
//   tasks         Heartbeat in; TaskGrant out (groups to run, newest weights).
//   weights       WeightRequest in; every WeightChunk of the newest weights out.
// and /metrics over HTTP. A frame that fails to decode is counted
// (interlace_frames_rejected_total{port}), logged at most once a second, and dropped.
//
// Durability and exactly-once training: accepted trajectories go to
// RUN/spool.bin; every step appends the ids it trained on to RUN/trained.jsonl;
// checkpoints go to RUN/checkpoints/step-N. A restarted learner loads the last
// checkpoint, cuts trained.jsonl back to it (those steps are redone) and
// re-reads the spool: every trajectory not trained by the checkpoint is trained
// again, once.
#pragma once

#include <string>

#include "interlace/rl/job_spec.h"
#include "interlace/rl/run_layout.h"

namespace interlace::rl {

struct LearnerOptions {
  std::string run_dir;
  JobSpec spec;
  Endpoints endpoints;
  bool quiet = false;
  double linger_s = 3.0;  // after the last step, keep telling workers the job is done
};

// Runs until the job's steps are done; returns the exit code (0 success).
int run_learner(const LearnerOptions& options);

}  // namespace interlace::rl
