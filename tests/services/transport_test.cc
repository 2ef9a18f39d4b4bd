// The transport's building blocks: CRC-32C against published vectors, the
// spool's durability and torn-tail recovery, the small messages' codecs on
// good and bad frames, and weight sync over real ZeroMQ sockets with a
// corrupted chunk and a missing chunk, and NCCL offers (the bytes NCCL brings
// are stood in for here; tests/services/nccl_weights_test.cc moves real ones on
// GPUs) checked like chunks.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "interlace/transport/crc32c.h"
#include "interlace/transport/messages.h"
#include "interlace/transport/spool.h"
#include "interlace/transport/weight_sync.h"

namespace interlace::transport {
namespace {

namespace fs = std::filesystem;

TEST(Crc32c, PublishedVectors) {
  // RFC 3720 B.4 and the common "123456789" check value.
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string inc;
  for (int i = 0; i < 32; ++i) inc.push_back(static_cast<char>(i));
  EXPECT_EQ(crc32c(inc), 0x46DD794Eu);
  // Continuation equals one pass, at every split (word path and byte tail).
  std::string s;
  std::mt19937_64 rng(std::random_device{}());
  for (int i = 0; i < 1000; ++i) s.push_back(static_cast<char>(rng()));
  for (size_t cut : {0, 1, 7, 8, 9, 500, 999, 1000})
    EXPECT_EQ(crc32c(std::string_view(s).substr(cut), crc32c(std::string_view(s).substr(0, cut))), crc32c(s)) << cut;
}

// Bit at a time, straight from the definition (reflected polynomial 0x82F63B78).
uint32_t crc32c_bitwise(std::string_view bytes, uint32_t crc = 0) {
  uint32_t c = ~crc;
  for (unsigned char byte : bytes) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

TEST(Crc32c, LargeBuffersMatchTheBitwiseDefinition) {
  // Buffers from 16 KiB up run three interleaved streams joined by the combine
  // rule: sizes around that threshold, a tail of every length mod 24 (what the
  // streams leave to the one-stream and byte loops), and random sizes.
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::string s((1 << 20) + 23, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  std::vector<size_t> sizes = {16383, 16384, 16385, s.size()};
  for (size_t tail = 0; tail < 24; ++tail) sizes.push_back(24 * 4000 + tail);
  for (int i = 0; i < 24; ++i) sizes.push_back(16384 + rng() % 200000);
  for (size_t n : sizes) {
    const std::string_view v = std::string_view(s).substr(s.size() - n);  // odd start addresses too
    const uint32_t start = static_cast<uint32_t>(rng());                   // a continued CRC
    EXPECT_EQ(crc32c(v), crc32c_bitwise(v)) << n;
    EXPECT_EQ(crc32c(v, start), crc32c_bitwise(v, start)) << n;
  }
}

TEST(Crc32c, CombineEqualsOnePass) {
  std::mt19937_64 rng(std::random_device{}());
  for (int trial = 0; trial < 50; ++trial) {
    std::string s(rng() % 5000, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    const size_t cut = s.empty() ? 0 : rng() % (s.size() + 1);
    const std::string_view a = std::string_view(s).substr(0, cut), b = std::string_view(s).substr(cut);
    EXPECT_EQ(crc32c_combine(crc32c(a), crc32c(b), b.size()), crc32c(s)) << s.size() << " split at " << cut;
  }
  // Combining is order-sensitive: the same halves swapped give another value.
  EXPECT_NE(crc32c_combine(crc32c("5678"), crc32c("1234"), 4), crc32c("12345678"));
}

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("interlace-transport-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

TEST(Spool, RecordsSurviveReopenAndATornTailIsSetAside) {
  const std::string path = temp_path("spool.bin");
  fs::remove(path);
  fs::remove(path + ".damaged");
  std::vector<std::string> records = {"first", std::string(10000, 'x'), "z", "last record"};
  {
    Spool::Recovered r;
    auto s = Spool::open(path, &r);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_TRUE(r.records.empty());
    for (const auto& rec : records) ASSERT_TRUE(s->append(rec).ok());
    EXPECT_FALSE(s->append("").ok()) << "an empty record cannot be told from zeroed disk";
    ASSERT_TRUE(s->sync().ok());
  }
  const uintmax_t good_size = fs::file_size(path);
  {  // A crash mid-append leaves half a record.
    std::ofstream out(path, std::ios::app | std::ios::binary);
    const uint32_t header[2] = {100, 0};
    out.write(reinterpret_cast<const char*>(header), 8);
    out << "only part of it";
  }
  Spool::Recovered r;
  auto s = Spool::open(path, &r);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(r.records, records);
  EXPECT_EQ(r.damaged_bytes, 8u + 15u);
  EXPECT_EQ(fs::file_size(path), good_size);
  EXPECT_EQ(fs::file_size(path + ".damaged"), 8u + 15u);  // moved aside, not deleted
  ASSERT_TRUE(s->append("after the crash").ok());
  ASSERT_TRUE(s->sync().ok());
}

// One flipped byte used to drop every later good record; a corrupted length
// field was allocated (4 GiB) before it was checked. Now only the damaged
// records go (moved aside to PATH.damaged), whatever their position.
TEST(Spool, DamageInTheMiddleLosesOnlyTheDamagedRecords) {
  const std::string path = temp_path("spool-damage.bin");
  fs::remove(path);
  fs::remove(path + ".damaged");
  std::mt19937 rng(std::random_device{}());
  std::vector<std::string> records;
  std::vector<uint64_t> offsets;
  {
    auto s = Spool::open(path, nullptr);
    ASSERT_TRUE(s.ok());
    for (int i = 0; i < 40; ++i) {
      std::string rec(1 + rng() % 3000, '\0');
      for (char& c : rec) c = static_cast<char>(rng());
      offsets.push_back(s->bytes());
      ASSERT_TRUE(s->append(rec).ok());
      records.push_back(rec);
    }
    ASSERT_TRUE(s->sync().ok());
  }
  const size_t flipped = 5 + rng() % 10, huge_length = 20 + rng() % 10;
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offsets[flipped] + 8 + rng() % records[flipped].size()));
    f.put('\x5a' ^ static_cast<char>(f.peek() == '\x5a'));  // a byte that differs from what was there
    f.seekp(static_cast<std::streamoff>(offsets[huge_length]));
    const uint32_t length = 0xfffffff0u;
    f.write(reinterpret_cast<const char*>(&length), 4);
  }
  Spool::Recovered r;
  ASSERT_TRUE(Spool::open(path, &r).ok());
  std::vector<std::string> expected;
  for (size_t i = 0; i < records.size(); ++i)
    if (i != flipped && i != huge_length) expected.push_back(records[i]);
  EXPECT_EQ(r.records.size(), expected.size());
  EXPECT_TRUE(r.records == expected);
  EXPECT_EQ(r.damaged_regions, 2u);
  EXPECT_EQ(r.damaged_bytes, 16 + records[flipped].size() + records[huge_length].size());
  EXPECT_EQ(fs::file_size(path + ".damaged"), r.damaged_bytes);
  // The rewritten spool reads back the same, with nothing damaged left.
  Spool::Recovered again;
  ASSERT_TRUE(Spool::open(path, &again).ok());
  EXPECT_TRUE(again.records == expected);
  EXPECT_EQ(again.damaged_bytes, 0u);
}

// A full disk (here: a file size limit, the same EFBIG/ENOSPC path) in the
// middle of an append: the spool is cut back to its last sync, so nothing
// unsynced survives as a fragment, and the records synced before are whole.
TEST(Spool, AWriteErrorCutsBackToTheLastSync) {
  const std::string path = temp_path("spool-full.bin");
  fs::remove(path);
  fs::remove(path + ".damaged");
  auto s = Spool::open(path, nullptr);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(s->append(std::string(3000, 'a')).ok());
  ASSERT_TRUE(s->sync().ok());
  const uint64_t synced = s->synced_bytes();
  ASSERT_TRUE(s->append(std::string(3000, 'b')).ok());  // not synced yet
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = synced + 8000;  // the next record fits only in part
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  const absl::Status full = s->append(std::string(5000, 'c'));
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_FALSE(full.ok());
  EXPECT_NE(std::string(full.message()).find("cut back to its last sync"), std::string::npos) << full;
  EXPECT_EQ(fs::file_size(path), synced);
  EXPECT_EQ(s->bytes(), synced);
  // It goes on after the error; a reopen finds exactly what was synced.
  ASSERT_TRUE(s->append("d").ok());
  ASSERT_TRUE(s->sync().ok());
  Spool::Recovered r;
  ASSERT_TRUE(Spool::open(path, &r).ok());
  EXPECT_EQ(r.records, (std::vector<std::string>{std::string(3000, 'a'), "d"}));
  EXPECT_EQ(r.damaged_bytes, 0u);
}

// Compaction: the spool is replaced by exactly the records given, and goes
// on taking appends after them.
TEST(Spool, RewriteKeepsExactlyTheGivenRecords) {
  const std::string path = temp_path("spool-rewrite.bin");
  fs::remove(path);
  auto s = Spool::open(path, nullptr);
  ASSERT_TRUE(s.ok());
  for (const char* r : {"trained-1", "untrained", "trained-2"}) ASSERT_TRUE(s->append(r).ok());
  ASSERT_TRUE(s->sync().ok());
  auto rewritten = Spool::rewrite(path, {"untrained"});
  ASSERT_TRUE(rewritten.ok()) << rewritten.status();
  EXPECT_EQ(rewritten->synced_bytes(), 8u + 9u);
  ASSERT_TRUE(rewritten->append("new").ok());
  ASSERT_TRUE(rewritten->sync().ok());
  Spool::Recovered r;
  ASSERT_TRUE(Spool::open(path, &r).ok());
  EXPECT_EQ(r.records, (std::vector<std::string>{"untrained", "new"}));
  EXPECT_FALSE(Spool::rewrite(path, {""}).ok()) << "an empty record must not be written";
}

// The injected full disk the learner-level test uses behaves as the real one
// above: half a record written, then cut back to the last sync.
TEST(Spool, InjectedWriteFailuresCutBackLikeAFullDisk) {
  const std::string path = temp_path("spool-inject.bin");
  fs::remove(path);
  auto s = Spool::open(path, nullptr);
  ASSERT_TRUE(s.ok());
  s->inject_write_failures(2);
  ASSERT_TRUE(s->append("one").ok());
  ASSERT_TRUE(s->sync().ok());
  const absl::Status failed = s->append("two");
  EXPECT_EQ(failed.code(), absl::StatusCode::kDataLoss) << failed;
  EXPECT_EQ(fs::file_size(path), s->synced_bytes());
  ASSERT_TRUE(s->append("three").ok());
  ASSERT_TRUE(s->sync().ok());
  Spool::Recovered r;
  ASSERT_TRUE(Spool::open(path, &r).ok());
  EXPECT_EQ(r.records, (std::vector<std::string>{"one", "three"}));
  EXPECT_EQ(r.damaged_bytes, 0u);
}

TEST(Messages, RoundTripAndRejectBadFrames) {
  TaskGrantMessage g;
  g.weights_version = 7;
  g.weights_id = 0xabcdef;
  TaskMessage t;
  t.job = "j";
  t.env = "calculator";
  t.group = (int64_t{3} << 32) + 5;
  t.task_seed = 99;
  t.group_size = 8;
  t.attempt = 2;
  t.weights_version = 6;
  t.temperature = 0.7f;
  t.top_k = 5;
  t.max_turns = 3;
  g.tasks = {t, t};
  auto back = decode_task_grant(encode_task_grant(g));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->tasks.size(), 2u);
  EXPECT_EQ(back->tasks[1].group, t.group);
  EXPECT_EQ(back->tasks[1].temperature, 0.7f);
  EXPECT_EQ(back->tasks[1].max_turns, 3u);
  EXPECT_EQ(back->weights_id, 0xabcdefu);

  HeartbeatMessage h;
  h.service = "worker-3";
  h.incarnation = 12345;
  h.want_tasks = 4;
  h.cache_hit_tokens = 77;
  auto hb = decode_heartbeat(encode_heartbeat(h));
  ASSERT_TRUE(hb.ok());
  EXPECT_EQ(hb->incarnation, 12345u);
  EXPECT_EQ(hb->cache_hit_tokens, 77u);

  AckMessage a{"job", 4, 2, 1, false, "stale"};
  auto ack = decode_ack(encode_ack(a));
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->reason, "stale");
  EXPECT_FALSE(ack->accepted);

