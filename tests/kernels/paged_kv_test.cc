// The paged KV layout's host side (kernels/paged_kv.h): the block allocator,
// block tables (growth, forks sharing blocks, copy-on-write, cut-backs), and
// decode attention through block tables against the contiguous reference.
#include "interlace/kernels/paged_kv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>

#include "support/random.h"

namespace interlace::kernels {
namespace {

TEST(KvBlockAllocator, HandsOutEveryBlockOnceAndSaysWhenThePoolIsFull) {
  KvBlockAllocator pool(3);
  std::vector<int32_t> got;
  for (int i = 0; i < 3; ++i) got.push_back(*pool.allocate());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 2}));
  auto full = pool.allocate();
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("all 3 blocks"), std::string::npos) << full.status();
  pool.retain(1);
  pool.release(1);
  EXPECT_EQ(pool.free_blocks(), 0) << "a block with a sharer left stays in use";
  pool.release(1);
  EXPECT_EQ(pool.free_blocks(), 1);
  EXPECT_EQ(*pool.allocate(), 1);
}

TEST(BlockTable, ForksShareBlocksAndCopyTheSharedBlockBeforeWritingIntoIt) {
  KvBlockAllocator pool(8);
  BlockTable a(4);
  ASSERT_TRUE(a.extend(pool, 6).ok());  // blocks for positions 0..5: two
  EXPECT_EQ(a.blocks().size(), 2u);
  EXPECT_EQ(pool.free_blocks(), 6);

  BlockTable b = a.fork(pool);
  EXPECT_EQ(b.blocks(), a.blocks());
  EXPECT_EQ(pool.references(a.blocks()[0]), 2);
  EXPECT_EQ(pool.free_blocks(), 6) << "a fork copies no rows";

  // b writes position 6, inside the shared second block: b gets its own copy.
  auto copies = b.extend(pool, 7);
  ASSERT_TRUE(copies.ok());
  ASSERT_EQ(copies->size(), 1u);
  EXPECT_EQ((*copies)[0].from, a.blocks()[1]);
  EXPECT_EQ((*copies)[0].to, b.blocks()[1]);
  EXPECT_NE(b.blocks()[1], a.blocks()[1]);
  EXPECT_EQ(b.blocks()[0], a.blocks()[0]) << "the full first block stays shared";
  EXPECT_EQ(pool.references(a.blocks()[1]), 1);

  // A write that starts a new block copies nothing.
  BlockTable c(4);
  ASSERT_TRUE(c.extend(pool, 4).ok());
  BlockTable d = c.fork(pool);
  copies = d.extend(pool, 5);
  ASSERT_TRUE(copies.ok());
  EXPECT_TRUE(copies->empty());
  EXPECT_EQ(d.blocks()[0], c.blocks()[0]);

  // Cut back (a rejected draft): blocks past the new length go back.
  const int64_t before = pool.free_blocks();
  d.truncate(pool, 3);
  EXPECT_EQ(d.blocks().size(), 1u);
  EXPECT_EQ(pool.free_blocks(), before + 1);
  // d now ends inside the block it shares with c: its next write copies it.
  copies = d.extend(pool, 4);
  ASSERT_TRUE(copies.ok());
  EXPECT_EQ(copies->size(), 1u);

  for (BlockTable* t : {&a, &b, &c, &d}) t->clear(pool);
  EXPECT_EQ(pool.free_blocks(), 8) << "every block back once every table is gone";
}

TEST(BlockTable, AGrowthThatDoesNotFitChangesNothing) {
  KvBlockAllocator pool(3);
  BlockTable a(4);
  ASSERT_TRUE(a.extend(pool, 8).ok());
  BlockTable b = a.fork(pool);
  b.truncate(pool, 6);
  // 6 -> 13 needs a private copy of block 1 and two new blocks; one is free.
  auto r = b.extend(pool, 13);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("3 more blocks needed for 13 tokens, 1 free of 3"), std::string::npos) << r.status();
  EXPECT_EQ(b.length(), 6);
  EXPECT_EQ(b.blocks(), (std::vector<int32_t>(a.blocks().begin(), a.blocks().end())));
  EXPECT_EQ(pool.free_blocks(), 1);
}

