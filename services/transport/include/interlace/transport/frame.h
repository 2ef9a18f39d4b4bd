// Reading Cap'n Proto frames we do not trust: a size limit before parsing,
// whole 8-byte words (else truncated), traversal and nesting limits while
// reading, and every kj exception turned into a Status naming the message
// type. Zero copy when the bytes are word-aligned (ZeroMQ's buffers usually
// are), one copy otherwise.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace interlace::transport {

struct FrameLimits {
  size_t max_bytes = size_t{64} << 20;            // larger frames are rejected before parsing
  uint64_t traversal_words = uint64_t{16} << 20;  // Cap'n Proto's amplification guard
  int nesting = 16;
};

// Calls read(root) with the frame's root as `Root`; returns what went wrong.
template <typename Root, typename Read>
absl::Status read_frame(std::string_view frame, const FrameLimits& limits, const char* what, Read&& read) {
  if (frame.size() > limits.max_bytes)
    return absl::InvalidArgumentError(
        absl::StrCat(what, " frame of ", frame.size(), " bytes is over the ", limits.max_bytes, "-byte limit"));
  if (frame.empty() || frame.size() % sizeof(capnp::word) != 0)
    return absl::InvalidArgumentError(absl::StrCat(what, " frame of ", frame.size(),
                                                   " bytes is not a whole number of 8-byte words (truncated?)"));
  kj::Array<capnp::word> copy;  // capnp::word cannot be copied, so not a std::vector (clang refuses one)
  const capnp::word* words = reinterpret_cast<const capnp::word*>(frame.data());
  if (reinterpret_cast<uintptr_t>(frame.data()) % alignof(capnp::word) != 0) {
    copy = kj::heapArray<capnp::word>(frame.size() / sizeof(capnp::word));
    std::memcpy(copy.begin(), frame.data(), frame.size());
    words = copy.begin();
  }
  capnp::ReaderOptions options;
  // What a reader may traverse is bounded by the frame itself (a few passes
  // over it), not only by the global limit: Cap'n Proto charges a list of
  // empty structs one word per element, so a 376-byte trajectory frame once
  // decoded into millions of turns (found by fuzz/trajectory_frame_fuzz), and
  // a task grant into 16M tasks (2 GiB).
  const uint64_t frame_words = frame.size() / sizeof(capnp::word);
  options.traversalLimitInWords = std::min<uint64_t>(limits.traversal_words, std::max<uint64_t>(1024, 4 * frame_words));
  options.nestingLimit = limits.nesting;
  kj::Maybe<kj::Exception> error = kj::runCatchingExceptions([&] {
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words, frame.size() / sizeof(capnp::word)), options);
    read(reader.getRoot<Root>());
  });
  KJ_IF_MAYBE(e, error) {
    return absl::InvalidArgumentError(absl::StrCat("malformed ", what, " frame: ", e->getDescription().cStr()));
  }
  return absl::OkStatus();
}

// The builder's message as one flat frame, written straight into the string
// (messageToFlatArray would build a word array first: one more copy).
inline std::string flat_frame(capnp::MessageBuilder& builder) {
  std::string out(capnp::computeSerializedSizeInWords(builder) * sizeof(capnp::word), '\0');
  kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(out.data()), out.size()));
  capnp::writeMessage(stream, builder);
  return out;
}

}  // namespace interlace::transport
