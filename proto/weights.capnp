# Weights published by the learner, in checksummed chunks.
@0x8bfb8e2bc8598217;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("interlace::proto");

struct WeightChunk {
  version @0 :Int64;        # the weights version this chunk belongs to
  index @1 :UInt32;         # chunk number, 0-based
  count @2 :UInt32;         # chunks in this version
  totalBytes @3 :UInt64;    # bytes of the whole (safetensors) payload
  offset @4 :UInt64;        # where this chunk's bytes go
  data @5 :Data;
  chunkCrc32c @6 :UInt32;   # of data
  totalCrc32c @7 :UInt32;   # of the whole payload: checked before a swap
  weightsId @8 :UInt64;     # the publication (see TaskGrant.weightsId)
  # Set when the learner answers a request that accepts NCCL: this one message
  # stands for the whole payload (index 0, count 1, offset 0, no data,
  # chunkCrc32c = totalCrc32c) and the bytes come by an NCCL broadcast from the
  # learner (rank 0) to this worker (rank 1) in the group named here. The
  # worker checks them against totalCrc32c as it checks chunks.
  nccl @9 :NcclTransfer;
}

struct NcclTransfer {
  session @0 :UInt64;   # names the learner-worker group (never 0)
  uniqueId @1 :Data;    # ncclUniqueId of a new group to join; empty: reuse the group of `session`
}

# A worker asks the learner's weights port for the current publication; the
# answer is every chunk of it, one message each. The payload is a safetensors
# file's bytes (fp32 tensors under their Hugging Face names).
struct WeightRequest {
  worker @0 :Text;           # informational: the learner names a peer by its CURVE key
  haveWeightsId @1 :UInt64;  # what the worker runs now (0: nothing)
  acceptsNccl @2 :Bool;      # the worker can take the bytes by NCCL (see WeightChunk.nccl)
  ncclSession @3 :UInt64;    # the NCCL group it still holds with the learner (0: none)
  onlyIfNewer @4 :Bool;      # a follower polling (a serving worker's --follow): when haveWeightsId is the
                             # learner's publication, the answer is one WeightChunk with count 0 and no data
}
