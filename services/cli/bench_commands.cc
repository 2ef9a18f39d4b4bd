// interlace bench ...: options into the benchmark suite's settings (bench/suite);
// the benchmarks themselves print their figures with the machine and command.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli_util.h"
#include "commands.h"
#include "interlace/bench/suites.h"

namespace interlace::cli {
namespace {

using bench::Common;

// "interlace bench NAME --option value ..." for a subcommand.
std::string command_line_of(const CLI::App& app) {
  std::vector<std::string> parts = {"interlace"};
  for (const CLI::App* a = &app; a && a->get_parent(); a = a->get_parent()) parts.insert(parts.begin() + 1, a->get_name());
  // The options given, so the recorded command reproduces the figures.
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->count() == 0 || opt->check_lname("help") || opt->check_lname("output")) continue;  // -o: callers add it
    if (!opt->get_lnames().empty()) parts.push_back("--" + opt->get_lnames().front());
    if (opt->get_expected_min() > 0 || opt->get_lnames().empty())
      for (const std::string& r : opt->results()) parts.push_back(r);
  }
  return absl::StrJoin(parts, " ");
}

// Runs a benchmark; its error, if any, as the CLI prints errors.
int run(const absl::Status& s) { return s.ok() ? 0 : fail(s); }

// Every benchmark's -o option (one Common is shared by the subcommands: only one runs).
void add_output(CLI::App* sub, Common& common) {
  sub->add_option("-o,--output", common.output, "table or json")
      ->check(CLI::IsMember({"table", "json"}))->capture_default_str();
}

void add_bench_train_command(CLI::App& bench, std::shared_ptr<Common> common, Action& action) {
  auto a = std::make_shared<bench::TrainBenchArgs>();
  CLI::App* t = bench.add_subcommand(
      "train", "Training tokens/s (forward + backward + AdamW) of example models, the share of each\n"
               "step spent in GEMM and the GEMM rate against this machine's sgemm rate");
  add_output(t, *common);
  t->add_option("--models", a->models, "model configs (examples/models/NAME or a path)")->capture_default_str();
  t->add_option("--batch", a->batch, "sequences per step")->capture_default_str();
  t->add_option("--seq-len", a->seq_len, "tokens per sequence")->capture_default_str();
  t->add_option("--steps", a->steps, "steps timed (after one warm-up step)")->capture_default_str();
  t->callback([&action, common, a, t] {
    common->command_line = absl::StrCat(command_line_of(*t), " -o ", common->output);
    action = [common, a] { return run(bench::run_bench_train(*common, *a)); };
  });
}


