// The rollout worker service: asks the learner for groups with its heartbeats
// (load, cache state, unacknowledged trajectories), runs them with the engine,
// prefix/state cache and agent loop, and streams each trajectory as it
// finishes. At most `max_in_flight` trajectories may be unacknowledged: then
// the worker stops generating until acks come (a slow learner slows the
// rollout instead of growing memory); what is not acknowledged within
// `resend_after` is sent again. Weights come from the learner's weights port
// whenever a grant names a newer publication; they are checked chunk by chunk
// and as a whole, then swapped in between engine steps. A failed fetch keeps
// the old weights and is retried.
#pragma once

#include <string>

#include "interlace/rl/job_spec.h"
#include "interlace/rl/run_layout.h"

namespace interlace::rl {

struct WorkerOptions {
  std::string run_dir;
  JobSpec spec;
  Endpoints endpoints;
  int index = 0;
  // Its name toward the learner (key file RUN/keys/clients/NAME.key, the
  // learner's name for it); "" means worker-INDEX.
  std::string name;
  // When set, its load (requests running and waiting, cache usage) is
  // written there as JSON about once a second, for a pool worker's heartbeat.
  std::string load_file;
  bool quiet = false;
};

// Runs until the learner says the job is done; returns the exit code.
int run_worker(const WorkerOptions& options);

}  // namespace interlace::rl
