#include "interlace/model/jinja_chat_template.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "interlace/core/file_util.h"
#include "interlace_chat_template.inc"  // generated from model/templates/interlace_chat.jinja

namespace interlace::model {

using ojson = nlohmann::ordered_json;

const std::string& interlace_chat_template_source() {
  static const std::string source = kInterlaceChatTemplate;
  return source;
}

JinjaChatTemplate JinjaChatTemplate::interlace() {
  auto t = jinja::Template::parse(interlace_chat_template_source(), "interlace chat template");
  if (!t.ok()) std::abort();  // the shipped template parses; its test would have failed
  return JinjaChatTemplate(*t, ojson::object(), "interlace");
}

absl::StatusOr<JinjaChatTemplate> JinjaChatTemplate::load(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  if (!std::filesystem::exists(path)) return interlace();
  auto text = core::read_file(path);
  if (!text.ok()) return text.status();
  const ojson config = ojson::parse(*text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  if (!config.contains("chat_template")) return interlace();
  std::string source;
  const ojson& ct = config["chat_template"];
  if (ct.is_string()) {
    source = ct.get<std::string>();
  } else if (ct.is_array()) {
    for (const ojson& named : ct)
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") && named["template"].is_string())
        source = named["template"].get<std::string>();
    if (source.empty())
      return absl::InvalidArgumentError(absl::StrCat(path, ": chat_template is a list without a template named \"default\""));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, ": chat_template must be a string or a list of {name, template}"));
  }
  // The special tokens transformers passes to the template: strings, or
  // AddedToken objects whose "content" is the string.
  ojson variables = ojson::object();
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (!config.contains(key)) continue;
    const ojson& v = config[key];
    if (v.is_string()) variables[key] = v;
    else if (v.is_object() && v.contains("content") && v["content"].is_string()) variables[key] = v["content"];
  }
  if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array())
    variables["additional_special_tokens"] = config["additional_special_tokens"];
  return from_source(source, std::move(variables), path);
}

absl::StatusOr<JinjaChatTemplate> JinjaChatTemplate::from_source(std::string_view source, ojson variables, std::string origin) {
  auto t = jinja::Template::parse(source, absl::StrCat(origin, ": chat_template"));
  if (!t.ok()) return t.status();
  return JinjaChatTemplate(*t, std::move(variables), std::move(origin));
}

absl::StatusOr<std::string> JinjaChatTemplate::render(const ojson& conversation) const {
  ojson context = variables_;
  if (conversation.is_array()) {
    context["messages"] = conversation;
  } else if (conversation.is_object() && conversation.contains("messages") && conversation["messages"].is_array()) {
    for (const auto& [k, v] : conversation.items()) context[k] = v;
  } else {
    return absl::InvalidArgumentError("a conversation is a list of messages or an object with a \"messages\" list");
  }
  if (!context.contains("add_generation_prompt")) context["add_generation_prompt"] = false;
  return template_.render(context);
}

absl::StatusOr<std::optional<size_t>> JinjaChatTemplate::first_rerendered_message(const ojson& conversation) const {
  const ojson& messages = conversation.is_array() ? conversation : conversation.value("messages", ojson::array());
  ojson partial = conversation.is_object() ? conversation : ojson{{"messages", conversation}};
  partial["add_generation_prompt"] = false;
  std::string previous;
  for (size_t k = 1; k <= messages.size(); ++k) {
    partial["messages"] = ojson(std::vector<ojson>(messages.begin(), messages.begin() + long(k)));
    auto text = render(partial);
    if (!text.ok()) return text.status();
    if (!text->starts_with(previous)) return k - 1;
    previous = std::move(*text);
  }
  return std::nullopt;
}

}  // namespace interlace::model
