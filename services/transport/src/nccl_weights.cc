#include "interlace/transport/nccl_weights.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"

namespace interlace::transport::nccl {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status cuda_status(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

absl::Status nccl_status(ncclResult_t r, ncclComm_t comm, const std::string& what) {
  if (r == ncclSuccess) return absl::OkStatus();
  std::string detail = comm ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  return absl::UnavailableError(absl::StrCat(what, ": ", ncclGetErrorString(r), detail.empty() ? "" : " (", detail,
                                             detail.empty() ? "" : ")"));
}

// Polls a nonblocking group until its pending call leaves ncclInProgress.
ncclResult_t settle(ncclComm_t comm, ncclResult_t r, Clock::time_point deadline, bool* timed_out) {
  while (r == ncclInProgress && comm) {
    if (Clock::now() > deadline) {
      *timed_out = true;
      return r;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) return ncclInternalError;
  }
  return r;
}

// A device allocation that grows as needed.
struct DeviceBytes {
  void* ptr = nullptr;
  size_t size = 0;
  ~DeviceBytes() {
    if (ptr) cudaFree(ptr);
  }
  absl::Status reserve(size_t n) {
    if (n <= size) return absl::OkStatus();
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    size = 0;
    if (absl::Status s = cuda_status(cudaMalloc(&ptr, n), absl::StrCat("cudaMalloc of ", n, " bytes")); !s.ok())
      return s;
    size = n;
    return absl::OkStatus();
  }
};

}  // namespace

bool built_with_nccl() { return true; }

absl::StatusOr<int> device_count() {
  int n = 0;
  if (cudaError_t e = cudaGetDeviceCount(&n); e != cudaSuccess)
    return absl::UnavailableError(absl::StrCat("no usable CUDA device (cudaGetDeviceCount: ", cudaGetErrorString(e), ")"));
  if (n == 0) return absl::UnavailableError("no CUDA device visible");
  return n;
}

struct NcclPair::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0, rank = 0;
  bool usable = false;

  void abort() {
    if (comm) ncclCommAbort(comm);
    comm = nullptr;
    usable = false;
  }
  ~State() {
    abort();
    if (stream) {
      cudaSetDevice(device);
      cudaStreamDestroy(stream);
    }
  }
};

NcclPair::NcclPair(std::unique_ptr<State> state) : s_(std::move(state)) {}
NcclPair::~NcclPair() = default;
bool NcclPair::usable() const { return s_->usable; }

absl::StatusOr<std::string> NcclPair::new_unique_id() {
  ncclUniqueId id;
  if (absl::Status s = nccl_status(ncclGetUniqueId(&id), nullptr, "ncclGetUniqueId"); !s.ok()) return s;
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<NcclPair>> NcclPair::join(std::string_view unique_id, int rank, int device,
                                                          std::chrono::milliseconds timeout) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal))
    return absl::InvalidArgumentError(absl::StrCat("NCCL unique id of ", unique_id.size(), " bytes (expected ",
                                                   sizeof(id.internal), ")"));
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  auto st = std::make_unique<State>();
  st->device = device;
  st->rank = rank;
  if (absl::Status s = cuda_status(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")")); !s.ok())
    return s;
  if (absl::Status s = cuda_status(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking),
                                   absl::StrCat("cudaStreamCreate on device ", device));
      !s.ok())
    return s;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // returns at once; settle() polls with a deadline
  bool timed_out = false;
  ncclResult_t r = ncclCommInitRankConfig(&st->comm, 2, id, rank, &config);
  r = settle(st->comm, r, Clock::now() + timeout, &timed_out);
  if (timed_out)
    return absl::DeadlineExceededError(absl::StrCat("NCCL group (rank ", rank, " on device ", device,
                                                    "): the peer did not join within ", timeout.count(), " ms"));
  if (absl::Status s = nccl_status(r, st->comm, absl::StrCat("ncclCommInitRank (rank ", rank, ", device ", device, ")"));
      !s.ok())
    return s;
  st->usable = true;
  return std::unique_ptr<NcclPair>(new NcclPair(std::move(st)));
}

