// Registration of the CLI's verbs. Each command returns the process exit code:
// 0 success, 1 failure (message on stderr), 2 bad usage.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"

namespace interlace::cli {

// A command's body, run after parsing when its subcommand was chosen.
using Action = std::function<int()>;

void add_model_commands(CLI::App& app, Action& action);
void add_bench_commands(CLI::App& app, Action& action);
void add_precision_commands(CLI::App& app, Action& action);
void add_train_commands(CLI::App& app, Action& action);
void add_rollout_commands(CLI::App& app, Action& action);
void add_run_commands(CLI::App& app, Action& action);
// After add_run_commands: adds `serve controller` to its `serve`.
void add_control_commands(CLI::App& app, Action& action);
void add_stack_commands(CLI::App& app, Action& action);  // up, down

// `interlace serve learner|worker --redis HOST:PORT`: the control plane's
// long-lived roles (pool learner, pool worker), as opposed to one run's
// services (`--run-dir`).
struct PoolRoleArgs {
  std::string redis, dir, name, prefix = "interlace", health, advertise;
  double poll = 1.0;
};
void add_pool_role_options(CLI::App* command, PoolRoleArgs& args);
int serve_pool_role(const std::string& role, const PoolRoleArgs& args);

}  // namespace interlace::cli
