#include "interlace/serving/gateway.h"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <csignal>
#include <filesystem>
#include <map>
#include <set>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "httplib.h"
#include "interlace/core/file_util.h"
#include "interlace/control/worker_registry.h"
#include "interlace/metrics/registry.h"
#include "interlace/serving/openai_api.h"
#include "spdlog/spdlog.h"
#include "interlace/serving/worker_pool.h"

namespace interlace::serving {
namespace {

std::atomic<bool> g_stop{false};
httplib::Server* g_server = nullptr;

// How long a request may go without a word from its worker before the
// gateway gives up on it (a worker that hangs without dropping the connection).
constexpr auto kStallTimeout = std::chrono::seconds(120);

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

bool same_token(const std::string& a, const std::string& b) {  // constant time in the token's length
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// A request's n generations as they come back from the workers.
struct Choice {
  uint64_t id = 0;
  std::shared_ptr<RequestStream> stream;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int64_t> versions;
  std::vector<int32_t> top_tokens;  // k alternatives per token (top_logprobs), flattened
  std::vector<float> top_logprobs;
  bool finished = false;
  std::string reason, error;
  int64_t prompt_tokens = 0, cached_tokens = 0;
  int64_t matched = 0;  // prompt tokens the gateway's index expected the worker to hold
  std::unique_ptr<ChatStreamer> streamer;
};

class Gateway {
 public:
  explicit Gateway(const GatewayOptions& o) : o_(o) {}

  absl::Status load() {
    auto tok = model::load_tokenizer(o_.model_dir);
    if (!tok.ok()) return tok.status();
    tokenizer_ = std::move(*tok);
    if (auto t = model::ChatTemplate::create(*tokenizer_); t.ok()) tokens_template_.emplace(*t);
    if (std::filesystem::exists(std::filesystem::path(o_.model_dir) / "tokenizer_config.json")) {
      auto jt = model::JinjaChatTemplate::load(o_.model_dir);
      if (!jt.ok()) return jt.status();
      if (jt->origin() != "interlace") text_template_.emplace(*jt);
    }
    if (!tokens_template_ && !text_template_)
      return absl::InvalidArgumentError(absl::StrCat(o_.model_dir, ": no chat template (neither tokenizer_config.json's ",
                                                     "chat_template nor the special tokens of Interlace's)"));
    served_.name = o_.model_name.empty() ? std::filesystem::path(o_.model_dir).filename().string() : o_.model_name;
    served_.max_model_len = o_.max_model_len;
    if (served_.max_model_len <= 0) {
      served_.max_model_len = 8192;
      if (auto config = core::read_file((std::filesystem::path(o_.model_dir) / "config.json").string()); config.ok()) {
        const json c = json::parse(*config, nullptr, false);
        if (c.is_object() && c.contains("max_position_embeddings") && c["max_position_embeddings"].is_number_integer())
          served_.max_model_len = c["max_position_embeddings"].get<int64_t>();
      }
    }
    served_.tokenizer = tokenizer_.get();
    served_.tokens_template = tokens_template_ ? &*tokens_template_ : nullptr;
    served_.text_template = text_template_ ? &*text_template_ : nullptr;
    for (const char* stop : {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>"})
      if (auto id = tokenizer_->special_id(stop)) served_.stop_tokens.push_back(*id);
    std::unique_ptr<SessionStore> sessions;
    std::optional<control::RedisAddress> redis;
    if (!o_.redis.empty()) {
      auto address = control::parse_redis_address(o_.redis);
      if (!address.ok()) return address.status();
      redis = control::with_password_from_env(*address);
      auto store = RedisSessionStore::connect(*redis, o_.prefix, std::chrono::seconds(o_.session_ttl_s));
      if (!store.ok()) return store.status();
      sessions = std::move(*store);
    }
    auto pool = WorkerPool::start(o_.workers, o_.keys_dir,
                                  {.policy = o_.routing, .cache_threshold = o_.cache_threshold, .balance_abs = o_.balance_abs,
                                   .balance_rel = o_.balance_rel},
                                  std::move(sessions));
    if (!pool.ok()) return pool.status();
    pool_ = std::move(*pool);
    if (redis) discovery_ = std::thread([this, address = *redis] { discover(address); });
    metrics::register_build_info(metrics_, /*nccl=*/false);
    // Every series exists from the start (at 0), so dashboards and alerts see them before traffic does.
    for (const char* reason : {"prefix_hit", "least_loaded", "load_imbalance", "session", "round_robin"}) routing(reason);
    prefix_misses();
    match_tokens();
    client_aborts();
    for (const char* name : {"interlace_gateway_prompt_tokens_total", "interlace_gateway_generation_tokens_total",
                             "interlace_gateway_cached_tokens_total"})
      token_counter(name);
    return absl::OkStatus();
  }

  int serve() {
    httplib::Server server;
    server.new_task_queue = [] { return new httplib::ThreadPool(128); };  // streams hold a thread each
    // A request body is a conversation: 16 MiB is plenty, and a stranger may not make us hold more (413).
    server.set_payload_max_length(size_t{16} << 20);
    server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (req.path == "/healthz" || req.path == "/readyz" || req.path == "/metrics") return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      if (!auth.starts_with("Bearer ") || !same_token(auth.substr(7), o_.token)) {
        reply_error(res, {.status = 401, .message = "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                          .type = "authentication_error", .code = "invalid_api_key"});
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      static const std::set<std::string> kRoutes = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/generate",
                                                    "/healthz", "/readyz", "/metrics"};
      metrics_.counter("interlace_gateway_requests_total", "HTTP requests answered, by route and status code",
                       {{"route", kRoutes.contains(req.path) ? req.path : "other"}, {"code", std::to_string(res.status)}})
          .inc();
    });
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
    server.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      int up = 0;
      for (const auto& w : pool_->status()) up += w.up;
      res.status = up > 0 ? 200 : 503;
      res.set_content(absl::StrCat(up, " of ", pool_->status().size(), " serving workers connected\n"), "text/plain");
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      int up = 0;
      for (const auto& w : pool_->status()) up += w.up;
      metrics_.gauge("interlace_gateway_workers", "serving workers by state", {{"state", "up"}}).set(up);
      metrics_.gauge("interlace_gateway_workers", "serving workers by state", {{"state", "down"}}).set(double(pool_->status().size() - up));
      metrics_.counter("interlace_gateway_session_store_errors_total", "requests whose session pin could not be read or written (Redis away)")
          .set(double(pool_->session_errors()));
      metrics_.gauge("interlace_gateway_requests_in_flight", "requests being answered now").set(double(pool_->in_flight()));
      metrics_.gauge("interlace_gateway_prefix_index_entries", "usable prefixes the workers' cache events put in the routing index")
          .set(double(pool_->index_entries()));
      const CacheEventCounts events = pool_->cache_event_counts();
      const auto events_counter = [this](const char* kind) -> metrics::Value& {
        return metrics_.counter("interlace_gateway_cache_events_total",
                                "cache event messages from the serving workers, by what became of them", {{"kind", kind}});
      };
      events_counter("applied").set(double(events.messages));
      events_counter("lost").set(double(events.lost));
      events_counter("snapshot").set(double(events.snapshots));
      events_counter("malformed").set(double(events.malformed));
      metrics_.counter("interlace_gateway_prefix_index_refused_total", "cache entries not indexed: a worker's share of the index was full")
          .set(double(events.refused));
      res.set_content(metrics_.render(), "text/plain; version=0.0.4");
    });
    server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json model = {{"id", served_.name}, {"object", "model"}, {"created", started_}, {"owned_by", "interlace"},
                    {"max_model_len", served_.max_model_len}};
      res.set_content(json({{"object", "list"}, {"data", {model}}}).dump(), "application/json");
    });
    server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { chat(req, res); });
    server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { completions(req, res); });
    server.Post("/generate", [this](const httplib::Request& req, httplib::Response& res) { generate(req, res); });
    // What cpp-httplib answers itself (no route, a body over the limit, ...) as OpenAI error objects too.
    server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404)
        reply_error(res, {.status = 404, .message = absl::StrCat("no route ", req.method, " ", req.path), .code = "not_found"});
      else if (res.status == 413)
        reply_error(res, {.status = 413, .message = "the request body is over the 16 MiB limit"});
      else
        reply_error(res, {.status = res.status, .message = absl::StrCat("HTTP ", res.status, " for ", req.method, " ", req.path)});
    });

    const std::vector<std::string> hp = absl::StrSplit(o_.listen, absl::MaxSplits(':', 1));
    if (hp.size() != 2) {
      std::fprintf(stderr, "error: --listen %s: expected HOST:PORT\n", o_.listen.c_str());
      return 2;
    }
    // Debian's cpp-httplib is built to listen() with a backlog of 5: a burst
    // of new clients overflows it and the kernel resets their connections.
    // The listening socket passes through set_socket_options before bind, so
    // keep it and listen() on it again with a real backlog.
    int listen_fd = -1;
    server.set_socket_options([&listen_fd](socket_t sock) {
      httplib::default_socket_options(sock);
      listen_fd = sock;
    });
    int port = std::atoi(hp[1].c_str());
    if (port == 0) port = server.bind_to_any_port(hp[0]);
    else if (!server.bind_to_port(hp[0], port)) port = -1;
    if (port <= 0) {
      std::fprintf(stderr, "error: gateway: cannot listen on %s\n", o_.listen.c_str());
      return 1;
    }
    if (listen_fd >= 0) ::listen(listen_fd, 4096);
    if (!o_.port_file.empty())
      if (auto s = core::write_file(o_.port_file, std::to_string(port) + "\n"); !s.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
        return 1;
      }
    if (!o_.quiet)
      std::fprintf(stderr, "gateway: serving %s at http://%s:%d/v1 over %zu worker(s)\n", served_.name.c_str(), hp[0].c_str(), port,
                   o_.workers.size());
    g_server = &server;
    std::thread watcher([&server] {
      while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      server.stop();
    });
    server.listen_after_bind();
    g_stop = true;
    watcher.join();
    return 0;
  }

 private:
  static void reply_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    if (e.status == 429) res.set_header("Retry-After", "1");
    res.set_content(error_body(e).dump(), "application/json");
  }

  // The index said the worker held a prefix, and the worker restored less of it (evicted, or restarted).
  metrics::Value& prefix_misses() {
    return metrics_.counter("interlace_gateway_prefix_misses_total",
                            "requests whose worker restored less of the prompt than the gateway's prefix index expected");
  }

  prometheus::Histogram& match_tokens() {
    static const std::vector<double> kTokenBuckets = {0, 16, 64, 256, 1024, 4096, 16384, 65536};
    return metrics_.histogram("interlace_gateway_prefix_match_tokens", "prompt tokens the chosen worker holds, by the gateway's index",
                              kTokenBuckets);
  }
  metrics::Value& client_aborts() {
    return metrics_.counter("interlace_gateway_client_aborts_total", "requests whose client went away before the end");
  }
  metrics::Value& token_counter(const std::string& name) {
    static const std::map<std::string, std::string> kHelp = {
        {"interlace_gateway_prompt_tokens_total", "prompt tokens of requests sent to workers"},
        {"interlace_gateway_generation_tokens_total", "tokens generated for clients"},
        {"interlace_gateway_cached_tokens_total", "prompt tokens the workers restored from their caches"}};
    return metrics_.counter(name, kHelp.at(name));
  }

  metrics::Value& routing(const std::string& reason) {
    return metrics_.counter("interlace_gateway_routing_decisions_total", "requests sent to a serving worker, by why that one",
                            {{"reason", reason}});
  }

  std::optional<json> body_of(const httplib::Request& req, httplib::Response& res) {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      reply_error(res, {.status = 400, .message = "the request body is not a JSON object"});
      return std::nullopt;
    }
    if (body.contains("model") && !(body["model"].is_string() && body["model"] == served_.name)) {
      reply_error(res, {.status = 404,
                        .message = absl::StrCat("model ", body["model"].dump(), " is not served here; this gateway serves '", served_.name, "'"),
                        .param = "model",
                        .code = "model_not_found"});
      return std::nullopt;
    }
    return body;
  }

  // Sends N generations of PROMPT; fills CHOICES or answers the error.
  bool submit(const std::vector<int32_t>& prompt, const GenerationParams& params, std::vector<Choice>& choices, const std::string& session,
              httplib::Response& res) {
    if (pool_->in_flight() + params.n > o_.max_in_flight) {
      reply_error(res, {.status = 429, .message = absl::StrCat("too many requests in flight (", o_.max_in_flight, "); retry shortly"),
                        .type = "rate_limit_error"});
      return false;
    }
    rollout::SamplingParams sampling = params.sampling;
    if (!params.ignore_eos)
      for (int32_t t : served_.stop_tokens) sampling.stop_token_ids.push_back(t);
    static thread_local std::mt19937_64 seeds(std::random_device{}());
    const uint64_t base_seed = sampling.seed != 0 ? sampling.seed : seeds();
    for (int64_t i = 0; i < params.n; ++i) {
      sampling.seed = base_seed + uint64_t(i);
      auto s = pool_->submit(prompt, sampling, session);
      if (!s.ok()) {
        for (Choice& c : choices) pool_->abort(c.id);
        reply_error(res, {.status = 503, .message = std::string(s.status().message()), .type = "server_error"});
        return false;
      }
      choices.push_back(routed(*s));
    }
    token_counter("interlace_gateway_prompt_tokens_total").add(double(prompt.size() * params.n));
    return true;
  }

  Choice routed(const WorkerPool::Submitted& s) {
    routing(s.reason).inc();
    match_tokens().Observe(double(s.matched));
    Choice c;
    c.id = s.id;
    c.stream = s.stream;
    c.matched = s.matched;
    return c;
  }

  // Takes what arrived for C (waiting up to WAIT for the first of it) into GOT and C.
  void drain(Choice& c, std::chrono::milliseconds wait, std::vector<WorkerEvent>& got) {
    got = c.stream->wait(wait);
    for (const WorkerEvent& e : got) {
      c.tokens.insert(c.tokens.end(), e.tokens.begin(), e.tokens.end());
      c.logprobs.insert(c.logprobs.end(), e.logprobs.begin(), e.logprobs.end());
      c.versions.insert(c.versions.end(), e.versions.begin(), e.versions.end());
      c.top_tokens.insert(c.top_tokens.end(), e.top_tokens.begin(), e.top_tokens.end());
      c.top_logprobs.insert(c.top_logprobs.end(), e.top_logprobs.begin(), e.top_logprobs.end());
      token_counter("interlace_gateway_generation_tokens_total").add(double(e.tokens.size()));
      if (e.finished) {
        c.finished = true;
        c.reason = e.reason;
        c.error = e.error;
        c.prompt_tokens = e.prompt_tokens;
        c.cached_tokens = e.cached_tokens;
        token_counter("interlace_gateway_cached_tokens_total").add(double(e.cached_tokens));
        // A hybrid's state is checkpointed at turn boundaries, not every block: allow one block short.
        if (e.reason != "error" && e.cached_tokens + 16 < c.matched) prefix_misses().inc();
        pool_->done(c.id);
      }
    }
  }

  // Waits for every choice to finish (non-streamed answers).
  std::optional<ApiError> wait_all(std::vector<Choice>& choices) {
    for (Choice& c : choices) {
      auto last = std::chrono::steady_clock::now();
      std::vector<WorkerEvent> got;
      while (!c.finished) {
        drain(c, std::chrono::milliseconds(500), got);
        if (!got.empty()) last = std::chrono::steady_clock::now();
        else if (std::chrono::steady_clock::now() - last > kStallTimeout) {
          for (Choice& other : choices) pool_->abort(other.id);
          return ApiError{.status = 504, .message = "the serving worker stopped answering", .type = "server_error"};
        }
      }
      if (c.reason == "error") {
        for (Choice& other : choices) pool_->abort(other.id);
        const bool full = c.error.starts_with("queue full");
        return ApiError{.status = full ? 429 : 502, .message = c.error, .type = full ? "rate_limit_error" : "server_error"};
      }
    }
    return std::nullopt;
  }

  json usage(const std::vector<Choice>& choices, int64_t prompt_tokens) const {
    int64_t completion = 0, cached = 0;
    for (const Choice& c : choices) {
      completion += int64_t(c.tokens.size());
      cached = std::max(cached, c.cached_tokens);
    }
    return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion}, {"total_tokens", prompt_tokens + completion},
            {"prompt_tokens_details", {{"cached_tokens", cached}}}};
  }

  // How many alternatives per token E (a Choice or a WorkerEvent) holds: the worker sends k per token, flattened.
  template <typename Holder>
  static size_t alternatives_per_token(const Holder& e) {
    return e.tokens.empty() ? 0 : e.top_tokens.size() / e.tokens.size();
  }

  // TEXT as the response will spell it: invalid UTF-8 (part of a character) becomes U+FFFD, as dump(replace) writes it.
  static std::string as_sent(const std::string& text) {
    return json::parse(json(text).dump(-1, ' ', false, json::error_handler_t::replace)).get<std::string>();
  }

  // A token's text as OpenAI's logprobs give it: the piece and its bytes (a piece may be part of a UTF-8 character).
  json piece_of(int32_t token) const {
    const int32_t one[1] = {token};
    const std::string piece = tokenizer_->decode(one);
    json bytes = json::array();
    for (unsigned char b : piece) bytes.push_back(int(b));
    return {{"token", piece}, {"bytes", bytes}};
  }

  // Chat's logprobs of TOKENS (with what E holds: log-probs and k alternatives per token).
  template <typename Holder>
  json token_logprobs(const Holder& e) const {
    const size_t k = alternatives_per_token(e);
    json content = json::array();
    for (size_t i = 0; i < e.tokens.size(); ++i) {
      json entry = piece_of(e.tokens[i]);
      entry["logprob"] = e.logprobs[i];
      entry["top_logprobs"] = json::array();
      for (size_t j = i * k; j < (i + 1) * k; ++j) {
        json alt = piece_of(e.top_tokens[j]);
        alt["logprob"] = e.top_logprobs[j];
        entry["top_logprobs"].push_back(alt);
      }
      content.push_back(entry);
    }
    return {{"content", content}};
  }

  // Server-sent events: CHUNK for each piece, ending with [DONE] or an error event.
  using ChunkFn = std::function<bool(httplib::DataSink&, Choice&, size_t index, const std::vector<WorkerEvent>&)>;
  void stream(httplib::Response& res, std::shared_ptr<std::vector<Choice>> choices, std::function<bool(httplib::DataSink&)> begin,
              ChunkFn on_events, std::function<bool(httplib::DataSink&)> end) {
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [this, choices, begin, on_events, end](size_t, httplib::DataSink& sink) {
      auto abort_all = [&] {
        for (Choice& c : *choices)
          if (!c.finished) pool_->abort(c.id);
        client_aborts().inc();
        return false;
      };
      if (!begin(sink)) return abort_all();
      std::vector<WorkerEvent> got;
      std::vector<std::chrono::steady_clock::time_point> last(choices->size(), std::chrono::steady_clock::now());
      bool open = true;
      while (open) {
        open = false;
        for (size_t i = 0; i < choices->size(); ++i) {
          Choice& c = (*choices)[i];
          if (c.finished) continue;
          open = true;
          drain(c, std::chrono::milliseconds(choices->size() > 1 ? 5 : 200), got);
          if (got.empty()) {
            if (std::chrono::steady_clock::now() - last[i] > kStallTimeout) {
              c.finished = true;
              c.reason = "error";
              c.error = "the serving worker stopped answering";
              pool_->abort(c.id);
              got.push_back({.finished = true, .reason = "error", .error = c.error});
            } else if (!sink.is_writable()) {
              return abort_all();
            } else {
              continue;
            }
          }
          last[i] = std::chrono::steady_clock::now();
          if (c.reason == "error") {
            for (Choice& other : *choices)
              if (!other.finished) pool_->abort(other.id);
            const std::string event = "data: " + error_body({.status = 502, .message = c.error, .type = "server_error"}).dump() + "\n\n";
            sink.write(event.data(), event.size());
            sink.done();
            return true;
          }
          if (!on_events(sink, c, i, got)) return abort_all();
        }
      }
      if (!end(sink)) return abort_all();
      const std::string done = "data: [DONE]\n\n";
      sink.write(done.data(), done.size());
      sink.done();
      return true;
    });
  }

  static bool send_event(httplib::DataSink& sink, const json& chunk) {
    const std::string event = "data: " + chunk.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
    return sink.write(event.data(), event.size());
  }

  void chat(const httplib::Request& req, httplib::Response& res) {
    auto body = body_of(req, res);
    if (!body) return;
    auto parsed = parse_chat_request(*body, served_);
    if (auto* e = std::get_if<ApiError>(&parsed)) return reply_error(res, *e);
    ChatRequest& r = std::get<ChatRequest>(parsed);
    auto prompt = chat_prompt(r, served_);
    if (auto* e = std::get_if<ApiError>(&prompt)) return reply_error(res, *e);
    const int64_t prompt_tokens = int64_t(std::get<std::vector<int32_t>>(prompt).size());
    auto choices = std::make_shared<std::vector<Choice>>();
    if (!submit(std::get<std::vector<int32_t>>(prompt), r.params, *choices, req.get_header_value("X-Session-Id"), res)) return;
    const std::string id = absl::StrCat("chatcmpl-", next_id_++);
    const int64_t created = unix_seconds();
    const GenerationParams params = r.params;
    if (!params.stream) {
      if (auto e = wait_all(*choices)) return reply_error(res, *e);
      json out = json::array();
      for (size_t i = 0; i < choices->size(); ++i) {
        const Choice& c = (*choices)[i];
        json message = assistant_message(c.tokens, served_, params.separate_reasoning);
        json choice = {{"index", i}, {"message", message},
                       {"logprobs", params.logprobs ? token_logprobs(c) : json()},
                       {"finish_reason", finish_reason(c.reason, message.contains("tool_calls"))}};
        out.push_back(choice);
      }
      res.set_content(json({{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", served_.name},
                            {"choices", out}, {"usage", usage(*choices, prompt_tokens)}})
                          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                      "application/json");
      return;
    }
    for (size_t i = 0; i < choices->size(); ++i)
      (*choices)[i].streamer = std::make_unique<ChatStreamer>(served_, params.separate_reasoning, absl::StrCat("call_", i, "_"));
    auto chunk = [this, id, created](json choice) {
      return json({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", served_.name}, {"choices", {choice}}});
    };
    stream(
        res, choices,
        [choices, chunk](httplib::DataSink& sink) {
          for (size_t i = 0; i < choices->size(); ++i)
            if (!send_event(sink, chunk({{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}})))
              return false;
          return true;
        },
        [this, chunk, params](httplib::DataSink& sink, Choice& c, size_t index, const std::vector<WorkerEvent>& got) {
          for (const WorkerEvent& e : got) {
            std::vector<json> deltas = c.streamer->push(e.tokens);
            if (e.finished) {
              auto rest = c.streamer->finish();
              deltas.insert(deltas.end(), rest.begin(), rest.end());
            }
            // Tokens that show no text yet (a special token, part of a character) still carry their log-probs.
            if (params.logprobs && !e.tokens.empty() && deltas.empty()) deltas.push_back(json::object());
            for (size_t d = 0; d < deltas.size(); ++d) {
              json choice = {{"index", index}, {"delta", deltas[d]}, {"finish_reason", nullptr}};
              if (params.logprobs && d == 0 && !e.tokens.empty())
                choice["logprobs"] = token_logprobs(e);
              if (!send_event(sink, chunk(choice))) return false;
            }
            if (e.finished &&
                !send_event(sink, chunk({{"index", index}, {"delta", json::object()},
                                         {"finish_reason", finish_reason(e.reason, c.streamer->saw_tool_call())}})))
              return false;
          }
          return true;
        },
        [this, choices, id, created, params, prompt_tokens](httplib::DataSink& sink) {
          if (!params.include_usage) return true;
          return send_event(sink, json({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", served_.name},
                                        {"choices", json::array()}, {"usage", usage(*choices, prompt_tokens)}}));
        });
  }

  void completions(const httplib::Request& req, httplib::Response& res) {
    auto body = body_of(req, res);
    if (!body) return;
    std::vector<int32_t> prompt;
    const json p = body->value("prompt", json());
    if (p.is_string()) {
      prompt = tokenizer_->encode_with_specials(p.get<std::string>());
    } else if (p.is_array() && !p.empty() && std::all_of(p.begin(), p.end(), [](const json& x) { return x.is_number_integer(); })) {
      for (const json& x : p) {
        const int64_t t = x.get<int64_t>();  // checked against the vocabulary below, before it is narrowed
        prompt.push_back(t < 0 || t > INT32_MAX ? -1 : int32_t(t));
      }
    } else {
      return reply_error(res, {.status = 400, .message = "prompt must be a string or a list of token ids", .param = "prompt"});
    }
    if (prompt.empty()) return reply_error(res, {.status = 400, .message = "the prompt is empty", .param = "prompt"});
    for (int32_t t : prompt)
      if (t < 0 || t >= tokenizer_->vocab_size())
        return reply_error(res, {.status = 422, .message = absl::StrCat("token ", t, " is outside the vocabulary"), .param = "prompt"});
    GenerationParams params;
    if (auto e = parse_params(*body, 16, params)) return reply_error(res, *e);
    if (int64_t(prompt.size()) + params.sampling.max_new_tokens > served_.max_model_len)
      return reply_error(res, {.status = 413,
                               .message = absl::StrCat("the prompt is ", prompt.size(), " tokens and max_tokens ", params.sampling.max_new_tokens,
                                                       "; together more than this model's ", served_.max_model_len, "-token context"),
                               .param = "prompt",
                               .code = "context_length_exceeded"});
    auto choices = std::make_shared<std::vector<Choice>>();
    if (!submit(prompt, params, *choices, req.get_header_value("X-Session-Id"), res)) return;
    const std::string id = absl::StrCat("cmpl-", next_id_++);
    const int64_t created = unix_seconds();
    const int64_t prompt_tokens = int64_t(prompt.size());
    auto text_of = [this](const std::vector<int32_t>& tokens) {
      std::vector<int32_t> body(tokens);
      while (!body.empty() && std::find(served_.stop_tokens.begin(), served_.stop_tokens.end(), body.back()) != served_.stop_tokens.end())
        body.pop_back();
      return tokenizer_->decode(body);
    };
    // The legacy completions format: pieces, their log-probs, and {piece: log-prob} of the alternatives.
    auto logprobs_of = [this](const auto& e) {
      const size_t k = alternatives_per_token(e);
      json pieces = json::array(), tops = json::array();
      for (size_t i = 0; i < e.tokens.size(); ++i) {
        pieces.push_back(piece_of(e.tokens[i])["token"]);
        json alternatives = json::object();
        // Two ids may decode to the same piece (bytes of a split character): the more likely one keeps the key.
        // Keys as the response spells them, so that equal keys collapse here and not in the client's parser.
        for (size_t j = i * k; j < (i + 1) * k; ++j)
          alternatives.emplace(as_sent(piece_of(e.top_tokens[j])["token"].template get<std::string>()), e.top_logprobs[j]);
        tops.push_back(alternatives);
      }
      return json({{"tokens", pieces}, {"token_logprobs", e.logprobs}, {"top_logprobs", k > 0 ? tops : json()}});
    };
    if (!params.stream) {
      if (auto e = wait_all(*choices)) return reply_error(res, *e);
      json out = json::array();
      for (size_t i = 0; i < choices->size(); ++i) {
        const Choice& c = (*choices)[i];
        out.push_back({{"index", i}, {"text", text_of(c.tokens)}, {"logprobs", params.logprobs ? logprobs_of(c) : json()},
                       {"finish_reason", finish_reason(c.reason, false)}});
      }
      res.set_content(json({{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", served_.name},
                            {"choices", out}, {"usage", usage(*choices, prompt_tokens)}})
                          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                      "application/json");
      return;
    }
    auto decoders = std::make_shared<std::vector<model::IncrementalDecoder>>(choices->size(), model::IncrementalDecoder(*tokenizer_));
    auto chunk = [this, id, created](json choice) {
      return json({{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", served_.name}, {"choices", {choice}}});
    };
    stream(
        res, choices, [](httplib::DataSink&) { return true; },
        [this, chunk, decoders, params, logprobs_of](httplib::DataSink& sink, Choice&, size_t index, const std::vector<WorkerEvent>& got) {
          for (const WorkerEvent& e : got) {
            std::string text;
            for (int32_t t : e.tokens)
              if (std::find(served_.stop_tokens.begin(), served_.stop_tokens.end(), t) == served_.stop_tokens.end())
                text += (*decoders)[index].push(t);
            if (e.finished) text += (*decoders)[index].flush();
            json choice = {{"index", index}, {"text", text},
                           {"logprobs", params.logprobs ? logprobs_of(e) : json()},
                           {"finish_reason", e.finished ? json(finish_reason(e.reason, false)) : json()}};
            if (!send_event(sink, chunk(choice))) return false;
          }
          return true;
        },
        [this, choices, id, created, params, prompt_tokens](httplib::DataSink& sink) {
          if (!params.include_usage) return true;
          return send_event(sink, json({{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", served_.name},
                                        {"choices", json::array()}, {"usage", usage(*choices, prompt_tokens)}}));
        });
  }

  // Token ids in, token ids, log-probs and weights versions out (RL and
  // evaluation clients that keep their own token histories).
  void generate(const httplib::Request& req, httplib::Response& res) {
    auto body = body_of(req, res);
    if (!body) return;
    const json ids = body->value("input_ids", json());
    if (!ids.is_array() || ids.empty() || !std::all_of(ids.begin(), ids.end(), [](const json& x) { return x.is_number_integer(); }))
      return reply_error(res, {.status = 400, .message = "input_ids must be a non-empty list of token ids", .param = "input_ids"});
    std::vector<int32_t> prompt;
    for (const json& x : ids) {
      const int64_t t = x.get<int64_t>();
      if (t < 0 || t >= tokenizer_->vocab_size())
        return reply_error(res, {.status = 422, .message = absl::StrCat("token ", t, " is outside the vocabulary [0, ", tokenizer_->vocab_size(), ")"),
                                 .param = "input_ids"});
      prompt.push_back(int32_t(t));
    }
    json sp = body->value("sampling_params", json::object());
    if (!sp.is_object()) return reply_error(res, {.status = 400, .message = "sampling_params must be an object", .param = "sampling_params"});
    if (sp.contains("max_new_tokens")) sp["max_tokens"] = sp["max_new_tokens"];
    GenerationParams params;
    if (auto e = parse_params(sp, 16, params)) return reply_error(res, *e);
    params.n = 1;
    if (sp.contains("stop_token_ids") && sp["stop_token_ids"].is_array())
      for (const json& t : sp["stop_token_ids"])
        if (t.is_number_integer()) params.sampling.stop_token_ids.push_back(t.get<int32_t>());
    if (int64_t(prompt.size()) + params.sampling.max_new_tokens > served_.max_model_len)
      return reply_error(res, {.status = 413, .message = "input_ids and max_new_tokens are longer than the model's context",
                               .param = "input_ids", .code = "context_length_exceeded"});
    // No default stop tokens here: the client says when to stop.
    if (pool_->in_flight() + 1 > o_.max_in_flight)
      return reply_error(res, {.status = 429, .message = "too many requests in flight; retry shortly", .type = "rate_limit_error"});
    auto s = pool_->submit(prompt, params.sampling, req.get_header_value("X-Session-Id"));
    if (!s.ok()) return reply_error(res, {.status = 503, .message = std::string(s.status().message()), .type = "server_error"});
    std::vector<Choice> choices;
    choices.push_back(routed(*s));
    if (auto e = wait_all(choices)) return reply_error(res, *e);
    const Choice& c = choices[0];
    json out = {{"output_ids", c.tokens}, {"logprobs", c.logprobs}, {"versions", c.versions},
                {"finish_reason", c.reason}, {"prompt_tokens", c.prompt_tokens}, {"cached_tokens", c.cached_tokens}};
    if (const size_t k = alternatives_per_token(c); k > 0) {
      json ids = json::array(), lps = json::array();  // per output token: its k alternatives, most likely first
      for (size_t i = 0; i < c.tokens.size(); ++i) {
        ids.push_back(std::vector<int32_t>(c.top_tokens.begin() + long(i * k), c.top_tokens.begin() + long((i + 1) * k)));
        lps.push_back(std::vector<float>(c.top_logprobs.begin() + long(i * k), c.top_logprobs.begin() + long((i + 1) * k)));
      }
      out["top_ids"] = ids;
      out["top_logprobs"] = lps;
    }
    res.set_content(out.dump(), "application/json");
  }

  // Adds the serving workers the control plane's registry lists, every 2 s.
  void discover(const control::RedisAddress& address) {
    std::set<std::string> refused;  // endpoints already complained about
    std::unique_ptr<control::RedisClient> redis;
    // Short timeouts: a Redis that is away must not hold up the gateway's shutdown.
    const control::RedisOptions quick{.timeout = std::chrono::milliseconds(1000), .reconnect_for = std::chrono::milliseconds(1000)};
    bool warned = false;
    while (true) {
      if (!redis) {
        auto r = control::RedisClient::connect(address, quick);
        if (r.ok()) redis = std::move(*r);
      }
      if (redis) {
        auto workers = control::WorkerRegistry(*redis, o_.prefix).list();
        if (!workers.ok() && !warned)
          spdlog::warn("gateway: cannot read the worker registry: {}", std::string(workers.status().message()));
        warned = !workers.ok();
        for (const control::WorkerEntry& w : workers.ok() ? *workers : std::vector<control::WorkerEntry>{}) {
          if (w.kind != "serving" || w.endpoint.empty()) continue;
          // Said once per endpoint (the set is capped: registry entries come from elsewhere).
          if (auto s = pool_->add_worker(w.endpoint); !s.ok() && refused.size() < 1000 && refused.insert(w.endpoint).second)
            spdlog::warn("gateway: registry entry {}: {}", w.name, std::string(s.message()));
        }
      }
      std::unique_lock<std::mutex> lock(stop_mu_);
      if (stop_cv_.wait_for(lock, std::chrono::seconds(2), [this] { return stopping_; })) return;
    }
  }

 public:
  ~Gateway() {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      stopping_ = true;
    }
    stop_cv_.notify_all();
    if (discovery_.joinable()) discovery_.join();
  }

 private:
  const GatewayOptions& o_;
  std::mutex stop_mu_;
  bool stopping_ = false;  // with stop_mu_
  std::condition_variable stop_cv_;
  std::thread discovery_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::optional<model::ChatTemplate> tokens_template_;
  std::optional<model::JinjaChatTemplate> text_template_;
  ServedModel served_;
  std::unique_ptr<WorkerPool> pool_;
  metrics::Registry metrics_;
  std::atomic<uint64_t> next_id_{1};
  const int64_t started_ = unix_seconds();
};

}  // namespace

int run_gateway(const GatewayOptions& o) {
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  if (o.token.empty()) {
    std::fprintf(stderr, "error: the gateway needs a bearer token: set INTERLACE_TOKEN or pass --token-file FILE\n");
    return 2;
  }
  if (o.keys_dir.empty() || (o.workers.empty() && o.redis.empty()) || o.model_dir.empty()) {
    std::fprintf(stderr, "error: serve gateway needs --model DIR, --keys DIR and its workers: --worker ENDPOINT (repeated), "
                         "or --redis HOST:PORT to find them in the control plane's registry\n");
    return 2;
  }
  Gateway gateway(o);
  if (auto s = gateway.load(); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return gateway.serve();
}

}  // namespace interlace::serving
