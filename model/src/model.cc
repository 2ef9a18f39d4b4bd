#include "interlace/model/model.h"

#include "interlace/model/architecture.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "interlace/core/status.h"

namespace interlace::model {

using core::DType;
using kernels::KvView;
using kernels::LightningState;

size_t SequenceState::bytes() const {
  size_t b = 0;
  for (auto& kvc : kv) b += kvc.k.size() + kvc.v.size();
  for (auto& l : lightning) b += (l.base.size() + l.delta.size()) * sizeof(float);
  return b;
}

Model::Model(ModelConfig config, ModelWeights weights, PrecisionProfile precision,
             kernels::Backend& backend)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      precision_(std::move(precision)),
      backend_(backend) {
  kv_storage_ = precision_.kv_cache == DType::kBF16 ? DType::kBF16 : DType::kF32;
  slopes_.resize(config_.num_hidden_layers);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    if (config_.layer_types[i] != LayerKind::kLinearAttention) continue;
    for (int64_t h = 0; h < config_.num_attention_heads; ++h)
      slopes_[i].push_back(kernels::lightning_slope(h, config_.num_attention_heads, i,
                                                    config_.num_hidden_layers));
  }
}

namespace {
kernels::Backend& default_backend(const PrecisionProfile& p) {
  return p.strict ? kernels::strict_backend() : kernels::cpu_backend();
}
}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::load(const std::string& dir,
                                                   const PrecisionProfile& precision,
                                                   kernels::Backend* backend) {
  INTERLACE_ASSIGN_OR_RETURN(ModelConfig config, load_config(dir));
  INTERLACE_ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::open(dir));
  INTERLACE_ASSIGN_OR_RETURN(ModelWeights weights, load_weights(config, checkpoint, precision));
  return std::unique_ptr<Model>(
      new Model(config, std::move(weights), precision, backend ? *backend : default_backend(precision)));
}

absl::StatusOr<std::unique_ptr<Model>> Model::from_tensors(const ModelConfig& config,
                                                           const NamedTensors& tensors,
                                                           const PrecisionProfile& precision,
                                                           kernels::Backend* backend) {
  INTERLACE_ASSIGN_OR_RETURN(ModelWeights weights, assemble_weights(config, tensors, precision));
  return std::unique_ptr<Model>(
      new Model(config, std::move(weights), precision, backend ? *backend : default_backend(precision)));
}

SequenceState Model::new_sequence() const {
  SequenceState s;
  s.kv.resize(config_.num_hidden_layers);
  s.lightning.resize(config_.num_hidden_layers);
  const size_t state = config_.num_attention_heads * config_.head_dim * config_.head_dim;
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    if (config_.layer_types[i] == LayerKind::kLinearAttention) {
      s.lightning[i].base.assign(state, 0.0f);
      s.lightning[i].delta.assign(state, 0.0f);
    }
  }
  return s;
}

void Model::linear(const Linear& l, const float* x, int64_t rows, float* y) {
  const int64_t n = l.out_features();
  backend_.linear(x, l.weight.f32(), y, rows, n, l.in_features());
  if (l.bias.defined()) {
    const float* b = l.bias.f32();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) y[r * n + j] += b[j];
  }
  round_act(y, rows * n);
}

void Model::prefill(SequenceState& seq, std::span<const int32_t> tokens, std::vector<float>& logits,
                    bool all_logits) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  INTERLACE_CHECK(n > 0, "prefill of no tokens");
  std::vector<Segment> segs = {{&seq, seq.length, n, 0}};
  std::vector<int64_t> rows;
  if (all_logits) {
    for (int64_t i = 0; i < n; ++i) rows.push_back(i);
  } else {
    rows.push_back(n - 1);
  }
  forward(segs, tokens.data(), n, rows, logits);
}

void Model::decode(std::span<SequenceState* const> seqs, std::span<const int32_t> tokens,
                   std::vector<float>& logits) {
  INTERLACE_CHECK(seqs.size() == tokens.size(), "decode: one token per sequence");
  std::vector<Chunk> chunks;
  for (size_t b = 0; b < seqs.size(); ++b) chunks.push_back({seqs[b], tokens.subspan(b, 1)});
  step(chunks, logits);
}

