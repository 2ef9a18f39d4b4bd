#include "interlace/transport/weight_sync.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "interlace/transport/crc32c.h"

namespace interlace::transport {

std::vector<WeightChunkMessage> chunk_weights(const std::string& payload, int64_t version, uint64_t weights_id,
                                              size_t chunk_bytes) {
  chunk_bytes = std::max<size_t>(chunk_bytes, 1);
  const uint32_t count = static_cast<uint32_t>(std::max<size_t>(1, (payload.size() + chunk_bytes - 1) / chunk_bytes));
  std::vector<WeightChunkMessage> chunks(count);
  for (uint32_t i = 0; i < count; ++i) {
    WeightChunkMessage& c = chunks[i];
    c.version = version;
    c.weights_id = weights_id;
    c.index = i;
    c.count = count;
    c.total_bytes = payload.size();
    c.offset = uint64_t{i} * chunk_bytes;
    c.data = payload.substr(c.offset, chunk_bytes);
    c.chunk_crc32c = crc32c(c.data);
  }
  uint32_t total_crc = 0;  // the whole's checksum from the chunks' (one pass over the bytes, not two)
  for (const WeightChunkMessage& c : chunks) total_crc = crc32c_combine(total_crc, c.chunk_crc32c, c.data.size());
  for (WeightChunkMessage& c : chunks) c.total_crc32c = total_crc;
  return chunks;
}

absl::Status WeightAssembler::add_frame(std::string_view frame, const FrameLimits& limits) {
  return read_weight_chunk(frame, limits,
                           [this](const WeightChunkFields& c, std::string_view data) { return add(c, data); });
}

absl::Status WeightAssembler::add(const WeightChunkFields& c, std::string_view data) {
  if (crc32c(data) != c.chunk_crc32c)
    return absl::DataLossError(absl::StrCat("weight chunk ", c.index, " of version ", c.version,
                                            ": checksum mismatch (corrupt in transit)"));
  if (count_ == 0) {
    if (c.count == 0 || c.total_bytes > (uint64_t{1} << 40))
      return absl::InvalidArgumentError(absl::StrCat("weight chunk: count ", c.count, ", total ", c.total_bytes, " bytes"));
    version_ = c.version;
    weights_id_ = c.weights_id;
    count_ = c.count;
    total_crc_ = c.total_crc32c;
    payload_.resize(c.total_bytes);  // every byte is written by some chunk before finish() succeeds
    placed_.assign(c.count, {});
  }
  if (c.weights_id != weights_id_ || c.count != count_ || c.total_bytes != payload_.size() ||
      c.total_crc32c != total_crc_)
    return absl::InvalidArgumentError(absl::StrCat("weight chunk ", c.index, " belongs to another publication (version ",
                                                   c.version, ", expected ", version_, ")"));
  if (c.index >= count_ || c.offset > payload_.size() || data.size() > payload_.size() - c.offset)
    return absl::InvalidArgumentError(absl::StrCat("weight chunk ", c.index, ": bytes [", c.offset, ", +", data.size(),
                                                   ") outside the ", payload_.size(), "-byte payload"));
  if (placed_[c.index].received) return absl::InvalidArgumentError(absl::StrCat("weight chunk ", c.index, " received twice"));
  std::memcpy(payload_.data() + c.offset, data.data(), data.size());
  placed_[c.index] = {true, c.offset, data.size(), c.chunk_crc32c};
  ++received_;
  return absl::OkStatus();
}

absl::StatusOr<std::string> WeightAssembler::finish() {
  if (!complete())
    return absl::UnavailableError(absl::StrCat("weights version ", version_, ": ", received_, " of ", count_,
                                               " chunks received"));
  // Every chunk's bytes were checked on arrival; what is left is that they
  // cover the payload exactly once, in order, and make up the sender's whole.
  std::vector<Placed> order = placed_;
  std::sort(order.begin(), order.end(), [](const Placed& a, const Placed& b) { return a.offset < b.offset; });
  uint64_t end = 0;
  uint32_t crc = 0;
  for (const Placed& p : order) {
    if (p.offset != end)
      return absl::DataLossError(absl::StrCat("weights version ", version_, ": the chunks leave bytes [",
                                              std::min(p.offset, end), ", ", std::max(p.offset, end),
                                              ") uncovered or covered twice"));
    crc = crc32c_combine(crc, p.crc, p.size);
    end += p.size;
  }
  if (end != payload_.size())
    return absl::DataLossError(absl::StrCat("weights version ", version_, ": the chunks cover ", end, " of ",
                                            payload_.size(), " bytes"));
  if (crc != total_crc_)
    return absl::DataLossError(absl::StrCat("weights version ", version_, ": payload checksum mismatch"));
  return std::move(payload_);
}

namespace {

// The bytes an NCCL offer brought, checked like an assembled payload.
absl::StatusOr<WeightsPayload> take_nccl_offer(const WeightChunkFields& offer, const NcclReceive& nccl) {
  if (!nccl)
    return absl::InvalidArgumentError(absl::StrCat("weights version ", offer.version,
                                                   ": the learner offered NCCL, which this request did not accept"));
  if (offer.index != 0 || offer.count != 1 || offer.offset != 0 || offer.total_bytes > (uint64_t{1} << 40))
    return absl::InvalidArgumentError(absl::StrCat("weights version ", offer.version, ": malformed NCCL offer (chunk ",
                                                   offer.index, " of ", offer.count, ", offset ", offer.offset, ", ",
                                                   offer.total_bytes, " bytes)"));
  auto bytes = nccl(offer);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() != offer.total_bytes)
    return absl::DataLossError(absl::StrCat("weights version ", offer.version, " by NCCL: ", bytes->size(),
                                            " bytes arrived, ", offer.total_bytes, " were offered"));
  if (crc32c(*bytes) != offer.total_crc32c)
    return absl::DataLossError(absl::StrCat("weights version ", offer.version, " by NCCL: payload checksum mismatch"));
  return WeightsPayload{offer.version, offer.weights_id, std::move(*bytes), true};
}

}  // namespace