absl::Status NcclPair::broadcast(void* device_bytes, size_t n, std::chrono::milliseconds timeout) {
  if (!s_->usable) return absl::FailedPreconditionError("NCCL group already failed");
  const auto deadline = Clock::now() + timeout;
  const std::string what = absl::StrCat("NCCL broadcast of ", n, " bytes (rank ", s_->rank, ")");
  auto fail = [&](absl::Status s) {
    s_->abort();  // stops a kernel still waiting on the peer
    return s;
  };
  if (absl::Status s = cuda_status(cudaSetDevice(s_->device), absl::StrCat("cudaSetDevice(", s_->device, ")"));
      !s.ok())
    return fail(s);
  bool timed_out = false;
  ncclResult_t r = ncclBroadcast(device_bytes, device_bytes, n, ncclUint8, 0, s_->comm, s_->stream);
  r = settle(s_->comm, r, deadline, &timed_out);
  if (timed_out) return fail(absl::DeadlineExceededError(absl::StrCat(what, ": not enqueued in time")));
  if (absl::Status s = nccl_status(r, s_->comm, what); !s.ok()) return fail(s);
  // The transfer runs on the stream; it ends when the stream is idle, or the
  // group reports an error (the peer aborted), or the deadline passes.
  for (;;) {
    cudaError_t q = cudaStreamQuery(s_->stream);
    if (q == cudaSuccess) return absl::OkStatus();
    if (q != cudaErrorNotReady) return fail(cuda_status(q, what));
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(s_->comm, &async);
    if (async != ncclSuccess && async != ncclInProgress) return fail(nccl_status(async, s_->comm, what));
    if (Clock::now() > deadline)
      return fail(absl::DeadlineExceededError(absl::StrCat(what, ": not done within ", timeout.count(), " ms")));
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// ---------------------------------------------------------------- sender

namespace {

struct Publication {
  int64_t version = 0;
  uint64_t weights_id = 0;
  uint32_t total_crc32c = 0;
  std::string bytes;
};

struct SendJob {
  std::string worker;
  uint64_t session = 0;
  std::string unique_id;  // empty: the worker's existing group
  std::shared_ptr<const Publication> publication;
  // The worker gives up on the offer after its own timeout: a job still queued
  // by then (the thread was busy with other workers) is not started.
  Clock::time_point expires;
};

}  // namespace

struct WeightSender::State {
  int device = 0;
  std::chrono::milliseconds timeout{0};

  mutable std::mutex mu;
  std::shared_ptr<const Publication> current;
  std::mt19937_64 rng{std::random_device{}()};
  std::condition_variable wake;
  std::deque<SendJob> jobs;
  std::map<std::string, uint64_t> live;  // worker -> session of a group that works
  Counts counts;
  bool stop = false;

  // Sender thread only.
  std::map<std::string, std::pair<uint64_t, std::unique_ptr<NcclPair>>> groups;
  DeviceBytes buffer;
  uint64_t buffer_weights_id = 0;
  cudaStream_t upload = nullptr;
  std::thread thread;

  ~State() {
    if (upload) cudaStreamDestroy(upload);
  }

  absl::Status send(const SendJob& job) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(job.expires - Clock::now());
    if (left.count() <= 0)
      return absl::DeadlineExceededError(absl::StrCat("the offer to ", job.worker, " expired before its turn"));
    auto& [session, pair] = groups[job.worker];
    if (!job.unique_id.empty()) {
      pair.reset();
      auto joined = NcclPair::join(job.unique_id, 0, device, left);
      if (!joined.ok()) return joined.status();
      pair = std::move(*joined);
      session = job.session;
    } else if (!pair || session != job.session || !pair->usable()) {
      return absl::FailedPreconditionError(absl::StrCat("no NCCL group ", job.session, " with ", job.worker));
    }
    const Publication& p = *job.publication;
    if (buffer_weights_id != p.weights_id) {
      buffer_weights_id = 0;
      if (absl::Status s = cuda_status(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")")); !s.ok())
        return s;
      if (absl::Status s = buffer.reserve(p.bytes.size()); !s.ok()) return s;
      if (!upload) {
        if (absl::Status s = cuda_status(cudaStreamCreateWithFlags(&upload, cudaStreamNonBlocking), "cudaStreamCreate");
            !s.ok())
          return s;
      }
      // From pageable memory cudaMemcpy may return before the bytes reach the
      // device, and the broadcast's stream would not wait for them: copy on a
      // stream of our own and wait for it.
      if (absl::Status s = cuda_status(
              cudaMemcpyAsync(buffer.ptr, p.bytes.data(), p.bytes.size(), cudaMemcpyHostToDevice, upload),
              "cudaMemcpyAsync to the device");
          !s.ok())
        return s;
      if (absl::Status s = cuda_status(cudaStreamSynchronize(upload), "copying weights to the device"); !s.ok())
        return s;
      buffer_weights_id = p.weights_id;
    }
    return pair->broadcast(buffer.ptr, p.bytes.size(), timeout);
  }

  void loop() {
    for (;;) {
      SendJob job;
      {
        std::unique_lock<std::mutex> lock(mu);
        wake.wait(lock, [&] { return stop || !jobs.empty(); });
        if (stop) return;
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      const auto t0 = Clock::now();
      absl::Status s = send(job);
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      // Aborting the group may take a while: not under the lock offer() takes.
      if (!s.ok()) groups.erase(job.worker);  // the worker's next request forms a new one
      std::lock_guard<std::mutex> lock(mu);
      if (s.ok()) {
        live[job.worker] = job.session;
        ++counts.sent;
        counts.bytes += job.publication->bytes.size();
        counts.seconds += seconds;
      } else {
        live.erase(job.worker);
        ++counts.failed;
        counts.last_error = absl::StrCat("to ", job.worker, " (group ", job.session, "): ", s.message());
      }
    }
  }
};

WeightSender::WeightSender(std::unique_ptr<State> state) : s_(std::move(state)) {}

absl::StatusOr<std::unique_ptr<WeightSender>> WeightSender::start(int device, std::chrono::milliseconds timeout) {
  auto n = device_count();
  if (!n.ok()) return n.status();
  if (device < 0 || device >= *n)
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", device, " (this process sees ", *n, ")"));
  if (absl::Status s = cuda_status(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")")); !s.ok())
    return s;
  // Probe NCCL once here, so a missing network or library says so at start.
  if (auto id = NcclPair::new_unique_id(); !id.ok()) return id.status();
  auto st = std::make_unique<State>();
  st->device = device;
  st->timeout = timeout;
  State* raw = st.get();
  st->thread = std::thread([raw] { raw->loop(); });
  return std::unique_ptr<WeightSender>(new WeightSender(std::move(st)));
}

