// Chat requests (JSON bodies from any client of the gateway) and model output
// (any tokens a model may generate): a request parses to a prompt or an error
// naming the field; any token sequence streams to deltas and parses to a
// message; nothing crashes, hangs or allocates without bound.
#include <cstdint>
#include <optional>
#include <string>

#include "interlace/model/chat_template.h"
#include "interlace/model/tokenizer.h"
#include "interlace/serving/openai_api.h"

using namespace interlace;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const model::ByteTokenizer tokenizer;
  static const model::ChatTemplate tmpl = *model::ChatTemplate::create(tokenizer);
  static const serving::ServedModel served = [] {
    serving::ServedModel m;
    m.name = "fuzz";
    m.max_model_len = 4096;
    m.tokenizer = &tokenizer;
    m.tokens_template = &tmpl;
    m.stop_tokens = {*tokenizer.special_id("<|im_end|>")};
    return m;
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const serving::json body = serving::json::parse(text, nullptr, false);
  if (!body.is_discarded()) {
    auto parsed = serving::parse_chat_request(body, served);
    if (auto* r = std::get_if<serving::ChatRequest>(&parsed)) (void)serving::chat_prompt(*r, served);
  }
  // The same bytes as generated tokens (ids over the whole vocabulary).
  std::vector<int32_t> tokens;
  for (size_t i = 0; i + 1 < size; i += 2)
    tokens.push_back(int32_t((data[i] | (data[i + 1] << 8)) % tokenizer.vocab_size()));
  (void)serving::assistant_message(tokens, served, true);
  serving::ChatStreamer streamer(served, size % 2 == 0, "call_");
  for (size_t at = 0; at < tokens.size(); at += 3)
    (void)streamer.push(std::span<const int32_t>(tokens).subspan(at, std::min<size_t>(3, tokens.size() - at)));
  (void)streamer.finish();
  return 0;
}
