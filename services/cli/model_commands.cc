// interlace model init | score | generate
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "cli_util.h"
#include "commands.h"
#include "interlace/core/file_util.h"
#include "interlace/model/bpe_tokenizer.h"
#include "interlace/model/jinja_chat_template.h"
#include "interlace/model/model.h"
#include "interlace/model/model_init.h"
#include "interlace/model/sampling.h"
#include "interlace/model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace interlace::cli {
namespace {

using model::Model;

// Loads a model directory, with a message that names it when it is not one.
absl::StatusOr<std::unique_ptr<Model>> open_model(const std::string& dir, const std::string& precision_name) {
  if (!std::filesystem::is_directory(dir))
    return absl::NotFoundError(absl::StrCat(dir, ": no such model directory (create one with "
                                                 "`interlace model init --config CONFIG.json --out DIR`)"));
  auto precision = model::parse_precision(precision_name);
  if (!precision.ok()) return precision.status();
  return Model::load(dir, *precision);
}

struct InitArgs {
  std::string config, out, dtype = "f32";
  uint64_t seed = 0;
};

struct ScoreArgs {
  std::string model, input, output, path = "prefill", precision = "fp32";
};

struct GenerateArgs {
  std::string model, prompt, precision = "fp32";
  int64_t max_new_tokens = 64;
  float temperature = 1.0f;
  uint64_t seed = 0;
};

int run_init(const InitArgs& a) {
  auto dtype = core::parse_dtype(a.dtype);
  if (!dtype.ok() || (*dtype != core::DType::kF32 && *dtype != core::DType::kBF16))
    return fail(absl::StrCat("--dtype must be f32 or bf16, got '", a.dtype, "'"));
  model::InitOptions o{.config_path = a.config, .out_dir = a.out, .seed = a.seed, .dtype = *dtype};
  if (auto st = model::init_model_dir(o); !st.ok()) return fail(st);
  auto config = model::load_config(a.out);
  if (!config.ok()) return fail(config.status());
  std::printf("wrote %s: %s, %lld layers, %.2fM parameters (%s)\n", a.out.c_str(),
              model::architecture_name(config->architecture).c_str(),
              static_cast<long long>(config->num_hidden_layers), config->parameter_count() / 1e6,
              core::dtype_name(*dtype));
  return 0;
}

int run_score(const ScoreArgs& a) {
  model::ScorePath path;
  if (a.path == "prefill") path = model::ScorePath::kPrefill;
  else if (a.path == "decode") path = model::ScorePath::kDecode;
  else return fail(absl::StrCat("--path must be prefill or decode, got '", a.path, "'"));
  auto m = open_model(a.model, a.precision);
  if (!m.ok()) return fail(m.status());
  auto rows = read_token_file(a.input, (*m)->vocab_size());
  if (!rows.ok()) return fail(rows.status());
  std::ofstream file_out;
  std::ostream* out = &std::cout;
  if (!a.output.empty()) {
    file_out.open(a.output, std::ios::trunc);
    if (!file_out) return fail(absl::StrCat(a.output, ": cannot create"));
    out = &file_out;
  }
  const auto t0 = std::chrono::steady_clock::now();
  int64_t done_tokens = 0;
  auto last_report = t0;
  for (size_t r = 0; r < rows->size(); ++r) {
    std::vector<float> lp = (*m)->score((*rows)[r], path);
    nlohmann::json arr = nlohmann::json::array();
    for (size_t i = 0; i < lp.size(); ++i) {
      if (i == 0) arr.push_back(nullptr);
      else arr.push_back(lp[i]);
    }
    *out << nlohmann::json{{"logprobs", arr}}.dump() << "\n";
    done_tokens += static_cast<int64_t>((*rows)[r].size());
    const auto now = std::chrono::steady_clock::now();
    if (now - last_report > std::chrono::seconds(2) || (r + 1 == rows->size() && rows->size() > 1)) {
      const double secs = std::chrono::duration<double>(now - t0).count();
      std::fprintf(stderr, "\rscored %zu/%zu sequences, %lld tokens, %.0f tokens/s", r + 1, rows->size(),
                   static_cast<long long>(done_tokens), done_tokens / std::max(secs, 1e-9));
      last_report = now;
    }
  }
  if (rows->size() > 1) std::fprintf(stderr, "\n");
  out->flush();
  if (!*out) return fail("writing the output failed");
  return 0;
}

int run_generate(const GenerateArgs& a) {
  auto m = open_model(a.model, a.precision);
  if (!m.ok()) return fail(m.status());
  auto tok = model::load_tokenizer(a.model);
  if (!tok.ok()) return fail(tok.status());
  if ((*tok)->vocab_size() > (*m)->vocab_size())
    return fail(absl::StrCat(a.model, ": tokenizer has ", (*tok)->vocab_size(), " tokens but config.json vocab_size is ",
                             (*m)->vocab_size()));
  std::vector<int32_t> prompt = (*tok)->encode(a.prompt);
  if (prompt.empty()) return fail("--prompt is empty");
  model::GenerateOptions o{.max_new_tokens = a.max_new_tokens, .temperature = a.temperature, .seed = a.seed, .stop_tokens = {},
                           .vocab_limit = (*tok)->vocab_size()};
  if (auto eos = (*tok)->special_id("<|endoftext|>")) o.stop_tokens.push_back(*eos);
  if (auto eot = (*tok)->special_id("<|im_end|>")) o.stop_tokens.push_back(*eot);
  std::fputs(a.prompt.c_str(), stdout);
  const auto t0 = std::chrono::steady_clock::now();
  model::GenerateResult r = model::generate(**m, prompt, o, [&](int32_t t) {
    if (std::find(o.stop_tokens.begin(), o.stop_tokens.end(), t) != o.stop_tokens.end()) return;
    const std::string text = (*tok)->decode({&t, 1});
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double sum_lp = 0;
  for (float lp : r.logprobs) sum_lp += lp;
  std::printf("\n");
  std::fprintf(stderr, "generated %zu tokens in %.2fs (%.1f tokens/s, prompt %zu tokens), %s, mean logprob %.3f\n",
               r.tokens.size(), secs, r.tokens.size() / std::max(secs, 1e-9), prompt.size(),
               r.stopped ? "stopped on a stop token" : "reached --max-new-tokens",
               r.tokens.empty() ? 0.0 : sum_lp / r.tokens.size());
  return 0;
}

}  // namespace

struct TokenizeArgs {
  std::string model, text, chat, output = "table";
  bool specials = false;
};

// --chat FILE: the conversation through the model's own chat template (or
// Interlace's), as the model will see it.
absl::StatusOr<std::string> render_chat(const TokenizeArgs& a, nlohmann::ordered_json& report) {
  auto file = core::read_file(a.chat);
  if (!file.ok()) return file.status();
  const nlohmann::ordered_json conversation = nlohmann::ordered_json::parse(*file, nullptr, false);
  if (conversation.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(a.chat, ": not JSON (expected {\"messages\": [...]} or a list of messages)"));
  auto tmpl = model::JinjaChatTemplate::load(a.model);
  if (!tmpl.ok()) return tmpl.status();
  auto text = tmpl->render(conversation);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(a.chat, ": ", text.status().message()));
  auto rewritten = tmpl->first_rerendered_message(conversation);
  if (!rewritten.ok()) return rewritten.status();
  report["template"] = tmpl->origin();
  report["text"] = *text;
  report["rewrites_history_at_message"] = rewritten->has_value() ? nlohmann::ordered_json(**rewritten) : nlohmann::ordered_json();
  return *text;
}

// What the model will see: ids and their pieces.
int run_tokenize(const TokenizeArgs& a) {
  auto tokenizer = model::load_tokenizer(a.model);
  if (!tokenizer.ok()) return fail(tokenizer.status());
  if (!a.chat.empty() && !a.text.empty()) {
    std::fprintf(stderr, "error: --text and --chat both given; give one (see interlace tokenize --help)\n");
    return 2;
  }
  nlohmann::ordered_json chat_report;
  std::string text = a.text;
  if (!a.chat.empty()) {
    auto rendered = render_chat(a, chat_report);
    if (!rendered.ok()) return fail(rendered.status());
    text = *rendered;
  } else if (text.empty()) {
    std::ostringstream in;
    in << std::cin.rdbuf();
    text = in.str();
  }
  const auto* bpe = dynamic_cast<const model::BpeTokenizer*>(tokenizer->get());
  const bool specials = a.specials || !a.chat.empty();
  const std::vector<int32_t> ids = specials ? (*tokenizer)->encode_with_specials(text) : (*tokenizer)->encode(text);
  nlohmann::json pieces = nlohmann::json::array();
  for (int32_t id : ids) {
    const int32_t one[1] = {id};
    pieces.push_back(bpe ? bpe->piece(id) : (*tokenizer)->decode(one));
  }
  if (a.output == "json") {
    nlohmann::ordered_json out = {{"ids", ids}, {"pieces", pieces}, {"tokens", ids.size()}, {"bytes", text.size()}};
    for (const auto& [k, v] : chat_report.items()) out[k] = v;
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  for (size_t i = 0; i < ids.size(); ++i)
    std::printf("%8d  %s\n", ids[i], nlohmann::json(pieces[i]).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  std::fprintf(stderr, "%zu tokens for %zu bytes\n", ids.size(), text.size());
  if (!a.chat.empty()) {
    std::fprintf(stderr, "rendered with %s's chat template\n", chat_report["template"].get<std::string>().c_str());
    if (!chat_report["rewrites_history_at_message"].is_null())
      std::fprintf(stderr,
                   "note: this template renders the earlier messages differently once message %d is added (for example,\n"
                   "it drops the reasoning of earlier turns), so this text is not what the model saw while it generated;\n"
                   "Interlace's agent loop appends tokens and never re-renders history\n",
                   chat_report["rewrites_history_at_message"].get<int>());
  }
  return 0;
}

void add_model_commands(CLI::App& app, Action& action) {
  auto tk = std::make_shared<TokenizeArgs>();
  CLI::App* tokenize = app.add_subcommand(
      "tokenize",
      "Show the ids and pieces a model's tokenizer makes of a text (only the tokenizer files of\n"
      "--model are read: tokenizer.json of a Hugging Face model, or Interlace's byte tokenizer).\n"
      "The text comes from --text or stdin. Special-token strings in it stay plain text unless\n"
      "--specials. Pieces are printed as the vocabulary spells them (byte-level: 'Ġ' is a space).\n"
      "Examples:\n"
      "  interlace tokenize --model ~/models/Qwen3-0.6B --text 'Hello, world'\n"
      "  echo '<|im_start|>user' | interlace tokenize --model ~/models/Qwen3-0.6B --specials -o json\n"
      "  interlace tokenize --model ~/models/Qwen3-0.6B --chat conversation.json\n"
      "--chat renders {\"messages\": [...], \"tools\": [...], \"add_generation_prompt\": true} (or a bare list\n"
      "of OpenAI-style messages) with the model's own chat template (tokenizer_config.json, run by\n"
      "Interlace's Jinja interpreter as transformers runs it), or Interlace's template for our models,\n"
      "then tokenizes the text with special tokens recognized.");
  tokenize->add_option("--model", tk->model, "model directory (its tokenizer.json or interlace_tokenizer.json)")->required();
  tokenize->add_option("--text", tk->text, "the text (default: stdin)");
  tokenize->add_option("--chat", tk->chat, "a conversation (JSON) to render with the model's chat template, then tokenize");
  tokenize->add_flag("--specials", tk->specials, "match special-token strings in the text as special tokens");
  tokenize->add_option("-o,--output", tk->output, "table or json ({\"ids\", \"pieces\"})")
      ->check(CLI::IsMember({"table", "json"}))->capture_default_str();
  tokenize->callback([&action, tk] { action = [tk] { return run_tokenize(*tk); }; });

  CLI::App* model = app.add_subcommand("model", "Create, score with and generate from models");
  model->require_subcommand(1);

  auto init_args = std::make_shared<InitArgs>();
  CLI::App* init = model->add_subcommand(
      "init", "Randomly initialise a model from a config.json, written in the Hugging Face layout\n"
              "(config.json, model.safetensors, interlace_tokenizer.json).\n"
              "Example: interlace model init --config examples/models/tiny-hybrid.json --out /tmp/tiny");
  init->add_option("--config", init_args->config, "config.json to initialise from")->required()->check(CLI::ExistingFile);
  init->add_option("--out", init_args->out, "directory to write (created)")->required();
  init->add_option("--seed", init_args->seed, "random seed")->capture_default_str();
  init->add_option("--dtype", init_args->dtype, "stored weight dtype: f32 or bf16")->capture_default_str();
  init->callback([&action, init_args] { action = [init_args] { return run_init(*init_args); }; });

  auto score_args = std::make_shared<ScoreArgs>();
  CLI::App* score = model->add_subcommand(
      "score", "Log-probabilities of token sequences.\n"
               "Each input line {\"tokens\":[...]} gives an output line {\"logprobs\":[null, lp1, ...]}\n"
               "where entry i is log p(token_i | tokens before i). Works on token ids alone.");
  score->add_option("--model", score_args->model, "model directory")->required();
  score->add_option("--input", score_args->input, "JSONL file of {\"tokens\": [...]}")->required();
  score->add_option("--output", score_args->output, "JSONL file to write (default: stdout)");
  score->add_option("--path", score_args->path,
                    "prefill (whole sequence at once) or decode (one token at a time, incremental)")
      ->capture_default_str();
  score->add_option("--precision", score_args->precision,
                    "precision profile: fp32, bf16, bf16-fp32head or key=dtype,...")
      ->capture_default_str();
  score->callback([&action, score_args] { action = [score_args] { return run_score(*score_args); }; });

  auto gen_args = std::make_shared<GenerateArgs>();
  CLI::App* gen = model->add_subcommand(
      "generate", "Generate text from a prompt (needs the model's tokenizer file).\n"
                  "Example: interlace model generate --model /tmp/tiny --prompt 'The answer is' --temperature 0");
  gen->add_option("--model", gen_args->model, "model directory")->required();
  gen->add_option("--prompt", gen_args->prompt, "prompt text")->required();
  gen->add_option("--max-new-tokens", gen_args->max_new_tokens, "tokens to generate at most")
      ->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  gen->add_option("--temperature", gen_args->temperature, "sampling temperature; 0 is greedy")
      ->capture_default_str()->check(CLI::Range(0.0f, 100.0f));
  gen->add_option("--seed", gen_args->seed, "sampling seed (same seed, same output)")->capture_default_str();
  gen->add_option("--precision", gen_args->precision, "precision profile")->capture_default_str();
  gen->callback([&action, gen_args] { action = [gen_args] { return run_generate(*gen_args); }; });
}

}  // namespace interlace::cli
