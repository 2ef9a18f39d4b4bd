// A serving worker: the rollout engine with its prefix/state cache behind a
// token-level request protocol (proto/serving.capnp) on a ZeroMQ ROUTER
// socket, CURVE-authenticated: only clients whose key is in KEYS/clients/
// (the gateway's) may send. Each request's tokens are streamed back as they
// are sampled, one event per engine step, and a final event says why it
// ended. Malformed frames and bad requests are answered with an error event
// (when they carry an id) or counted and dropped; they never stop the worker.
// With metrics_listen it serves Prometheus metrics like a rollout worker's.
// Its cache's changes (usable prefixes stored and dropped) are published on a
// PUB socket (events_listen) for gateways to route by; a gateway learns the
// port from the worker's answer to its hello.
#pragma once

#include <cstdint>
#include <string>

namespace interlace::serving {

struct ServingWorkerOptions {
  std::string model_dir;
  std::string listen = "tcp://127.0.0.1:*";  // "*": a free port, written to endpoint_file
  std::string keys_dir;                      // server.{pub,key} (made if missing) and clients/
  std::string precision = "fp32";
  int64_t max_running = 32;                  // sequences decoded together
  int64_t max_waiting = 256;                 // more queued requests than this are refused
  int64_t cache_bytes = 0;                   // 0: the machine default; -1: no prefix cache
  int threads = 0;                           // CPU threads of the engine (0: OpenMP's default, every core);
                                             // several workers on one machine must split the cores
  std::string speculate = "off";             // speculative decoding (rollout::parse_speculate)
  std::string endpoint_file;                 // where the bound endpoint is written
  // Cache events (proto CacheEvents). Empty: listen's host, a free port.
  std::string events_listen;
  // Prometheus /metrics (the engine's figures, speculation's counters, refused
  // requests) on HOST:PORT; empty: none. Port 0: a free one, written to metrics_port_file.
  std::string metrics_listen;
  std::string metrics_port_file;
  // The control plane's registry (kind "serving", with its endpoint and load),
  // where gateways given the same Redis find it. Empty redis: not registered.
  std::string redis, prefix = "interlace", name;  // name default: serving@HOST
  std::string advertise;  // the endpoint gateways connect to (default: the bound one, 0.0.0.0 replaced by this host's name)
  // A training run's directory whose learner's new weights are loaded as it
  // publishes them (WeightFollower); empty: the model's weights throughout.
  std::string follow;
  int64_t follow_poll_ms = 1000;
  bool quiet = false;
};

// Runs until SIGINT/SIGTERM; returns the process exit code.
int run_serving_worker(const ServingWorkerOptions& options);

}  // namespace interlace::serving
