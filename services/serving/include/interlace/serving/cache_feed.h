// One serving worker's stream of cache events as a gateway follows it. PUB
// drops messages when a subscriber lags, and a subscriber that joins late
// missed what came before, so the gateway only trusts a worker's entries
// from a snapshot on: it asks for one when the worker says hello, when seq
// skips (messages lost) or the instance changes (the worker restarted), and
// again while none arrives. Until then the worker's entries are cleared and
// its changes ignored: routing misses that worker's prefixes for a moment
// rather than trusting an index that has holes.
#pragma once

#include <chrono>
#include <cstdint>

namespace interlace::serving {

class CacheFeed {
 public:
  using Clock = std::chrono::steady_clock;
  struct Decision {
    bool clear = false;  // drop the worker's entries first (before a snapshot's, or because the index is no longer whole)
    bool apply = false;  // then apply this message's entries
    int64_t lost = 0;    // change messages that never arrived
  };
  // The worker answered a hello (a connection, or a reconnection): a snapshot is wanted.
  void hello(uint64_t instance);
  Decision on_message(uint64_t instance, uint64_t seq, bool snapshot);
  // A message that did not decode: its changes are unknown, so the index is not whole.
  Decision on_malformed();
  // Whether to ask for a snapshot now: one is wanted and the last ask is older than RETRY (or there was none).
  bool should_ask(Clock::time_point now, std::chrono::milliseconds retry) const;
  void asked(Clock::time_point now) { last_ask_ = now; }
  bool synced() const { return synced_; }

 private:
  Decision lose();
  uint64_t instance_ = 0, next_seq_ = 0;
  bool synced_ = false, wanted_ = false;
  Clock::time_point last_ask_{};
};

}  // namespace interlace::serving