void Model::step(std::span<const Chunk> chunks, std::vector<float>& logits) {
  std::vector<Segment> segs;
  std::vector<int64_t> rows;
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < chunks.size(); ++i) {
    INTERLACE_CHECK(!chunks[i].tokens.empty(), "step: a chunk of no tokens");
    for (size_t j = 0; j < i; ++j)
      INTERLACE_CHECK(chunks[i].seq != chunks[j].seq, "step: a sequence appears twice in one batch");
    const int64_t row = static_cast<int64_t>(tokens.size()), n = static_cast<int64_t>(chunks[i].tokens.size());
    segs.push_back({chunks[i].seq, chunks[i].seq->length, n, row, chunks[i].verify});
    tokens.insert(tokens.end(), chunks[i].tokens.begin(), chunks[i].tokens.end());
    if (chunks[i].verify) {
      for (int64_t r = row; r < row + n; ++r) rows.push_back(r);
      SequenceState::Verified& rec = chunks[i].seq->verified;
      rec = {};
      rec.start = chunks[i].seq->length;
      rec.n = n;
      rec.before.resize(config_.num_hidden_layers);
      rec.qkv.resize(config_.num_hidden_layers);
    } else {
      rows.push_back(row + n - 1);
    }
  }
  forward(segs, tokens.data(), static_cast<int64_t>(tokens.size()), rows, logits);
}

void Model::rollback_verified(SequenceState& seq, int64_t length) {
  SequenceState::Verified& rec = seq.verified;
  INTERLACE_CHECK(rec.n > 0 && seq.length == rec.start + rec.n,
                  "rollback_verified: the sequence's last forward was not a verification chunk");
  INTERLACE_CHECK(length >= rec.start && length <= rec.start + rec.n,
                  "rollback_verified: position outside the verification chunk");
  const int64_t keep = length - rec.start, HD = config_.num_attention_heads * config_.head_dim;
  if (keep < rec.n) {
    std::vector<float> scratch(HD);
    for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
      if (config_.layer_types[layer] != LayerKind::kLinearAttention) continue;
      SequenceState::Lightning& st = seq.lightning[layer];
      st = std::move(rec.before[layer]);
      kernels::LightningShape shape{.heads = config_.num_attention_heads, .head_dim = config_.head_dim,
                                    .slopes = slopes_[layer].data(), .block_size = config_.block_size};
      LightningState ref{st.base.data(), st.delta.data(), &st.steps};
      for (int64_t i = 0; i < keep; ++i) {
        const float* row = &rec.qkv[layer][i * 3 * HD];
        backend_.lightning_decode(shape, row, row + HD, row + 2 * HD, {&ref, 1}, scratch.data());
        core::round_array(precision_.state, st.base.data(), st.base.size());
        core::round_array(precision_.state, st.delta.data(), st.delta.size());
      }
    }
    seq.length = length;
  }
  seq.verified = {};
}

SequenceMark Model::mark(const SequenceState& seq) const {
  SequenceMark m{seq.length, {}};
  m.lightning.resize(seq.lightning.size());
  for (size_t i = 0; i < seq.lightning.size(); ++i)
    if (!seq.lightning[i].base.empty()) m.lightning[i] = seq.lightning[i];
  return m;
}

void Model::restore(SequenceState& seq, const SequenceMark& m) const {
  INTERLACE_CHECK(m.length <= seq.length && m.lightning.size() == seq.lightning.size(),
                  "restore: a mark from another sequence or from later");
  for (size_t i = 0; i < seq.lightning.size(); ++i)
    if (!seq.lightning[i].base.empty()) seq.lightning[i] = m.lightning[i];
  seq.length = m.length;
  seq.verified = {};
}

std::vector<float> Model::score(std::span<const int32_t> tokens, ScorePath path) {
  const int64_t n = static_cast<int64_t>(tokens.size()), V = config_.vocab_size;
  std::vector<float> out(n, NAN);
  for (int32_t t : tokens) INTERLACE_CHECK(t >= 0 && t < V, "score: token id outside the vocabulary");
  if (n < 2) return out;
  SequenceState seq = new_sequence();
  std::vector<float> logits;
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  if (path == ScorePath::kPrefill) {
    prefill(seq, tokens.first(n - 1), logits, /*all_logits=*/true);
    backend_.log_softmax_gather(logits.data(), targets.data(), n - 1, V, out.data() + 1);
  } else {
    SequenceState* s = &seq;
    for (int64_t i = 0; i + 1 < n; ++i) {
      decode({&s, 1}, tokens.subspan(i, 1), logits);
      backend_.log_softmax_gather(logits.data(), &targets[i], 1, V, out.data() + i + 1);
    }
  }
  return out;
}