  // Garbage, truncation, oversize, and checks beyond the schema.
  EXPECT_FALSE(decode_heartbeat("garbage!").ok());
  const std::string frame = encode_heartbeat(h);
  EXPECT_NE(std::string(decode_heartbeat(frame.substr(0, frame.size() - 3)).status().message()).find("8-byte words"),
            std::string::npos);
  EXPECT_NE(std::string(decode_heartbeat(frame, {.max_bytes = 16}).status().message()).find("limit"),
            std::string::npos);
  EXPECT_FALSE(decode_heartbeat(encode_heartbeat(HeartbeatMessage{})).ok());  // no service name
  t.group_size = 0;
  g.tasks = {t};
  EXPECT_NE(std::string(decode_task_grant(encode_task_grant(g)).status().message()).find("group size"),
            std::string::npos);
  std::mt19937_64 rng(std::random_device{}());
  int rejected = 0;
  for (int i = 0; i < 500; ++i) {
    std::string f = frame;
    for (int k = 0; k < 4; ++k) f[rng() % f.size()] = static_cast<char>(rng());
    rejected += !decode_heartbeat(f).ok();  // must not crash either way
  }
  std::printf("random corruption: %d of 500 heartbeat frames rejected\n", rejected);
}

std::string random_payload(size_t n) {
  std::mt19937_64 rng(std::random_device{}());
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

TEST(WeightSync, AssemblerChecksEveryChunkAndTheWhole) {
  const std::string payload = random_payload(10000);
  auto chunks = chunk_weights(payload, 3, 42, 1024);
  ASSERT_EQ(chunks.size(), 10u);
  {
    WeightAssembler a;
    for (auto it = chunks.rbegin(); it != chunks.rend(); ++it) ASSERT_TRUE(a.add(*it).ok());  // any order
    auto out = a.finish();
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(*out, payload);
  }
  {  // A corrupt byte: that chunk fails its checksum; it starts nothing, so the
     // next publication's chunks (another id) assemble.
    WeightAssembler a;
    auto bad = chunks[4];
    bad.data[17] ^= 1;
    EXPECT_EQ(a.add(bad).code(), absl::StatusCode::kDataLoss);
    const std::string next_payload = random_payload(3000);
    for (const auto& c : chunk_weights(next_payload, 4, 43, 1024)) ASSERT_TRUE(a.add(c).ok());
    EXPECT_EQ(*a.finish(), next_payload);
  }
  {  // Megabyte chunks of odd sizes (three interleaved CRC streams each): a bad
     // byte near the end of one is caught, a good resend of it completes the whole.
    const std::string big = random_payload((3 << 20) + 5);
    auto big_chunks = chunk_weights(big, 5, 44, (1 << 20) + 13);
    ASSERT_EQ(big_chunks.size(), 3u);
    WeightAssembler a;
    auto bad = big_chunks[1];
    bad.data[bad.data.size() - 3] ^= 0x40;
    EXPECT_EQ(a.add(bad).code(), absl::StatusCode::kDataLoss);
    for (const auto& c : big_chunks) ASSERT_TRUE(a.add(c).ok());
    EXPECT_EQ(*a.finish(), big);
  }
  {  // A chunk of another publication, out of range, twice.
    WeightAssembler a;
    ASSERT_TRUE(a.add(chunks[0]).ok());
    auto other = chunk_weights(payload, 4, 43, 1024)[1];
    EXPECT_FALSE(a.add(other).ok());
    auto far = chunks[1];
    far.offset = 9990;
    EXPECT_FALSE(a.add(far).ok());
    EXPECT_FALSE(a.add(chunks[0]).ok());
    EXPECT_FALSE(a.finish().ok());  // incomplete
  }
  {  // Chunks that each check out but overlap (one placed 512 bytes early) and so
     // leave a gap: the whole is refused, not assembled with stale bytes.
    WeightAssembler a;
    for (auto c : chunks) {
      if (c.index == 5) c.offset -= 512;
      ASSERT_TRUE(a.add(c).ok());
    }
    auto out = a.finish();
    EXPECT_EQ(out.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(out.status().message().find("uncovered or covered twice"), std::string_view::npos) << out.status();
  }
  {  // A frame read in place (add_frame) assembles the same bytes; a garbled frame is refused.
    WeightAssembler a;
    for (const auto& c : chunks) ASSERT_TRUE(a.add_frame(encode_weight_chunk(c)).ok());
    EXPECT_EQ(*a.finish(), payload);
    WeightAssembler b;
    EXPECT_FALSE(b.add_frame(std::string(64, '\x07')).ok());
  }
  {  // Consistent chunks whose whole payload does not match the total checksum.
    WeightAssembler a;
    for (auto c : chunks) {
      c.total_crc32c ^= 1;
      ASSERT_TRUE(a.add(c).ok());
    }
    EXPECT_EQ(a.finish().status().code(), absl::StatusCode::kDataLoss);
  }
}

// A learner stand-in on a real ROUTER socket: answers the first request with a
// corrupted chunk, the second with a chunk missing, the third correctly.
// A learner's weights port on loopback, and a worker's socket to it.
zmq::socket_t bound_router(zmq::context_t& ctx) {
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  return router;
}
zmq::socket_t connected_dealer(zmq::context_t& ctx, const std::string& endpoint) {
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);
  return dealer;
}

TEST(WeightSync, CorruptAndPartialUpdatesAreRejectedThenRefetched) {
  zmq::context_t ctx;
  zmq::socket_t router = bound_router(ctx);
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  const std::string payload = random_payload(3 << 20);
  const auto chunks = chunk_weights(payload, 9, 777, 256 << 10);
  std::thread server([&] {
    for (int request = 0; request < 3; ++request) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(router, std::back_inserter(parts))) return;
      for (size_t i = 0; i < chunks.size(); ++i) {
        WeightChunkMessage c = chunks[i];
        if (request == 0 && i == 5) c.data[1000] ^= 0x40;
        if (request == 1 && i == 7) continue;
        const std::string f = encode_weight_chunk(c);
        router.send(zmq::buffer(parts[0].data(), parts[0].size()), zmq::send_flags::sndmore);
        router.send(zmq::buffer(f));
      }
    }
  });
  zmq::socket_t dealer = connected_dealer(ctx, endpoint);
  uint64_t rejected = 0;
  auto first = fetch_weights(dealer, {"w", 0}, std::chrono::seconds(10), &rejected);
  EXPECT_EQ(first.status().code(), absl::StatusCode::kDataLoss) << first.status();
  EXPECT_EQ(rejected, 1u);
  // Let the rest of the first answer arrive: the next fetch drains it first
  // (chunks of the same publication would otherwise legitimately fill the gap).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto second = fetch_weights(dealer, {"w", 0}, std::chrono::milliseconds(1500), &rejected);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kDeadlineExceeded) << second.status();
  auto third = fetch_weights(dealer, {"w", 0}, std::chrono::seconds(10), &rejected);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->bytes, payload);
  EXPECT_EQ(third->version, 9);
  EXPECT_EQ(third->weights_id, 777u);
  server.join();
}