void add_bench_cache_commands(CLI::App& bench, std::shared_ptr<Common> common, Action& action) {
  auto a = std::make_shared<bench::DriftArgs>();
  CLI::App* d = bench.add_subcommand(
      "state-drift", "Log-prob drift over a long episode when lightning states are stored in bf16 or fp16\n"
                     "at every turn boundary (as the prefix cache stores them), against fp32 states");
  add_output(d, *common);
  d->add_option("--model", a->model, "hybrid model config")->capture_default_str();
  d->add_option("--tokens", a->tokens, "episode length")->capture_default_str();
  d->add_option("--turn", a->turn, "tokens per turn")->capture_default_str();
  d->callback([&action, common, a, d] {
    common->command_line = absl::StrCat(command_line_of(*d), " -o ", common->output);
    action = [common, a] { return run(bench::run_drift(*common, *a)); };
  });

  auto w = std::make_shared<bench::CacheBenchArgs>();
  CLI::App* c = bench.add_subcommand(
      "cache", "Prefilled prompt tokens of a GRPO-shaped multi-turn rollout against the lower bound (what no\n"
               "cache could avoid), with the prefix cache at its defaults and without it, and episodes/s");
  add_output(c, *common);
  c->add_option("--models", w->models,
                "model directories (an SFT model gives realistic episodes) or example configs (random weights)")
      ->capture_default_str();
  c->add_option("--envs", w->envs, "environments")->capture_default_str();
  c->add_option("--prompts", w->prompts, "tasks")->check(CLI::PositiveNumber)->capture_default_str();
  c->add_option("--group-size", w->group_size, "samples per task")->check(CLI::PositiveNumber)->capture_default_str();
  c->add_option("--max-turns", w->max_turns, "turns per episode")->check(CLI::PositiveNumber)->capture_default_str();
  c->add_option("--max-new-tokens", w->max_new_tokens, "tokens per turn")->check(CLI::PositiveNumber)->capture_default_str();
  c->add_option("--temperature", w->temperature, "sampling temperature")->check(CLI::NonNegativeNumber)->capture_default_str();
  c->add_option("--seed", w->seed, "task and sampling seed")->capture_default_str();
  c->add_option("--cache-bytes", w->cache_bytes, "the cache's byte budget (0: the default)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  c->callback([&action, common, w, c] {
    common->command_line = absl::StrCat(command_line_of(*c), " -o ", common->output);
    action = [common, w] { return run(bench::run_bench_cache(*common, *w)); };
  });

  auto sp = std::make_shared<bench::SpeculativeBenchArgs>();
  CLI::App* s = bench.add_subcommand(
      "speculative", "Decode tokens/s and draft acceptance with and without speculative decoding (prompt lookup),\n"
                     "per model, workload (agent episodes or random prompts), temperature and batch size, and\n"
                     "the share of time spent rolling states back after rejections");
  add_output(s, *common);
  s->add_option("--models", sp->models, "model directories (an SFT model gives realistic episodes) or example configs")
      ->capture_default_str();
  s->add_option("--workloads", sp->workloads, "environments, or random (random prompts)")->capture_default_str();
  s->add_option("--temperatures", sp->temperatures, "sampling temperatures")->capture_default_str();
  s->add_option("--batch-sizes", sp->batch_sizes, "sequences decoded together")->capture_default_str();
  s->add_option("--episodes", sp->episodes, "episodes (or random prompts) per run")->check(CLI::PositiveNumber)->capture_default_str();
  s->add_option("--max-turns", sp->max_turns, "turns per episode")->check(CLI::PositiveNumber)->capture_default_str();
  s->add_option("--max-new-tokens", sp->max_new_tokens, "tokens per turn")->check(CLI::PositiveNumber)->capture_default_str();
  s->add_option("--speculate", sp->speculate, "the speculation measured (ngram:k=N,...)")->capture_default_str();
  s->add_option("--seed", sp->seed, "task and sampling seed")->capture_default_str();
  s->callback([&action, common, sp, s] {
    common->command_line = absl::StrCat(command_line_of(*s), " -o ", common->output);
    action = [common, sp] { return run(bench::run_bench_speculative(*common, *sp)); };
  });
}


