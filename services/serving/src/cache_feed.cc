#include "interlace/serving/cache_feed.h"

namespace interlace::serving {

void CacheFeed::hello(uint64_t instance) {
  instance_ = instance;
  synced_ = false;
  wanted_ = true;
  last_ask_ = {};
}

CacheFeed::Decision CacheFeed::lose() {
  const bool was_synced = synced_;
  synced_ = false;
  if (!wanted_) last_ask_ = {};  // ask at once
  wanted_ = true;
  return {.clear = was_synced};
}

CacheFeed::Decision CacheFeed::on_message(uint64_t instance, uint64_t seq, bool snapshot) {
  if (snapshot) {
    // Complete as of SEQ, whoever asked for it; from another instance it means a restart we had not heard of.
    instance_ = instance;
    next_seq_ = seq + 1;
    synced_ = true;
    wanted_ = false;
    return {.clear = true, .apply = true};
  }
  if (instance != instance_) {
    instance_ = instance;
    return lose();
  }
  if (!synced_) return {};  // waiting for a snapshot; it will include this change
  if (seq < next_seq_) return {};  // already covered by the snapshot
  if (seq > next_seq_) {
    Decision d = lose();
    d.lost = int64_t(seq - next_seq_);
    return d;
  }
  ++next_seq_;
  return {.apply = true};
}

CacheFeed::Decision CacheFeed::on_malformed() { return lose(); }

bool CacheFeed::should_ask(Clock::time_point now, std::chrono::milliseconds retry) const {
  return wanted_ && (last_ask_ == Clock::time_point{} || now - last_ask_ >= retry);
}

}  // namespace interlace::serving