WeightSender::~WeightSender() {
  {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->stop = true;
  }
  s_->wake.notify_all();
  if (s_->thread.joinable()) s_->thread.join();
}

void WeightSender::publish(int64_t version, uint64_t weights_id, uint32_t total_crc32c, std::string payload) {
  auto p = std::make_shared<Publication>();
  p->version = version;
  p->weights_id = weights_id;
  p->total_crc32c = total_crc32c;
  p->bytes = std::move(payload);
  std::lock_guard<std::mutex> lock(s_->mu);
  s_->current = std::move(p);
}

absl::StatusOr<WeightChunkMessage> WeightSender::offer(const std::string& worker, uint64_t worker_session) {
  SendJob job{worker, 0, "", nullptr, {}};
  {
    std::lock_guard<std::mutex> lock(s_->mu);
    if (!s_->current) return absl::FailedPreconditionError("nothing published yet");
    job.publication = s_->current;
    job.expires = Clock::now() + s_->timeout;
    // A worker asks again only after its previous fetch ended: what is still
    // queued for it would pair with nothing.
    std::erase_if(s_->jobs, [&](const SendJob& queued) { return queued.worker == worker; });
    auto it = s_->live.find(worker);
    if (worker_session != 0 && it != s_->live.end() && it->second == worker_session) job.session = worker_session;
    else job.session = s_->rng() | 1;
  }
  if (job.session != worker_session) {  // a new group
    auto id = NcclPair::new_unique_id();
    if (!id.ok()) return id.status();
    job.unique_id = std::move(*id);
  }
  WeightChunkMessage m;
  const Publication& p = *job.publication;
  m.version = p.version;
  m.weights_id = p.weights_id;
  m.index = 0;
  m.count = 1;
  m.total_bytes = p.bytes.size();
  m.offset = 0;
  m.chunk_crc32c = m.total_crc32c = p.total_crc32c;
  m.nccl_session = job.session;
  m.nccl_unique_id = job.unique_id;
  {
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->jobs.push_back(std::move(job));
  }
  s_->wake.notify_one();
  return m;
}

WeightSender::Counts WeightSender::counts() const {
  std::lock_guard<std::mutex> lock(s_->mu);
  return s_->counts;
}

// ---------------------------------------------------------------- receiver

struct WeightReceiver::State {
  int device = 0;
  std::chrono::milliseconds timeout{0};
  uint64_t session = 0;
  std::unique_ptr<NcclPair> pair;
  DeviceBytes buffer;
};

WeightReceiver::WeightReceiver(int device, std::chrono::milliseconds timeout) : s_(std::make_unique<State>()) {
  s_->device = device;
  s_->timeout = timeout;
}
WeightReceiver::~WeightReceiver() = default;
void WeightReceiver::drop() {
  s_->pair.reset();
  s_->session = 0;
}
uint64_t WeightReceiver::session() const { return s_->session; }

absl::StatusOr<std::string> WeightReceiver::receive(const WeightChunkFields& offer) {
  auto fail = [&](absl::Status s) {
    drop();
    return s;
  };
  if (!offer.nccl_unique_id.empty()) {
    drop();  // a new group replaces the old
    auto joined = NcclPair::join(offer.nccl_unique_id, 1, s_->device, s_->timeout);
    if (!joined.ok()) return joined.status();
    s_->pair = std::move(*joined);
    s_->session = offer.nccl_session;
  } else if (!s_->pair || s_->session != offer.nccl_session) {
    return fail(absl::FailedPreconditionError(absl::StrCat("the offer reuses NCCL group ", offer.nccl_session,
                                                           "; this worker holds ", s_->session)));
  }
  if (absl::Status s = cuda_status(cudaSetDevice(s_->device), absl::StrCat("cudaSetDevice(", s_->device, ")"));
      !s.ok())
    return fail(s);
  if (absl::Status s = s_->buffer.reserve(offer.total_bytes); !s.ok()) return fail(s);
  if (absl::Status s = s_->pair->broadcast(s_->buffer.ptr, offer.total_bytes, s_->timeout); !s.ok()) return fail(s);
  std::string bytes(offer.total_bytes, '\0');
  if (absl::Status s = cuda_status(cudaMemcpy(bytes.data(), s_->buffer.ptr, bytes.size(), cudaMemcpyDeviceToHost),
                                   "cudaMemcpy from the device");
      !s.ok())
    return fail(s);
  return bytes;
}

}  // namespace interlace::transport::nccl
