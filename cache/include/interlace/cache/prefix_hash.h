// Hashes of token prefixes, shared by the prefix cache (which announces the
// prefixes it can restore) and the gateway's routing index (which looks a
// prompt's prefixes up). The hash of tokens[0, n) chains one token at a
// time, so one pass over a prompt gives the hash of every prefix of it.
#pragma once

#include <cstdint>
#include <span>

namespace interlace::cache {

inline constexpr uint64_t kEmptyPrefixHash = 0x6a09e667f3bcc909ULL;

// The hash of a prefix one token longer: splitmix64 of the running hash and the token.
inline uint64_t extend_prefix_hash(uint64_t h, int32_t token) {
  uint64_t z = h ^ (uint64_t(uint32_t(token)) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline uint64_t prefix_hash(std::span<const int32_t> tokens, uint64_t h = kEmptyPrefixHash) {
  for (int32_t t : tokens) h = extend_prefix_hash(h, t);
  return h;
}

}  // namespace interlace::cache
