// interlace bench kernels | decode | crossover
//
// Every figure is printed with the machine it ran on and the command that
// produced it; `-o json` prints one JSON document for machines.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "interlace/kernels/backend.h"
#include "interlace/kernels/gemm.h"
#include "interlace/model/config.h"
#include "interlace/model/model.h"
#include "interlace/bench/bench_util.h"
#include "interlace/bench/machine_info.h"
#include "interlace/bench/suites.h"
#include "nlohmann/json.hpp"

namespace interlace::bench {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- kernels


// ---------------------------------------------------------------- decode


// Bytes a batch-1 decode step moves at context length ctx (fp32 weights):
// every dense weight, top_k of the experts, the LM head, one embedding row,
// the KV cache read, and the lightning state (base read, delta read + written).
double decode_bytes_per_token(const model::ModelConfig& c, int64_t ctx) {
  const double H = c.hidden_size, D = c.head_dim, Hq = c.num_attention_heads, Hk = c.num_key_value_heads,
               I = c.intermediate_size;
  double params = H + double(c.vocab_size) * H + H;  // embedding row, final norm, lm head
  double cache = 0;
  for (model::LayerKind k : c.layer_types) {
    params += 2 * H;
    if (k == model::LayerKind::kLinearAttention) {
      params += H * Hq * D * 3 + 2 * Hq * D * H + Hq * D;
      cache += 3 * Hq * D * D * 4;
    } else {
      params += 2 * H * Hq * D + 2 * H * Hk * D + (c.qk_norm ? 2 * D : 0);
      cache += 2.0 * ctx * Hk * D * 4;
    }
    params += c.is_moe() ? c.num_local_experts * H + c.num_experts_per_tok * 3 * H * I : 3 * H * I;
  }
  return params * 4 + cache;
}


// ---------------------------------------------------------------- crossover


// The length where the lightning/softmax time ratio crosses 1, interpolated
// log-linearly between grid points; -1 when it does not cross in the grid.
double crossing(const std::vector<int64_t>& lens, const std::vector<double>& ratio) {
  for (size_t i = 0; i < lens.size(); ++i) {
    if (ratio[i] <= 1.0) {
      if (i == 0) return double(lens[0]);
      const double x0 = std::log(double(lens[i - 1])), x1 = std::log(double(lens[i]));
      const double y0 = std::log(ratio[i - 1]), y1 = std::log(ratio[i]);
      return std::exp(x0 + (x1 - x0) * (0 - y0) / (y1 - y0));
    }
  }
  return -1;
}

}  // namespace