void Model::forward(std::vector<Segment>& segs, const int32_t* tokens, int64_t rows,
                    const std::vector<int64_t>& logit_rows, std::vector<float>& logits) {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size;
  std::vector<float> x(rows * H), h(rows * H), a(rows * H);
  for (int64_t r = 0; r < rows; ++r) {
    INTERLACE_CHECK(tokens[r] >= 0 && tokens[r] < c.vocab_size, "token id out of range");
    std::memcpy(&x[r * H], weights_.embed.f32() + int64_t(tokens[r]) * H, H * sizeof(float));
  }
  round_act(x.data(), x.size());

  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const LayerWeights& L = weights_.layers[layer];
    const bool lightning = L.kind == LayerKind::kLinearAttention;
    backend_.rms_norm(x.data(), L.input_norm.f32(), h.data(), rows, H, c.rms_norm_eps);
    round_act(h.data(), h.size());
    if (lightning) {
      lightning_layer(layer, segs, rows, h.data(), a.data());
    } else {
      softmax_layer(layer, segs, rows, h.data(), a.data());
    }
    if (c.architecture == Architecture::kMiniMax) {
      // MiniMax: the residual is the normed input, scaled.
      const auto [alpha, beta] = attention_residual(c, c.layer_types[layer]);
      for (int64_t i = 0; i < rows * H; ++i) x[i] = h[i] * alpha + a[i] * beta;
    } else {
      for (int64_t i = 0; i < rows * H; ++i) x[i] += a[i];
    }
    round_act(x.data(), x.size());

    backend_.rms_norm(x.data(), L.post_norm.f32(), h.data(), rows, H, c.rms_norm_eps);
    round_act(h.data(), h.size());
    if (c.is_moe()) {
      moe_mlp(L, rows, h.data(), a.data());
      const auto [alpha, beta] = mlp_residual(c);
      for (int64_t i = 0; i < rows * H; ++i) x[i] = h[i] * alpha + a[i] * beta;
    } else {
      dense_mlp(L, rows, h.data(), a.data());
      for (int64_t i = 0; i < rows * H; ++i) x[i] += a[i];
    }
    round_act(x.data(), x.size());
  }
  for (auto& s : segs) s.seq->length = s.start + s.n;

  // Final norm and LM head on the requested rows only.
  const int64_t m = static_cast<int64_t>(logit_rows.size()), V = c.vocab_size;
  std::vector<float> last(m * H), normed(m * H);
  for (int64_t i = 0; i < m; ++i) std::memcpy(&last[i * H], &x[logit_rows[i] * H], H * sizeof(float));
  backend_.rms_norm(last.data(), weights_.final_norm.f32(), normed.data(), m, H, c.rms_norm_eps);
  round_act(normed.data(), normed.size());
  core::round_array(precision_.lm_head, normed.data(), normed.size());
  logits.resize(m * V);
  backend_.linear(normed.data(), weights_.lm_head.f32(), logits.data(), m, V, H);
  core::round_array(precision_.lm_head, logits.data(), logits.size());
}

