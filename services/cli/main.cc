// interlace: the command-line entry point. `interlace <verb> [noun] --help`
// describes every command.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "commands.h"
#include "spdlog/cfg/env.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

// NaN and infinities are refused wherever a number is given: `--lr nan` once
// trained every weight to NaN and exited 0 (NaN passes every `x < lo || x > hi`
// range check). A value that reads whole as a number must be finite; anything
// else is left to the option's own conversion and checks.
const CLI::Validator kFiniteNumber(
    [](std::string& value) -> std::string {
      const char* begin = value.c_str();
      char* end = nullptr;
      const double x = std::strtod(begin, &end);
      if (end != begin && *end == '\0' && !std::isfinite(x)) return "'" + value + "' is not a finite number";
      return "";
    },
    "", "finite");

void refuse_non_finite_numbers(CLI::App& app) {
  for (CLI::Option* option : app.get_options())
    if (option->get_expected_max() > 0) option->check(kFiniteNumber);
  for (CLI::App* sub : app.get_subcommands({})) refuse_non_finite_numbers(*sub);
}

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr: stdout carries results (tables, -o json).
  spdlog::set_default_logger(spdlog::stderr_color_mt("interlace"));
  spdlog::set_pattern("%^%l%$: %v");
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL=debug for more detail
  CLI::App app{
      "Interlace: RL rollout and training for full-attention and hybrid (lightning + softmax) "
      "language models.\n\nExamples:\n"
      "  interlace model init --config examples/models/tiny-hybrid.json --out /tmp/tiny\n"
      "  interlace model generate --model /tmp/tiny --prompt 'Hello' --max-new-tokens 32\n"
      "  interlace model score --model /tmp/tiny --input tokens.jsonl\n"
      "  interlace precision check --model /tmp/tiny --data tokens.jsonl --rollout-precision bf16 --train-precision fp32\n"
      "  interlace train sft --model /tmp/tiny --data demos.jsonl --out /tmp/tiny-sft --steps 50\n"
      "  interlace env demo --env calculator --n 256 --out demos.jsonl\n"
      "  interlace rollout --model /tmp/tiny --env calculator --prompts 8 --group-size 4 --out traj.jsonl\n"
      "  interlace run examples/calculator/job.yaml\n"
      "  interlace up && interlace submit examples/calculator/job.yaml && interlace jobs\n"
      "  interlace bench decode -o json\n",
      "interlace"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "interlace 0.1.0");
  interlace::cli::Action action;
  interlace::cli::add_model_commands(app, action);
  interlace::cli::add_precision_commands(app, action);
  interlace::cli::add_train_commands(app, action);
  interlace::cli::add_rollout_commands(app, action);
  interlace::cli::add_run_commands(app, action);
  interlace::cli::add_control_commands(app, action);
  interlace::cli::add_stack_commands(app, action);
  interlace::cli::add_bench_commands(app, action);
  refuse_non_finite_numbers(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (!action) {
    std::fprintf(stderr, "error: nothing to do; see interlace --help\n");
    return 2;
  }
  return action();
}