absl::Status run_bench_kernels(const Common& c) {
  kernels::Backend& be = kernels::cpu_backend();
  json results = json::array();
  auto add = [&](const std::string& op, const std::string& shape, double seconds, double work,
                 const std::string& unit) {
    results.push_back({{"op", op}, {"shape", shape}, {"median_ms", seconds * 1e3},
                       {"rate", work / seconds / 1e9}, {"rate_unit", unit}});
  };
  {
    const int64_t n = 1024;
    auto a = random_vector(n * n, 1), b = random_vector(n * n, 2);
    std::vector<float> y(n * n);
    double s = time_median([&] { kernels::sgemm(false, true, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, y.data(), n); }, 9);
    add("sgemm (oneDNN)", "1024x1024x1024", s, 2.0 * n * n * n, "GFLOP/s");
    const int64_t m = 1, k = 4096, nn = 4096;
    auto x = random_vector(m * k, 3), w = random_vector(nn * k, 4);
    std::vector<float> o(m * nn);
    s = time_median([&] { be.linear(x.data(), w.data(), o.data(), m, nn, k); }, 21);
    add("linear (GEMV, batch 1)", "1x4096 . 4096x4096^T", s, 4.0 * nn * k, "GB/s of weights");
  }
  {
    const int64_t rows = 4096, dim = 1024;
    auto x = random_vector(rows * dim, 5), w = random_vector(dim, 6);
    std::vector<float> y(rows * dim);
    double s = time_median([&] { be.rms_norm(x.data(), w.data(), y.data(), rows, dim, 1e-6f); }, 9);
    add("rms_norm", "4096x1024", s, 8.0 * rows * dim, "GB/s");
  }
  {
    const int64_t T = 4096, Hq = 64, Hk = 8, D = 128;
    auto k = random_vector(T * Hk * D, 7), v = random_vector(T * Hk * D, 8), q = random_vector(Hq * D, 9);
    std::vector<uint16_t> kb(k.size()), vb(v.size());
    core::convert_from_f32(core::DType::kBF16, k.data(), kb.data(), k.size());
    core::convert_from_f32(core::DType::kBF16, v.data(), vb.data(), v.size());
    std::vector<float> o(Hq * D);
    kernels::AttentionShape sh{.q_heads = Hq, .kv_heads = Hk, .head_dim = D, .scale = 0.088f,
                               .window = 0, .kv_dtype = core::DType::kBF16};
    kernels::KvView view{kb.data(), vb.data(), T};
    double s = time_median([&] { be.attention_decode(sh, q.data(), {&view, 1}, o.data()); }, 21);
    add("attention_decode (bf16 KV)", "T=4096 Hq=64 Hkv=8 D=128", s, 2.0 * T * Hk * D * 2, "GB/s of KV");
  }
  {
    const int64_t H = 64, D = 128;
    std::vector<float> slopes(H);
    for (int64_t h = 0; h < H; ++h) slopes[h] = kernels::lightning_slope(h, H, 0, 8);
    kernels::LightningShape sh{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = 256};
    std::vector<float> base(H * D * D), delta(H * D * D);
    int64_t steps = 0;
    kernels::LightningState st{base.data(), delta.data(), &steps};
    auto q = random_vector(H * D, 10), k = random_vector(H * D, 11), v = random_vector(H * D, 12);
    std::vector<float> o(H * D);
    double s = time_median([&] { be.lightning_decode(sh, q.data(), k.data(), v.data(), {&st, 1}, o.data()); }, 21);
    add("lightning_decode (f32 state)", "H=64 D=128", s, 3.0 * H * D * D * 4, "GB/s of state");
    const int64_t T = 4096, Hp = 8;
    auto qp = random_vector(T * Hp * D, 13), kp = random_vector(T * Hp * D, 14), vp = random_vector(T * Hp * D, 15);
    std::vector<float> op(T * Hp * D);
    kernels::LightningShape shp{.heads = Hp, .head_dim = D, .slopes = slopes.data(), .block_size = 256};
    s = time_median([&] {
      std::fill(base.begin(), base.end(), 0.0f);
      be.lightning_prefill(shp, qp.data(), kp.data(), vp.data(), T, st, op.data());
    }, 5);
    add("lightning_prefill (blocked)", "T=4096 H=8 D=128 block=256", s,
        double(Hp) * T * (4.0 * 256 * D + 4.0 * D * D), "GFLOP/s");
    auto kvk = random_vector(T * Hp * D, 16), kvv = random_vector(T * Hp * D, 17);
    kernels::AttentionShape ash{.q_heads = Hp, .kv_heads = Hp, .head_dim = D, .scale = 0.088f,
                                .window = 0, .kv_dtype = core::DType::kF32};
    kernels::KvView view{kvk.data(), kvv.data(), T};
    s = time_median([&] { be.attention_prefill(ash, qp.data(), view, 0, T, op.data()); }, 3);
    add("attention_prefill (causal)", "T=4096 H=8 D=128", s, double(Hp) * 2.0 * T * T * D, "GFLOP/s");
  }
  json settings = {{"backend", "cpu"}};
  emit(c, "kernels", settings, results, [&] {
    std::printf("%-32s %-30s %12s %12s\n", "op", "shape", "median_ms", "rate");
    for (auto& r : results)
      std::printf("%-32s %-30s %12.3f %8.1f %s\n", r["op"].get<std::string>().c_str(),
                  r["shape"].get<std::string>().c_str(), r["median_ms"].get<double>(), r["rate"].get<double>(),
                  r["rate_unit"].get<std::string>().c_str());
  });
  return absl::OkStatus();
}