void Model::softmax_layer(int64_t layer, std::vector<Segment>& segs, int64_t rows, const float* h,
                          float* out) {
  const ModelConfig& c = config_;
  const LayerWeights& L = weights_.layers[layer];
  const int64_t Hq = c.num_attention_heads, Hk = c.num_key_value_heads, D = c.head_dim;
  std::vector<float> q(rows * Hq * D), k(rows * Hk * D), v(rows * Hk * D), attn(rows * Hq * D);
  {
    // One GEMM for q, k and v, then split the columns.
    const int64_t width = (Hq + 2 * Hk) * D;
    std::vector<float> qkv(rows * width);
    linear(L.attn_in, h, rows, qkv.data());
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = &qkv[r * width];
      std::memcpy(&q[r * Hq * D], src, Hq * D * sizeof(float));
      std::memcpy(&k[r * Hk * D], src + Hq * D, Hk * D * sizeof(float));
      std::memcpy(&v[r * Hk * D], src + (Hq + Hk) * D, Hk * D * sizeof(float));
    }
  }
  if (c.qk_norm) {
    // Qwen3: per-head RMSNorm of q and k, before RoPE.
    std::vector<float> tmp(q.size());
    backend_.rms_norm(q.data(), L.q_norm.f32(), tmp.data(), rows * Hq, D, c.rms_norm_eps);
    q.swap(tmp);
    tmp.resize(k.size());
    backend_.rms_norm(k.data(), L.k_norm.f32(), tmp.data(), rows * Hk, D, c.rms_norm_eps);
    k.swap(tmp);
    round_act(q.data(), q.size());
    round_act(k.data(), k.size());
  }
  std::vector<int64_t> positions(rows);
  for (const Segment& s : segs)
    for (int64_t i = 0; i < s.n; ++i) positions[s.row + i] = s.start + i;
  backend_.rope(q.data(), positions.data(), rows, Hq, D, c.rotary_dim, c.rope_theta);
  backend_.rope(k.data(), positions.data(), rows, Hk, D, c.rotary_dim, c.rope_theta);
  round_act(q.data(), q.size());
  round_act(k.data(), k.size());

  // Append keys and values to each sequence's cache, in the KV storage dtype.
  const size_t row_elems = Hk * D, es = core::dtype_size(kv_storage_);
  for (const Segment& s : segs) {
    SequenceState::Kv& cache = s.seq->kv[layer];
    const size_t need = static_cast<size_t>(s.start + s.n) * row_elems * es;
    if (cache.k.size() < need) {
      const size_t cap = std::max(need, cache.k.size() * 2);
      cache.k.resize(cap);
      cache.v.resize(cap);
    }
    std::vector<float> kr(k.begin() + s.row * row_elems, k.begin() + (s.row + s.n) * row_elems);
    std::vector<float> vr(v.begin() + s.row * row_elems, v.begin() + (s.row + s.n) * row_elems);
    core::round_array(precision_.kv_cache, kr.data(), kr.size());
    core::round_array(precision_.kv_cache, vr.data(), vr.size());
    core::convert_from_f32(kv_storage_, kr.data(), cache.k.data() + s.start * row_elems * es, kr.size());
    core::convert_from_f32(kv_storage_, vr.data(), cache.v.data() + s.start * row_elems * es, vr.size());
  }

  kernels::AttentionShape shape{.q_heads = Hq, .kv_heads = Hk, .head_dim = D,
                                .scale = 1.0f / std::sqrt(static_cast<float>(D)),
                                .window = c.window_for_layer(layer), .kv_dtype = kv_storage_};
  // Single-token segments are decoded together; longer ones are prefilled one by one.
  std::vector<KvView> views;
  std::vector<int64_t> decode_rows;
  for (const Segment& s : segs) {
    KvView view{s.seq->kv[layer].k.data(), s.seq->kv[layer].v.data(), s.start + s.n};
    if (s.n == 1 || s.verify) {
      // A verification chunk: row i is a decode that sees the first start + i + 1 keys.
      for (int64_t i = 0; i < s.n; ++i) {
        views.push_back({view.k, view.v, s.start + i + 1});
        decode_rows.push_back(s.row + i);
      }
    } else {
      backend_.attention_prefill(shape, q.data() + s.row * Hq * D, view, s.start, s.n,
                                 attn.data() + s.row * Hq * D);
    }
  }
  if (!views.empty()) {
    const int64_t m = static_cast<int64_t>(decode_rows.size()), row = Hq * D;
    std::vector<float> qd(m * row), od(m * row);
    for (int64_t i = 0; i < m; ++i) std::memcpy(&qd[i * row], &q[decode_rows[i] * row], row * sizeof(float));
    backend_.attention_decode(shape, qd.data(), views, od.data());
    for (int64_t i = 0; i < m; ++i) std::memcpy(&attn[decode_rows[i] * row], &od[i * row], row * sizeof(float));
  }
  round_act(attn.data(), attn.size());
  linear(L.o, attn.data(), rows, out);
}

