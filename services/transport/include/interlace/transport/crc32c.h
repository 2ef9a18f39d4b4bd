// CRC-32C (Castagnoli), the checksum of weight chunks and spool records.
// Uses the SSE4.2 instruction when the build targets it, a table otherwise;
// both give the same values (RFC 3720 test vectors in the tests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace interlace::transport {

// Continues `crc` (0 to start) over `data`.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
inline uint32_t crc32c(std::string_view bytes, uint32_t crc = 0) { return crc32c(bytes.data(), bytes.size(), crc); }

// The CRC-32C of A followed by B from crc32c(A), crc32c(B) and B's length,
// without reading the bytes (zlib's crc32_combine, for this polynomial): a
// payload checked chunk by chunk gets its whole checksum for free.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t size_b);

}  // namespace interlace::transport
