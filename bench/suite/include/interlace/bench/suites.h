// The system-level benchmarks `interlace bench` runs: each takes its settings,
// prints its figures with the machine they ran on and the command that
// produced them (a table, or one JSON document with -o json), and returns an
// error when it cannot run. The CLI only parses options into these structs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "interlace/bench/bench_util.h"

namespace interlace::bench {

// GEMM rate and the main kernels' throughput.
absl::Status run_bench_kernels(const Common& c);

// Prefill and decode tokens/s of example models, and batch-1 decode against
// the memory-bandwidth bound.
struct DecodeArgs {
  std::vector<std::string> models = {"tiny-full.json", "tiny-hybrid.json", "small-full.json",
                                     "small-hybrid.json"};
  int64_t prompt_len = 512;
  int64_t context = 128;
  int64_t steps = 64;
  std::vector<int64_t> batch_sizes = {1, 8};
};
absl::Status run_bench_decode(const Common& c, const DecodeArgs& a);

// Lightning vs softmax attention time across sequence lengths.
struct CrossoverArgs {
  int64_t min_len = 256, max_len = 32768;
  int64_t heads = 64, kv_heads = 8, head_dim = 128, block_size = 256;
};
absl::Status run_bench_crossover(const Common& c, const CrossoverArgs& a);

// Log-prob drift when lightning states are stored in bf16/fp16 at turn boundaries.
struct DriftArgs {
  std::string model = "tiny-hybrid.json";
  int64_t tokens = 4096, turn = 128;
};
absl::Status run_drift(const Common& c, const DriftArgs& a);

// Training tokens/s (forward + backward + AdamW) and the GEMM share of a step.
struct TrainBenchArgs {
  std::vector<std::string> models = {"tiny-full.json", "tiny-hybrid.json", "hybrid-15m.json", "small-full.json",
                                     "small-hybrid.json"};
  int64_t batch = 8, seq_len = 256, steps = 3;
};
absl::Status run_bench_train(const Common& c, const TrainBenchArgs& a);

// Trajectories through ZeroMQ + Cap'n Proto against raw ZeroMQ with the same bytes.
struct TransportArgs {
  int64_t messages = 20000, tokens = 1024, generated = 512;
  int reps = 5;
};
absl::Status run_bench_transport(const Common& c, const TransportArgs& a);

// A weights publication fetched over ZeroMQ against bytes / loopback bandwidth.
struct WeightSyncArgs {
  std::vector<std::string> models = {"tiny-hybrid.json", "hybrid-15m.json"};
  int reps = 5;
  bool curve = false;  // CURVE-encrypted sockets, as the services use
};
absl::Status run_bench_weight_sync(const Common& c, const WeightSyncArgs& a);

// Prefill work of a GRPO-shaped multi-turn rollout against the lower bound,
// with the prefix cache at its defaults and without it. A model is a model
// directory or an example config's name (initialised with random weights).
struct CacheBenchArgs {
  std::vector<std::string> models = {"tiny-hybrid-3to1.json", "tiny-full.json"};
  std::vector<std::string> envs = {"calculator:max_number=5,short_prompt=1", "kv-retrieval"};
  int64_t prompts = 64, group_size = 8, max_turns = 4, max_new_tokens = 96;
  double temperature = 1.0;
  uint64_t seed = 0;
  int64_t cache_bytes = 0;  // 0: the default budget
};
absl::Status run_bench_cache(const Common& c, const CacheBenchArgs& a);

// Decode tokens/s and acceptance with and without speculative decoding
// (prompt lookup), per model, workload, temperature and batch size.
struct SpeculativeBenchArgs {
  std::vector<std::string> models = {"tiny-hybrid-3to1.json", "tiny-full.json"};
  std::vector<std::string> workloads = {"calculator:max_number=5,short_prompt=1", "kv-retrieval", "random"};
  std::vector<double> temperatures = {0.0, 1.0};
  std::vector<int64_t> batch_sizes = {1, 8, 32};
  int64_t episodes = 32, max_turns = 3, max_new_tokens = 64;
  std::string speculate = "ngram:k=4";
  uint64_t seed = 0;
};
absl::Status run_bench_speculative(const Common& c, const SpeculativeBenchArgs& a);

// The same RL job run synchronously and asynchronously by `interlace run`.
struct AsyncArgs {
  std::string interlace;  // the interlace executable that runs the job
  std::string job;        // empty: a built-in small job
  int64_t steps = 8;
};
absl::Status run_bench_async(const Common& c, const AsyncArgs& a);

// The control plane (redis-server, a controller, a runner, as processes):
// submit/status/cancel latency under concurrent clients, and submit to the
// first trajectory of a rollout job with a runner free.
struct ControlBenchArgs {
  std::string interlace;  // the interlace executable (controller and runner)
  int64_t clients = 100, requests = 10;  // concurrent clients, jobs each
  int reps = 3;                          // rollout jobs timed to their first trajectory
};
absl::Status run_bench_control(const Common& c, const ControlBenchArgs& a);

// Serving (serving workers and gateways as processes on loopback): time to
// first token, inter-token latency and output tokens/s of streamed
// multi-turn conversations at several client counts; cache on vs off and
// cache-aware vs round-robin routing at one count; and the gateway's own cost
// per request against the same request sent to the worker directly.
struct ServeBenchArgs {
  std::string interlace;  // the interlace executable
  std::string model;      // a model config (examples/models/NAME.json); default tiny-hybrid.json
  std::vector<int> clients = {1, 8, 32};
  int turns = 3;           // per conversation
  int max_tokens = 32;     // per turn
  int workers = 2;
};
absl::Status run_bench_serve(const Common& c, const ServeBenchArgs& a);

// A tokenizer.json's encode/decode MB/s and tokens/s (1 and all threads; a
// cold and a warm word cache), and transformers.js's encoder on the same
// text when js_reference names tests/tokenizer's npm work directory.
struct TokenizerBenchArgs {
  std::string model;           // a directory with tokenizer.json
  std::string corpus;          // JSONL of {"text"} (or plain lines)
  std::string js_reference;    // the npm work dir with reference.mjs ("": none)
  std::string js_name = "qwen3";
};
absl::Status run_bench_tokenizer(const Common& c, const TokenizerBenchArgs& a);

}  // namespace interlace::bench