void Model::lightning_layer(int64_t layer, std::vector<Segment>& segs, int64_t rows, const float* h,
                            float* out) {
  const ModelConfig& c = config_;
  const LayerWeights& L = weights_.layers[layer];
  const int64_t Hn = c.num_attention_heads, D = c.head_dim, HD = Hn * D;
  // One GEMM for qkv_proj and output_gate: each row is [qkv (3 HD) | gate (HD)].
  std::vector<float> fused(rows * 4 * HD), gate(rows * HD);
  linear(L.attn_in, h, rows, fused.data());
  for (int64_t r = 0; r < rows; ++r) {
    backend_.silu_inplace(&fused[r * 4 * HD], 3 * HD);
    std::memcpy(&gate[r * HD], &fused[r * 4 * HD + 3 * HD], HD * sizeof(float));
  }
  round_act(fused.data(), fused.size());
  // Per head the projection is laid out [q | k | v], head_dim each.
  std::vector<float> q(rows * HD), k(rows * HD), v(rows * HD), attn(rows * HD);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t hh = 0; hh < Hn; ++hh) {
      const float* src = &fused[r * 4 * HD + hh * 3 * D];
      std::memcpy(&q[(r * Hn + hh) * D], src, D * sizeof(float));
      std::memcpy(&k[(r * Hn + hh) * D], src + D, D * sizeof(float));
      std::memcpy(&v[(r * Hn + hh) * D], src + 2 * D, D * sizeof(float));
    }
  kernels::LightningShape shape{.heads = Hn, .head_dim = D, .slopes = slopes_[layer].data(),
                                .block_size = c.block_size};
  std::vector<LightningState> decode_states;
  std::vector<int64_t> decode_rows;
  for (const Segment& s : segs) {
    SequenceState::Lightning& st = s.seq->lightning[layer];
    LightningState ref{st.base.data(), st.delta.data(), &st.steps};
    if (s.verify) {
      lightning_verify(layer, s, q.data(), k.data(), v.data(), attn.data());
    } else if (s.n == 1) {
      decode_states.push_back(ref);
      decode_rows.push_back(s.row);
    } else {
      backend_.lightning_prefill(shape, &q[s.row * HD], &k[s.row * HD], &v[s.row * HD], s.n, ref,
                                 &attn[s.row * HD]);
    }
  }
  if (!decode_states.empty()) {
    const int64_t m = static_cast<int64_t>(decode_rows.size());
    std::vector<float> qd(m * HD), kd(m * HD), vd(m * HD), od(m * HD);
    for (int64_t i = 0; i < m; ++i) {
      std::memcpy(&qd[i * HD], &q[decode_rows[i] * HD], HD * sizeof(float));
      std::memcpy(&kd[i * HD], &k[decode_rows[i] * HD], HD * sizeof(float));
      std::memcpy(&vd[i * HD], &v[decode_rows[i] * HD], HD * sizeof(float));
    }
    backend_.lightning_decode(shape, qd.data(), kd.data(), vd.data(), decode_states, od.data());
    for (int64_t i = 0; i < m; ++i) std::memcpy(&attn[decode_rows[i] * HD], &od[i * HD], HD * sizeof(float));
  }
  if (precision_.state != DType::kF32) {
    for (const Segment& s : segs) {
      SequenceState::Lightning& st = s.seq->lightning[layer];
      core::round_array(precision_.state, st.base.data(), st.base.size());
      core::round_array(precision_.state, st.delta.data(), st.delta.size());
    }
  }
  round_act(attn.data(), attn.size());
  // RMSNorm over all heads, times sigmoid(output_gate(h)), then out_proj.
  std::vector<float> normed(rows * HD);
  backend_.rms_norm(attn.data(), L.attn_norm.f32(), normed.data(), rows, HD, kLightningNormEps);
  round_act(normed.data(), normed.size());
  backend_.sigmoid_gate(gate.data(), normed.data(), rows * HD);
  round_act(normed.data(), normed.size());
  linear(L.out, normed.data(), rows, out);
}

