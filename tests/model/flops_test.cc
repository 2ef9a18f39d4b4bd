// The FLOPs accounting against counts done by hand from two example configs.
#include "interlace/model/flops.h"

#include <gtest/gtest.h>

namespace interlace::model {
namespace {

ModelConfig load(const char* name) {
  auto c = load_config(std::string(INTERLACE_SOURCE_DIR) + "/examples/models/" + name);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// tiny-full.json: Llama, H 128, I 384, 4 layers, Hq 4, Hk 2, D 32, V 272.
// Per layer: projections 2 (2*128*128 + 2*128*64) = 98304; MLP 2*3*128*384 =
// 294912; attention 4*4*32*t = 512 t. LM head 2*128*272 = 69632.
// At t: 4 * (98304 + 294912 + 512 t) + 69632 = 1642496 + 2048 t.
TEST(Flops, LlamaByHand) {
  const ModelConfig c = load("tiny-full.json");
  EXPECT_DOUBLE_EQ(forward_flops_at(c, 1), 1642496.0 + 2048.0);
  EXPECT_DOUBLE_EQ(forward_flops_at(c, 1000), 1642496.0 + 2048.0 * 1000);
  // Mean over 1..100: t averages 50.5.
  EXPECT_DOUBLE_EQ(forward_flops_per_token(c, 100), 1642496.0 + 2048.0 * 50.5);
  EXPECT_DOUBLE_EQ(training_flops_per_token(c, 100), 3 * (1642496.0 + 2048.0 * 50.5));
}

// tiny-hybrid.json: MiniMax, H 128, I 256, 7 lightning + 1 softmax layer,
// Hq 4, Hk 2, D 32, V 272, 4 experts, top 2.
// Lightning layer: 2*5*128*4*32 = 163840 + 4*4*32*32 = 16384 -> 180224.
// Softmax layer: 98304 + 512 t. MoE per layer: 2*128*4 = 1024 router +
// 2 * 2*3*128*256 = 393216 -> 394240. LM head 69632.
// At t: 7*180224 + 98304 + 8*394240 + 69632 + 512 t = 4583424 + 512 t.
TEST(Flops, MiniMaxHybridByHand) {
  const ModelConfig c = load("tiny-hybrid.json");
  EXPECT_DOUBLE_EQ(forward_flops_at(c, 1), 4583424.0 + 512.0);
  EXPECT_DOUBLE_EQ(forward_flops_at(c, 4096), 4583424.0 + 512.0 * 4096);
  // A sliding window caps the softmax layer's attended tokens.
  ModelConfig windowed = c;
  windowed.sliding_window = 64;
  EXPECT_DOUBLE_EQ(forward_flops_at(windowed, 4096), 4583424.0 + 512.0 * 64);
  EXPECT_DOUBLE_EQ(forward_flops_at(windowed, 10), 4583424.0 + 512.0 * 10);
}

// Per sequence: a softmax layer 2 x 2 KV heads x 32 x bytes per token
// (128 values); a lightning layer 2 x 4 heads x 32^2 = 8192 state values.
TEST(Flops, SequenceStateBytesByHand) {
  const ModelConfig full = load("tiny-full.json");  // 4 softmax layers
  EXPECT_DOUBLE_EQ(sequence_state_bytes(full, 1000, 2, 4), 4 * 128.0 * 1000 * 2);
  const ModelConfig hybrid = load("tiny-hybrid.json");  // 7 lightning, 1 softmax
  EXPECT_DOUBLE_EQ(sequence_state_bytes(hybrid, 1000, 4, 4), 7 * 8192.0 * 4 + 128.0 * 1000 * 4);
  EXPECT_DOUBLE_EQ(sequence_state_bytes(hybrid, 2000, 4, 2) - sequence_state_bytes(hybrid, 1000, 4, 2), 128.0 * 1000 * 4);
  const ModelConfig swa = load("tiny-swa.json");  // 3 layers with 64-token windows, 1 full
  EXPECT_DOUBLE_EQ(sequence_state_bytes(swa, 1000, 4, 4), (3 * 64.0 + 1000) * 128 * 4);
  EXPECT_DOUBLE_EQ(sequence_state_bytes(swa, 10, 4, 4), 4 * 10.0 * 128 * 4);
}

// Lightning's cost does not grow with the context; softmax's does: the
// hybrid's per-token cost overtakes the full model's nowhere, and the full
// model's grows 4x faster with context (4 softmax layers against 1).
TEST(Flops, SoftmaxGrowsWithContextLightningDoesNot) {
  const ModelConfig full = load("tiny-full.json"), hybrid = load("tiny-hybrid.json");
  const double full_slope = forward_flops_at(full, 2001) - forward_flops_at(full, 2000);
  const double hybrid_slope = forward_flops_at(hybrid, 2001) - forward_flops_at(hybrid, 2000);
  EXPECT_DOUBLE_EQ(full_slope, 4 * hybrid_slope);
}

}  // namespace
}  // namespace interlace::model