// Many tables growing, forking, cutting back and ending at random, with a
// pool whose rows hold the token each position was written with: every
// table must read back exactly its own history after every operation (a
// write into a block another table shares would show as a wrong token), and
// every block's reference count must equal the tables holding it.
TEST(BlockTable, RandomForksGrowthAndCutsNeverCorruptAnotherTablesRows) {
  const uint64_t seed = interlace::testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t block_size = 4, blocks = 64;
  KvBlockAllocator pool(blocks);
  std::vector<int64_t> rows(size_t(blocks * block_size), -1);  // the pool's storage: one token per row
  struct Sequence {
    BlockTable table{4};
    std::vector<int64_t> tokens;  // what it wrote, position by position
  };
  std::vector<Sequence> seqs;
  int64_t next_token = 0, exhausted = 0;
  for (int op = 0; op < 5000; ++op) {
    const int kind = int(rng() % 10);
    if (seqs.empty() || kind < 2) {
      seqs.push_back({});
    } else if (kind < 6) {  // grow by 1..6 tokens
      Sequence& s = seqs[rng() % seqs.size()];
      const int64_t n = 1 + int64_t(rng() % 6), old = s.table.length();
      auto copies = s.table.extend(pool, old + n);
      if (!copies.ok()) {
        ++exhausted;
        ASSERT_EQ(s.table.length(), old);
        continue;
      }
      for (const BlockCopy& c : *copies)
        std::copy_n(rows.begin() + c.from * block_size, block_size, rows.begin() + c.to * block_size);
      for (int64_t p = old; p < old + n; ++p) {
        rows[size_t(s.table.block_of(p) * block_size + p % block_size)] = next_token;
        s.tokens.push_back(next_token++);
      }
    } else if (kind < 8) {  // fork (a group's branch, a cache hit)
      Sequence& s = seqs[rng() % seqs.size()];
      seqs.push_back({s.table.fork(pool), s.tokens});
    } else if (kind < 9) {  // cut back
      Sequence& s = seqs[rng() % seqs.size()];
      const int64_t keep = s.table.length() == 0 ? 0 : int64_t(rng() % uint64_t(s.table.length()));
      s.table.truncate(pool, keep);
      s.tokens.resize(size_t(keep));
    } else {  // end
      const size_t i = rng() % seqs.size();
      seqs[i].table.clear(pool);
      seqs.erase(seqs.begin() + long(i));
    }
    std::map<int32_t, int32_t> holders;
    for (const Sequence& s : seqs) {
      ASSERT_EQ(s.table.length(), int64_t(s.tokens.size()));
      for (int64_t p = 0; p < s.table.length(); ++p)
        ASSERT_EQ(rows[size_t(s.table.block_of(p) * block_size + p % block_size)], s.tokens[size_t(p)])
            << "operation " << op << ", position " << p;
      for (int32_t b : s.table.blocks()) ++holders[b];
    }
    int64_t used = 0;
    for (int32_t b = 0; b < blocks; ++b) {
      ASSERT_EQ(pool.references(b), holders.count(b) ? holders[b] : 0) << "block " << b << " after operation " << op;
      used += pool.references(b) > 0;
    }
    ASSERT_EQ(pool.free_blocks(), blocks - used);
  }
  for (Sequence& s : seqs) s.table.clear(pool);
  EXPECT_EQ(pool.free_blocks(), blocks);
  EXPECT_GT(exhausted, 0) << "the pool never filled: the test did not reach the exhaustion path";
}

// Decode attention through shuffled block tables equals attention over the
// same rows stored contiguously, for f32 and bf16 pools, GQA, a sliding window,
// and lengths inside and at the end of a block.
TEST(PagedAttention, DecodeThroughBlockTablesEqualsContiguousDecode) {
  const uint64_t seed = interlace::testing::fresh_seed();
  SCOPED_TRACE("INTERLACE_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t q_heads = 4, kv_heads = 2, D = 8, block_size = 16, pool_blocks = 40;
  const std::vector<int64_t> lengths = {1, 15, 16, 17, 100};
  for (core::DType dtype : {core::DType::kF32, core::DType::kBF16})
    for (int64_t window : {0, 5}) {
      SCOPED_TRACE(std::string(dtype == core::DType::kBF16 ? "bf16" : "f32") + " window " + std::to_string(window));
      AttentionShape s{.q_heads = q_heads, .kv_heads = kv_heads, .head_dim = D, .scale = 0.35f, .window = window,
                       .kv_dtype = dtype};
      const size_t elem = core::dtype_size(dtype), row = size_t(kv_heads * D) * elem;
      std::vector<uint8_t> k_pool(pool_blocks * block_size * row), v_pool(k_pool.size());
      std::vector<int32_t> order(pool_blocks);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<std::vector<uint8_t>> k_flat, v_flat;
      std::vector<std::vector<int32_t>> tables;
      size_t next = 0;
      for (int64_t len : lengths) {
        auto fk = interlace::testing::normal_vector(rng, size_t(len * kv_heads * D));
        auto fv = interlace::testing::normal_vector(rng, size_t(len * kv_heads * D));
        std::vector<uint8_t> kb(size_t(len) * row), vb(size_t(len) * row);
        for (size_t i = 0; i < fk.size(); ++i) {
          if (dtype == core::DType::kBF16) {
            const uint16_t a = core::float_to_bf16(fk[i]), b = core::float_to_bf16(fv[i]);
            std::memcpy(kb.data() + 2 * i, &a, 2);
            std::memcpy(vb.data() + 2 * i, &b, 2);
          } else {
            std::memcpy(kb.data() + 4 * i, &fk[i], 4);
            std::memcpy(vb.data() + 4 * i, &fv[i], 4);
          }
        }
        std::vector<int32_t> table;
        for (int64_t p = 0; p < len; p += block_size) table.push_back(order[next++]);
        for (int64_t p = 0; p < len; ++p) {
          const size_t at = (size_t(table[size_t(p / block_size)]) * block_size + size_t(p % block_size)) * row;
          std::memcpy(k_pool.data() + at, kb.data() + size_t(p) * row, row);
          std::memcpy(v_pool.data() + at, vb.data() + size_t(p) * row, row);
        }
        k_flat.push_back(std::move(kb));
        v_flat.push_back(std::move(vb));
        tables.push_back(std::move(table));
      }
      std::vector<KvView> flat;
      std::vector<PagedKvView> paged;
      for (size_t b = 0; b < lengths.size(); ++b) {
        flat.push_back({k_flat[b].data(), v_flat[b].data(), lengths[b]});
        paged.push_back({k_pool.data(), v_pool.data(), tables[b].data(), block_size, lengths[b]});
      }
      const auto q = interlace::testing::normal_vector(rng, lengths.size() * q_heads * D);
      std::vector<float> want(q.size()), got(q.size(), NAN);
      reference_backend().attention_decode(s, q.data(), flat, want.data());
      paged_attention_decode(s, q.data(), paged, got.data());
      EXPECT_EQ(got, want);
    }
}

}  // namespace
}  // namespace interlace::kernels