// A verification chunk in a lightning layer: its positions one at a time
// through the decode kernel, the state rounded after each as decode rounds it,
// with the state before and every position's q, k, v kept for rollback_verified.
void Model::lightning_verify(int64_t layer, const Segment& s, const float* q, const float* k, const float* v,
                             float* out) {
  const int64_t HD = config_.num_attention_heads * config_.head_dim;
  SequenceState::Lightning& st = s.seq->lightning[layer];
  SequenceState::Verified& rec = s.seq->verified;
  rec.before[layer] = st;
  std::vector<float>& qkv = rec.qkv[layer];
  qkv.resize(s.n * 3 * HD);
  kernels::LightningShape shape{.heads = config_.num_attention_heads, .head_dim = config_.head_dim,
                                .slopes = slopes_[layer].data(), .block_size = config_.block_size};
  LightningState ref{st.base.data(), st.delta.data(), &st.steps};
  for (int64_t i = 0; i < s.n; ++i) {
    const int64_t r = (s.row + i) * HD;
    std::memcpy(&qkv[i * 3 * HD], q + r, HD * sizeof(float));
    std::memcpy(&qkv[i * 3 * HD + HD], k + r, HD * sizeof(float));
    std::memcpy(&qkv[i * 3 * HD + 2 * HD], v + r, HD * sizeof(float));
    backend_.lightning_decode(shape, q + r, k + r, v + r, {&ref, 1}, out + r);
    core::round_array(precision_.state, st.base.data(), st.base.size());
    core::round_array(precision_.state, st.delta.data(), st.delta.size());
  }
}

// silu(gate) * up for rows laid out [gate (I) | up (I)], into act[rows, I].
void Model::swiglu_rows(const float* gate_up, int64_t rows, int64_t I, float* act) {
  for (int64_t r = 0; r < rows; ++r)
    backend_.silu_mul(gate_up + r * 2 * I, gate_up + r * 2 * I + I, act + r * I, I);
  round_act(act, rows * I);
}

void Model::dense_mlp(const LayerWeights& L, int64_t rows, const float* h, float* out) {
  const int64_t I = L.mlp_gate.out_features();
  std::vector<float> gu(rows * 2 * I), act(rows * I);
  linear(L.mlp_in, h, rows, gu.data());
  swiglu_rows(gu.data(), rows, I, act.data());
  linear(L.mlp_down, act.data(), rows, out);
}

void Model::moe_mlp(const LayerWeights& L, int64_t rows, const float* h, float* out) {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, E = c.num_local_experts, K = c.num_experts_per_tok,
                I = c.intermediate_size;
  std::vector<float> router(rows * E);
  linear(L.router, h, rows, router.data());
  std::vector<int32_t> index(rows * K);
  std::vector<float> weight(rows * K);
  backend_.moe_route(router.data(), rows, E, K, index.data(), weight.data());
  std::fill(out, out + rows * H, 0.0f);
  // Group rows by expert so each expert runs one GEMM over its tokens.
  std::vector<std::vector<std::pair<int64_t, float>>> assigned(E);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < K; ++j) assigned[index[r * K + j]].push_back({r, weight[r * K + j]});
  // One expert at a time; oneDNN threads each GEMM. (Running experts side by side
  // from our own OpenMP region made oneDNN open nested teams: far slower.)
  std::vector<float> xin, gu, act, y;
  for (int64_t e = 0; e < E; ++e) {
    const auto& list = assigned[e];
    if (list.empty()) continue;
    const int64_t m = static_cast<int64_t>(list.size());
    xin.resize(m * H);
    gu.resize(m * 2 * I);
    act.resize(m * I);
    y.resize(m * H);
    for (int64_t i = 0; i < m; ++i) std::memcpy(&xin[i * H], h + list[i].first * H, H * sizeof(float));
    linear(L.expert_in[e], xin.data(), m, gu.data());
    swiglu_rows(gu.data(), m, I, act.data());
    linear(L.expert_down[e], act.data(), m, y.data());
    for (int64_t i = 0; i < m; ++i) {
      float* o = out + list[i].first * H;
      const float w = list[i].second;
      for (int64_t d = 0; d < H; ++d) o[d] += w * y[i * H + d];
    }
  }
  round_act(out, rows * H);
}

}  // namespace interlace::model