void add_bench_service_commands(CLI::App& bench, std::shared_ptr<Common> common, Action& action) {
  auto t = std::make_shared<bench::TransportArgs>();
  CLI::App* tr = bench.add_subcommand(
      "transport", "Trajectories through ZeroMQ + Cap'n Proto against raw ZeroMQ with the same bytes");
  add_output(tr, *common);
  tr->add_option("--messages", t->messages, "messages per pass")->capture_default_str();
  tr->add_option("--tokens", t->tokens, "tokens per trajectory")->capture_default_str();
  tr->add_option("--generated", t->generated, "generated (trained) tokens per trajectory")->capture_default_str();
  tr->add_option("--reps", t->reps, "passes of each kind (median reported)")->capture_default_str();
  tr->callback([&action, common, t, tr] {
    common->command_line = absl::StrCat(command_line_of(*tr), " -o ", common->output);
    action = [common, t] { return run(bench::run_bench_transport(*common, *t)); };
  });
  auto w = std::make_shared<bench::WeightSyncArgs>();
  CLI::App* ws = bench.add_subcommand(
      "weight-sync", "Weights fetched over ZeroMQ (checksummed chunks) against bytes / loopback bandwidth");
  add_output(ws, *common);
  ws->add_option("--models", w->models, "model configs (examples/models/NAME or a path)")->capture_default_str();
  ws->add_option("--reps", w->reps, "fetches timed (median reported)")->capture_default_str();
  ws->add_flag("--curve", w->curve, "encrypt with ZeroMQ CURVE, as the services' sockets do");
  ws->callback([&action, common, w, ws] {
    common->command_line = absl::StrCat(command_line_of(*ws), " -o ", common->output);
    action = [common, w] { return run(bench::run_bench_weight_sync(*common, *w)); };
  });
  auto ctl = std::make_shared<bench::ControlBenchArgs>();
  ctl->interlace = self_exe();
  CLI::App* cb = bench.add_subcommand(
      "control", "The control plane as processes (redis-server, controller, runner): API latency under\n"
                 "concurrent clients, and submit to first trajectory with a runner free");
  add_output(cb, *common);
  cb->add_option("--clients", ctl->clients, "concurrent HTTP clients")->capture_default_str()->check(CLI::Range(1, 1000));
  cb->add_option("--requests", ctl->requests, "jobs each client submits, reads and cancels")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cb->add_option("--reps", ctl->reps, "rollout jobs timed to their first trajectory")->capture_default_str()
      ->check(CLI::Range(1, 100));
  cb->callback([&action, common, ctl, cb] {
    common->command_line = absl::StrCat(command_line_of(*cb), " -o ", common->output);
    action = [common, ctl] { return run(bench::run_bench_control(*common, *ctl)); };
  });
  auto tk = std::make_shared<bench::TokenizerBenchArgs>();
  CLI::App* tb = bench.add_subcommand(
      "tokenizer", "A tokenizer.json's encode and decode speed (1 and all threads), and transformers.js's on the same\n"
                   "text. tests/tokenizer/check_tokenizers.sh WORK prepares the real tokenizers, a corpus and the\n"
                   "reference; then:\n"
                   "  interlace bench tokenizer --model WORK/qwen3 --corpus WORK/corpus.jsonl --js-reference WORK");
  add_output(tb, *common);
  tb->add_option("--model", tk->model, "a directory with tokenizer.json")->required();
  tb->add_option("--corpus", tk->corpus, "JSONL of {\"text\": ...} (or plain lines)")->required();
  tb->add_option("--js-reference", tk->js_reference, "the npm work directory of tests/tokenizer (reference.mjs)");
  tb->add_option("--js-name", tk->js_name, "which reference tokenizer: qwen3 or llama3")->capture_default_str();
  tb->callback([&action, common, tk, tb] {
    common->command_line = absl::StrCat(command_line_of(*tb), " -o ", common->output);
    action = [common, tk] { return run(bench::run_bench_tokenizer(*common, *tk)); };
  });
  auto sv = std::make_shared<bench::ServeBenchArgs>();
  sv->interlace = self_exe();
  CLI::App* sb = bench.add_subcommand(
      "serve", "Serving workers behind gateways, as processes: time to first token, inter-token latency and output\n"
               "tokens/s of streamed multi-turn conversations at 1, 8 and 32 clients; cache on vs off and\n"
               "cache-aware vs round-robin routing at 8; the gateway's cost per request against calling a\n"
               "worker directly. Example: interlace bench serve -o json");
  add_output(sb, *common);
  sb->add_option("--model", sv->model, "model config (default: examples/models/tiny-hybrid.json)");
  sb->add_option("--clients", sv->clients, "client counts, comma-separated")->delimiter(',')->capture_default_str();
  sb->add_option("--turns", sv->turns, "turns per conversation")->capture_default_str();
  sb->add_option("--max-tokens", sv->max_tokens, "tokens per turn")->capture_default_str();
  sb->add_option("--workers", sv->workers, "serving workers per pool")->capture_default_str();
  sb->callback([&action, common, sv, sb] {
    common->command_line = absl::StrCat(command_line_of(*sb), " -o ", common->output);
    action = [common, sv] { return run(bench::run_bench_serve(*common, *sv)); };
  });
  auto as = std::make_shared<bench::AsyncArgs>();
  as->interlace = self_exe();
  CLI::App* ay = bench.add_subcommand("async", "The same RL job synchronous and asynchronous: end-to-end throughput");
  add_output(ay, *common);
  ay->add_option("--job", as->job, "job spec to run both ways (without a staleness section: the benchmark adds it)");
  ay->add_option("--steps", as->steps, "RL steps of the built-in job")->capture_default_str();
  ay->callback([&action, common, as, ay] {
    common->command_line = absl::StrCat(command_line_of(*ay), " -o ", common->output);
    action = [common, as] { return run(bench::run_bench_async(*common, *as)); };
  });
}


}  // namespace

