// DIR/stack.json: where `interlace up` put the control plane (server URL,
// token, Redis address, process ids), read by `down` and by the control
// commands when no --server is given.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace interlace::cli {

struct StackInfo {
  std::string dir, server, redis, token;
  std::string gateway;  // the serving gateway's URL (`up --serve`), empty without one
  int controller_pid = 0, redis_pid = 0;
  std::vector<int> runner_pids;
};

// $INTERLACE_STACK_DIR, else ~/.interlace/stack.
std::string default_stack_dir();
absl::StatusOr<StackInfo> read_stack(const std::string& dir);
absl::Status write_stack(const StackInfo& s);  // readable by its owner only: it holds the token
// The server and token, as a table or as {"server", "token"}.
void print_stack(const StackInfo& s, const std::string& output);

}  // namespace interlace::cli
