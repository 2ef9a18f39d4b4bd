// Backward passes of the ops in backend.h (fp32, CPU), for the learner's
// training forward. Gradients are accumulated (+=) into the d* outputs so a
// caller can sum over uses; zero them first for a plain gradient. Layouts match
// the forward ops. Checked against central finite differences of float64
// forwards in tests/kernels/backward_test.cc.
//
// Status: one implementation each (straightforward loops and oneDNN GEMMs);
// the reference/fast split of backend.h does not exist for backward yet.
#pragma once

#include <cstdint>

#include "interlace/kernels/backend.h"

namespace interlace::kernels::backward {

// y[m,n] = x[m,k] w[n,k]^T:  dx += dy w,  dw += dy^T x.  (dx or dw may be null.)
void linear(const float* x, const float* w, const float* dy, int64_t m, int64_t n, int64_t k,
            float* dx, float* dw);

// y = x * rsqrt(mean(x^2) + eps) * weight, per row.
void rms_norm(const float* x, const float* weight, const float* dy, int64_t rows, int64_t dim,
              float eps, float* dx, float* dweight);

// The rotation is orthogonal: the gradient rotates back by the same angle.
// Applied in place to dx[tokens, heads, head_dim] (which holds dy on entry).
void rope(float* dx, const int64_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
          int64_t rotary_dim, float theta);

// out = silu(gate) * up.
void silu_mul(const float* gate, const float* up, const float* dout, int64_t n, float* dgate,
              float* dup);
// y = silu(x).
void silu(const float* x, const float* dy, int64_t n, float* dx);
// y = sigmoid(gate) * x.
void sigmoid_gate(const float* gate, const float* x, const float* dy, int64_t n, float* dgate,
                  float* dx);

// loss = -sum_r scale[r] * log_softmax(logits[r])[targets[r]]; dlogits += d loss.
// (scale carries the loss mask and the 1/num_tokens normalisation.)
void cross_entropy(const float* logits, const int32_t* targets, const float* scale, int64_t rows,
                   int64_t vocab, float* dlogits);

// Causal softmax attention over one sequence (no cache: q_start = 0), GQA and
// sliding window as in AttentionShape (kv_dtype must be f32). q [T, Hq, D],
// k, v [T, Hk, D]. Probabilities are recomputed, one query row at a time.
void attention(const AttentionShape& s, const float* q, const float* k, const float* v,
               const float* dout, int64_t tokens, float* dq, float* dk, float* dv);

// Lightning attention from a zero state: o_t = sum_{j<=t} exp(-s(t-j)) (q_t.k_j) v_j.
//   dq_t = sum_{j<=t} exp(-s(t-j)) (do_t.v_j) k_j      (a forward pass with v -> do, S -> S^T)
//   dk_j = sum_{t>=j} exp(-s(t-j)) (do_t.v_j) q_t      (a reverse-time pass)
//   dv_j = sum_{t>=j} exp(-s(t-j)) (q_t.k_j) do_t
// Both passes are blocked like the forward (block_size from the shape), so memory
// is O(tokens x head_dim + head_dim^2), never O(tokens^2).
void lightning(const LightningShape& s, const float* q, const float* k, const float* v,
               const float* dout, int64_t tokens, float* dq, float* dk, float* dv);

// Mixtral routing: w = renormalised top-k of softmax(logits). Given dweight
// [tokens, top_k] (the gradient wrt each selected weight) and the selection,
// accumulates dlogits [tokens, experts]. The selection itself has no gradient.
void moe_route(const float* logits, const int32_t* index, const float* dweight, int64_t tokens,
               int64_t experts, int64_t top_k, float* dlogits);

}  // namespace interlace::kernels::backward