absl::StatusOr<WeightsPayload> fetch_weights(zmq::socket_t& dealer, const WeightRequestMessage& request,
                                             std::chrono::milliseconds timeout, uint64_t* rejected_chunks,
                                             std::string* reuse, const NcclReceive& nccl) {
  zmq::message_t stale;
  while (dealer.recv(stale, zmq::recv_flags::dontwait)) {
  }
  const std::string frame = encode_weight_request(request);
  dealer.send(zmq::buffer(frame), zmq::send_flags::none);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  WeightAssembler assembler(reuse ? std::move(*reuse) : std::string());
  while (!assembler.complete()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return absl::DeadlineExceededError(absl::StrCat("weights fetch: no complete publication within ", timeout.count(),
                                                      " ms"));
    zmq::pollitem_t item{static_cast<void*>(dealer), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, left);
    zmq::message_t msg;
    if (!dealer.recv(msg, zmq::recv_flags::dontwait)) continue;
    std::optional<WeightChunkFields> offer, current;
    absl::Status s = read_weight_chunk(std::string_view(static_cast<const char*>(msg.data()), msg.size()), {},
                                       [&](const WeightChunkFields& c, std::string_view data) {
                                         if (request.only_if_newer && c.count == 0 && c.weights_id == request.have_weights_id) {
                                           current = c;
                                           return absl::OkStatus();
                                         }
                                         if (!c.by_nccl()) return assembler.add(c, data);
                                         offer = c;
                                         return absl::OkStatus();
                                       });
    if (s.ok() && current) return WeightsPayload{.version = current->version, .weights_id = current->weights_id, .up_to_date = true};
    if (s.ok() && offer) {
      auto payload = take_nccl_offer(*offer, request.accepts_nccl ? nccl : NcclReceive());
      if (!payload.ok() && rejected_chunks) ++*rejected_chunks;
      return payload;
    }
    if (!s.ok()) {
      if (rejected_chunks) ++*rejected_chunks;
      return s;
    }
  }
  auto bytes = assembler.finish();
  if (!bytes.ok()) return bytes.status();
  return WeightsPayload{assembler.version(), assembler.weights_id(), std::move(*bytes)};
}

}  // namespace interlace::transport