// The learner answers a request that accepts NCCL with one offer; whatever the
// NCCL receiver hands back is checked against the offer before it is used.
TEST(WeightSync, NcclOffersAreCheckedLikeChunks) {
  zmq::context_t ctx;
  zmq::socket_t router = bound_router(ctx);
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  const std::string payload = random_payload((1 << 20) + 13);
  const auto chunks = chunk_weights(payload, 4, 4242, 256 << 10);
  constexpr int kRequests = 6;
  std::vector<WeightRequestMessage> seen;
  std::thread server([&] {
    for (int request = 0; request < kRequests; ++request) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(router, std::back_inserter(parts))) return;
      auto req = decode_weight_request(std::string_view(static_cast<const char*>(parts[1].data()), parts[1].size()));
      ASSERT_TRUE(req.ok()) << req.status();
      seen.push_back(*req);
      WeightChunkMessage offer;
      static_cast<WeightChunkFields&>(offer) = chunks[0];
      offer.count = 1;
      offer.total_bytes = payload.size();
      offer.chunk_crc32c = offer.total_crc32c;
      offer.nccl_session = 77;
      if (request == 0) offer.nccl_unique_id = std::string(128, 'u');
      if (request == 4) offer.count = 2;  // not the shape of an offer
      const std::string f = encode_weight_chunk(offer);
      router.send(zmq::buffer(parts[0].data(), parts[0].size()), zmq::send_flags::sndmore);
      router.send(zmq::buffer(f));
    }
  });
  zmq::socket_t dealer = connected_dealer(ctx, endpoint);
  std::vector<WeightChunkFields> offers;
  std::string handed_back = payload;
  absl::Status receiver_status;
  NcclReceive receive = [&](const WeightChunkFields& offer) -> absl::StatusOr<std::string> {
    offers.push_back(offer);
    if (!receiver_status.ok()) return receiver_status;
    return handed_back;
  };
  const WeightRequestMessage accepts{"w", 3, true, 77};
  uint64_t rejected = 0;
  // 0: the bytes arrive whole.
  auto ok = fetch_weights(dealer, accepts, std::chrono::seconds(10), &rejected, nullptr, receive);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->by_nccl);
  EXPECT_EQ(ok->bytes, payload);
  EXPECT_EQ(ok->version, 4);
  EXPECT_EQ(ok->weights_id, 4242u);
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_EQ(offers[0].nccl_session, 77u);
  EXPECT_EQ(offers[0].nccl_unique_id, std::string(128, 'u'));
  // 1: one bit flipped in transit.
  handed_back[payload.size() / 2] ^= 0x08;
  auto flipped = fetch_weights(dealer, accepts, std::chrono::seconds(10), &rejected, nullptr, receive);
  EXPECT_EQ(flipped.status().code(), absl::StatusCode::kDataLoss) << flipped.status();
  EXPECT_NE(flipped.status().message().find("checksum"), std::string::npos) << flipped.status();
  EXPECT_TRUE(offers[1].nccl_unique_id.empty());  // the group the worker holds
  // 2: a byte short.
  handed_back = payload.substr(1);
  auto short_by_one = fetch_weights(dealer, accepts, std::chrono::seconds(10), &rejected, nullptr, receive);
  EXPECT_EQ(short_by_one.status().code(), absl::StatusCode::kDataLoss) << short_by_one.status();
  // 3: NCCL itself failed: its error is the fetch's.
  receiver_status = absl::DeadlineExceededError("peer did not join");
  auto failed = fetch_weights(dealer, accepts, std::chrono::seconds(10), &rejected, nullptr, receive);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDeadlineExceeded) << failed.status();
  // 4: an offer of two chunks is refused before NCCL is touched.
  receiver_status = absl::OkStatus();
  handed_back = payload;
  const size_t offers_before = offers.size();
  auto malformed = fetch_weights(dealer, accepts, std::chrono::seconds(10), &rejected, nullptr, receive);
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument) << malformed.status();
  EXPECT_EQ(offers.size(), offers_before);
  // 5: a request that did not accept NCCL refuses an offer.
  auto unasked = fetch_weights(dealer, {"w", 3}, std::chrono::seconds(10), &rejected, nullptr, receive);
  EXPECT_EQ(unasked.status().code(), absl::StatusCode::kInvalidArgument) << unasked.status();
  EXPECT_EQ(offers.size(), offers_before);
  EXPECT_EQ(rejected, 5u);
  server.join();
  ASSERT_EQ(seen.size(), size_t{kRequests});
  EXPECT_TRUE(seen[0].accepts_nccl);
  EXPECT_EQ(seen[0].nccl_session, 77u);
  EXPECT_EQ(seen[0].have_weights_id, 3u);
  EXPECT_FALSE(seen[5].accepts_nccl);
}

}  // namespace
}  // namespace interlace::transport