absl::Status run_bench_decode(const Common& c, const DecodeArgs& a) {
  const double copy_bw = measure_copy_bandwidth_bytes_per_s();
  json results = json::array();
  auto precision = *model::parse_precision("fp32");
  for (const std::string& name : a.models) {
    const std::string path = find_example(name);
    auto config = model::load_config(path);
    if (!config.ok()) return config.status();
    std::fprintf(stderr, "bench decode: %s (%.1fM parameters)...\n", name.c_str(), config->parameter_count() / 1e6);
    auto m = model::Model::from_tensors(*config, model::random_weights(*config, 1), precision);
    if (!m.ok()) return m.status();
    model::Model& model = **m;
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<int32_t> tok(0, 255);
    auto random_tokens = [&](int64_t n) {
      std::vector<int32_t> t(n);
      for (auto& x : t) x = tok(rng);
      return t;
    };
    json r = {{"model", name}, {"parameters", config->parameter_count()}};
    {
      auto prompt = random_tokens(a.prompt_len);
      std::vector<float> logits;
      const double s = time_median([&] {
        model::SequenceState seq = model.new_sequence();
        model.prefill(seq, prompt, logits);
      }, 3);
      r["prefill_tokens_per_s"] = a.prompt_len / s;
    }
    for (int64_t B : a.batch_sizes) {
      std::vector<model::SequenceState> seqs;
      std::vector<float> logits;
      for (int64_t b = 0; b < B; ++b) {
        seqs.push_back(model.new_sequence());
        model.prefill(seqs.back(), random_tokens(a.context), logits);
      }
      std::vector<model::SequenceState*> ptrs;
      for (auto& s : seqs) ptrs.push_back(&s);
      std::vector<double> step_times;
      for (int64_t step = 0; step < a.steps; ++step) {
        auto toks = random_tokens(B);
        const auto t0 = Clock::now();
        model.decode(ptrs, toks, logits);
        step_times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      std::sort(step_times.begin(), step_times.end());
      const double step = step_times[step_times.size() / 2];
      r["decode_tokens_per_s_batch_" + std::to_string(B)] = B / step;
      if (B == 1) {
        // Bandwidth measured right after the decode run, so both see the same machine load.
        const double bw = measure_copy_bandwidth_bytes_per_s();
        const double bytes = decode_bytes_per_token(*config, a.context + a.steps / 2);
        const double bound = bw / bytes;
        r["copy_bandwidth_gb_per_s"] = bw / 1e9;
        r["decode_bytes_per_token"] = bytes;
        r["decode_bound_tokens_per_s"] = bound;
        r["decode_fraction_of_bound"] = (1.0 / step) / bound;
      }
    }
    results.push_back(r);
  }
  json settings = {{"precision", "fp32"}, {"prompt_len", a.prompt_len}, {"context", a.context},
                   {"steps", a.steps}, {"batch_sizes", a.batch_sizes},
                   {"copy_bandwidth_gb_per_s_at_start", copy_bw / 1e9},
                   {"bound", "bandwidth bound = copy bandwidth (STREAM convention: read + write bytes/s) / "
                             "bytes moved per batch-1 decode token"}};
  emit(c, "decode", settings, results, [&] {
    std::printf("# copy bandwidth %.1f GB/s at start (each model's bound uses its own measurement)\n", copy_bw / 1e9);
    std::printf("%-20s %8s %12s", "model", "params", "prefill t/s");
    for (int64_t B : a.batch_sizes) std::printf(" %12s", ("decode b" + std::to_string(B)).c_str());
    std::printf(" %10s %10s %8s\n", "MB/token", "bound t/s", "of bound");
    for (auto& r : results) {
      std::printf("%-20s %7.1fM %12.0f", r["model"].get<std::string>().c_str(),
                  r["parameters"].get<double>() / 1e6, r["prefill_tokens_per_s"].get<double>());
      for (int64_t B : a.batch_sizes)
        std::printf(" %12.1f", r["decode_tokens_per_s_batch_" + std::to_string(B)].get<double>());
      if (r.contains("decode_bound_tokens_per_s"))
        std::printf(" %10.1f %10.1f %7.0f%%", r["decode_bytes_per_token"].get<double>() / 1e6,
                    r["decode_bound_tokens_per_s"].get<double>(), 100 * r["decode_fraction_of_bound"].get<double>());
      std::printf("\n");
    }
  });
  return absl::OkStatus();
}

absl::Status run_bench_crossover(const Common& c, const CrossoverArgs& a) {
  kernels::Backend& be = kernels::cpu_backend();
  const int64_t H = a.heads, Hk = a.kv_heads, D = a.head_dim;
  std::vector<float> slopes(H);
  for (int64_t h = 0; h < H; ++h) slopes[h] = kernels::lightning_slope(h, H, 0, 8);
  kernels::LightningShape lsh{.heads = H, .head_dim = D, .slopes = slopes.data(), .block_size = a.block_size};
  std::vector<int64_t> lens;
  for (int64_t t = a.min_len; t <= a.max_len; t *= 2) lens.push_back(t);
  json rows = json::array();
  std::vector<double> prefill_ratio, decode_ratio;
  std::vector<float> base(H * D * D), delta(H * D * D);
  int64_t steps = 0;
  kernels::LightningState st{base.data(), delta.data(), &steps};
  for (int64_t T : lens) {
    std::fprintf(stderr, "bench crossover: T=%lld...\n", static_cast<long long>(T));
    auto q = random_vector(T * H * D, 1, 0.5f), k = random_vector(T * H * D, 2, 0.5f), v = random_vector(T * H * D, 3);
    std::vector<float> out(T * H * D);
    // Prefill: lightning (all heads) vs causal softmax attention with GQA (f32 KV).
    const int reps = T >= 8192 ? 1 : 3;
    const double lp = time_median([&] {
      std::fill(base.begin(), base.end(), 0.0f);
      steps = 0;
      be.lightning_prefill(lsh, q.data(), k.data(), v.data(), T, st, out.data());
    }, reps);
    kernels::AttentionShape ash{.q_heads = H, .kv_heads = Hk, .head_dim = D, .scale = 0.088f, .window = 0,
                                .kv_dtype = core::DType::kF32};
    kernels::KvView fview{k.data(), v.data(), T};  // first T*Hk*D entries serve as the KV
    const double sp = time_median([&] { be.attention_prefill(ash, q.data(), fview, 0, T, out.data()); }, reps);
    // Decode at context T: softmax reads a bf16 KV cache; lightning reads/writes its f32 state.
    std::vector<uint16_t> kb(T * Hk * D), vb(T * Hk * D);
    core::convert_from_f32(core::DType::kBF16, k.data(), kb.data(), kb.size());
    core::convert_from_f32(core::DType::kBF16, v.data(), vb.data(), vb.size());
    ash.kv_dtype = core::DType::kBF16;
    kernels::KvView bview{kb.data(), vb.data(), T};
    const double sd = time_median([&] { be.attention_decode(ash, q.data(), {&bview, 1}, out.data()); }, 15);
    const double ld = time_median([&] { be.lightning_decode(lsh, q.data(), k.data(), v.data(), {&st, 1}, out.data()); }, 15);
    prefill_ratio.push_back(lp / sp);
    decode_ratio.push_back(ld / sd);
    rows.push_back({{"tokens", T}, {"lightning_prefill_ms", lp * 1e3}, {"softmax_prefill_ms", sp * 1e3},
                    {"lightning_decode_us", ld * 1e6}, {"softmax_decode_us", sd * 1e6}});
  }
  const double theory_prefill = double(a.block_size + 2 * D);
  const double theory_decode = double(H) / double(Hk) * double(D) * 4.0 / 2.0;  // fp32 state / bf16 KV
  const double mp = crossing(lens, prefill_ratio), md = crossing(lens, decode_ratio);
  json results = {{"by_length", rows},
                  {"prefill_crossover_measured", mp},
                  {"prefill_crossover_theory", theory_prefill},
                  {"prefill_measured_over_theory", mp > 0 ? mp / theory_prefill : -1},
                  {"decode_crossover_measured", md},
                  {"decode_crossover_theory", theory_decode},
                  {"decode_measured_over_theory", md > 0 ? md / theory_decode : -1}};
  json settings = {{"heads", H}, {"kv_heads", Hk}, {"head_dim", D}, {"block_size", a.block_size},
                   {"prefill_theory", "FLOPs equal at T = block_size + 2*head_dim"},
                   {"decode_theory", "bytes equal at T = (H/H_kv) * head_dim * state_bytes/kv_bytes (f32 state, bf16 KV)"},
                   // Softmax decode does 4*H*head_dim FLOPs per cached token over 2*H_kv*head_dim*2 bytes
                   // of bf16 KV: the byte-based theory holds only where FLOP/s >= this x bandwidth.
                   {"softmax_decode_flops_per_kv_byte", double(4 * H * D) / double(2 * Hk * D * 2)}};
  emit(c, "crossover", settings, results, [&] {
    std::printf("%8s %14s %14s %14s %14s\n", "tokens", "lightning pf ms", "softmax pf ms", "lightning dec us",
                "softmax dec us");
    for (auto& r : rows)
      std::printf("%8lld %14.2f %14.2f %14.1f %14.1f\n", static_cast<long long>(r["tokens"].get<int64_t>()),
                  r["lightning_prefill_ms"].get<double>(), r["softmax_prefill_ms"].get<double>(),
                  r["lightning_decode_us"].get<double>(), r["softmax_decode_us"].get<double>());
    std::printf("prefill crossover: measured %.0f tokens, theory %.0f (ratio %.2f)\n", mp, theory_prefill,
                mp > 0 ? mp / theory_prefill : -1);
    std::printf("decode crossover:  measured %.0f tokens, theory %.0f (ratio %.2f)\n", md, theory_decode,
                md > 0 ? md / theory_decode : -1);
  });
  return absl::OkStatus();
}

}  // namespace interlace::bench