void add_bench_commands(CLI::App& app, Action& action) {
  CLI::App* bench = app.add_subcommand(
      "bench", "System-level benchmarks; each prints the machine and settings with its figures.\n"
               "Use -o json for a machine-readable document.");
  bench->require_subcommand(1);
  auto common = std::make_shared<Common>();

  CLI::App* k = bench->add_subcommand("kernels", "GEMM rate and the main kernels' throughput");
  add_output(k, *common);
  k->callback([&action, common, k] {
    common->command_line = command_line_of(*k) + " -o " + common->output;
    action = [common] { return run(bench::run_bench_kernels(*common)); };
  });

  auto dargs = std::make_shared<bench::DecodeArgs>();
  CLI::App* d = bench->add_subcommand(
      "decode", "Prefill and decode tokens/s of the example models, and batch-1 decode against the\n"
                "memory-bandwidth bound (bytes moved per token / measured copy bandwidth)");
  add_output(d, *common);
  d->add_option("--models", dargs->models, "model configs (examples/models/NAME or a path)")->capture_default_str();
  d->add_option("--prompt-len", dargs->prompt_len, "prefill length")->capture_default_str();
  d->add_option("--context", dargs->context, "context before decoding")->capture_default_str();
  d->add_option("--steps", dargs->steps, "decode steps timed")->capture_default_str();
  d->add_option("--batch-sizes", dargs->batch_sizes, "decode batch sizes")->capture_default_str();
  d->callback([&action, common, dargs, d] {
    common->command_line = command_line_of(*d) + " -o " + common->output;
    action = [common, dargs] { return run(bench::run_bench_decode(*common, *dargs)); };
  });

  auto cargs = std::make_shared<bench::CrossoverArgs>();
  CLI::App* x = bench->add_subcommand(
      "crossover", "Lightning vs softmax attention time across sequence lengths (MiniMax head shape),\n"
                   "with the measured crossovers next to the theoretical ones");
  add_output(x, *common);
  x->add_option("--min-len", cargs->min_len, "shortest length")->capture_default_str();
  x->add_option("--max-len", cargs->max_len, "longest length (doubling from --min-len)")->capture_default_str();
  x->add_option("--heads", cargs->heads, "query heads")->capture_default_str();
  x->add_option("--kv-heads", cargs->kv_heads, "key/value heads")->capture_default_str();
  x->add_option("--head-dim", cargs->head_dim, "head dimension")->capture_default_str();
  x->add_option("--block-size", cargs->block_size, "lightning block size")->capture_default_str();
  x->callback([&action, common, cargs, x] {
    common->command_line = command_line_of(*x) + " -o " + common->output;
    action = [common, cargs] { return run(bench::run_bench_crossover(*common, *cargs)); };
  });

  add_bench_train_command(*bench, common, action);
  add_bench_cache_commands(*bench, common, action);
  add_bench_service_commands(*bench, common, action);
}

}  // namespace interlace::cli
