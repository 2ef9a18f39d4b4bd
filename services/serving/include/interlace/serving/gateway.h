// The serving gateway: OpenAI-compatible HTTP in front of serving workers.
//   POST /v1/chat/completions, POST /v1/completions (streamed as server-sent
//   events in OpenAI's chunk format, or whole), GET /v1/models,
//   POST /generate (token ids in, token ids, log-probs and weights versions out),
//   GET /healthz, /readyz, /metrics (no token needed for these three).
// Every other route needs `Authorization: Bearer TOKEN`. Requests go to the
// worker that holds the longest prefix of their prompt unless loads are
// imbalanced (SGLang's cache-aware rule); X-Session-Id pins a conversation. Errors are OpenAI
// error objects: 400 malformed, 401 token, 404 unknown model or route, 413
// context too long, 422 bad parameter values, 429 too many requests in
// flight (Retry-After), 503 no worker connected. A streamed request whose
// worker goes away ends with an error event; a client that goes away aborts
// its request in the worker.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace interlace::serving {

struct GatewayOptions {
  std::string listen = "127.0.0.1:8000";  // HOST:PORT; port 0: a free one, written to port_file
  std::vector<std::string> workers;       // serving workers' ZeroMQ endpoints
  std::string keys_dir;                   // the workers' key directory (server.pub, clients/)
  std::string model_dir;                  // tokenizer, chat template and config of the served model
  std::string model_name;                 // what clients ask for (default: the directory's name)
  std::string token;                      // bearer token clients must send
  int64_t max_in_flight = 256;            // more concurrent requests than this get 429
  int64_t max_model_len = 0;              // 0: config.json's max_position_embeddings, else 8192
  std::string port_file;
  bool quiet = false;
  // Which worker a request goes to (see WorkerPool's RoutingOptions).
  std::string routing = "cache_aware";  // cache_aware | least_loaded | round_robin
  double cache_threshold = 0.5;         // share of the prompt a worker must hold to win on its prefix
  int64_t balance_abs = 32;             // loads are imbalanced when busiest - idlest is above this
  double balance_rel = 1.5;             //   and busiest is above this many times idlest
  // The control plane's Redis: serving workers registered there are added as
  // they appear (besides --worker ones), and X-Session-Id pins live there, so
  // gateway replicas agree on them. Empty: neither.
  std::string redis, prefix = "interlace";
  int64_t session_ttl_s = 3600;  // a pin lapses this long after its last use
};

// Runs until SIGINT/SIGTERM; returns the process exit code.
int run_gateway(const GatewayOptions& options);

}  // namespace interlace::serving
