// The Jinja interpreter: each construct chat templates use, with outputs
// worked out from Python's jinja2 under transformers' settings; and, when
// tests/tokenizer/check_chat_templates.sh has prepared them, thousands of
// generated conversations rendered by jinja2 itself (JinjaReference.*).
#include "interlace/model/jinja.h"
#include "interlace/model/chat_template.h"
#include "interlace/model/jinja_chat_template.h"
#include "interlace/model/tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace interlace::model::jinja {
namespace {

using ojson = nlohmann::ordered_json;

// An OpenAI-style message as Interlace's own Message.
Message to_message(const ojson& m) {
  Message out;
  const std::string role = m["role"];
  out.role = role == "system" ? Role::kSystem : role == "assistant" ? Role::kAssistant : role == "tool" ? Role::kTool : Role::kUser;
  out.content = m.value("content", "");
  out.thinking = m.value("reasoning_content", "");
  for (const ojson& call : m.value("tool_calls", ojson::array()))
    out.tool_calls.push_back({call["function"]["name"], nlohmann::json(call["function"]["arguments"])});
  return out;
}

std::string render(const std::string& source, const ojson& context = ojson::object()) {
  auto t = Template::parse(source);
  if (!t.ok()) return "PARSE ERROR: " + std::string(t.status().message());
  auto out = t->render(context);
  if (!out.ok()) return "ERROR: " + std::string(out.status().message());
  return *out;
}

TEST(Jinja, LoopScopesAreFreshEachIterationAndNamespacesCarryState) {
  EXPECT_EQ(render("{% for i in range(3) %}{% if i == 1 %}{% set x = 5 %}{% endif %}[{{ x }}]{% endfor %}"), "[][5][]");
  EXPECT_EQ(render("{% set x = 1 %}{% for i in range(3) %}{% if i == 1 %}{% set x = 5 %}{% endif %}[{{ x }}]{% endfor %}{{x}}"),
            "[1][5][1]1");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6");
  EXPECT_EQ(render("{% for a in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for x in [1,2,3,4] if x is even %}{{ loop.index }}/{{ loop.length }}:{{ x }} {% endfor %}"), "1/2:2 2/2:4 ");
  EXPECT_EQ(render("{% for x in 'abc' %}{{ loop.revindex0 }}{{ loop.cycle('-', '+') }}{% if loop.last %}!{% endif %}{% endfor %}"),
            "2-1+0-!");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {{"d", {{"b", 1}, {"a", 2}}}}), "b=1;a=2;");
  EXPECT_EQ(render("{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}"),
            "02");
}

TEST(Jinja, WhitespaceControlFollowsTrimAndLstripBlocks) {
  EXPECT_EQ(render("  {% if true %}\n  x\n  {% endif %}\n  y\n"), "  x\n  y");
  EXPECT_EQ(render("a {#c#}\n  {# d #}\nb"), "a b");
  EXPECT_EQ(render("a  {%- if true -%}  \n b {%+ endif %}"), "ab ");
  EXPECT_EQ(render("{{ 'x' }}\n{{- ' y' }}  \n"), "x y  ");
  EXPECT_EQ(render("{% raw %}{{ not evaluated }}{% endraw %}"), "{{ not evaluated }}");
}

TEST(Jinja, ExpressionsFollowPython) {
  EXPECT_EQ(render("{{ 'a' ~ none }}{{ 3 // 2 }}{{ -7 // 2 }}{{ -7 % 3 }}{{ 7 / 2 }}{{ 2 ** 10 }}{{ 'ab' * 2 }}"), "aNone1-423.51024abab");
  EXPECT_EQ(render("{{ 'abc'[::-1] }}{{ [1,2,3][1:] }}{{ 'h\u00e9llo'[1] }}{{ 'h\u00e9llo'|length }}"), "cba[2, 3]\u00e95");
  EXPECT_EQ(render("{{ True + 1 }}{{ 1 == 1.0 }}{{ none }}{{ 1.0 }}{{ 1e20 }}{{ 0.00001 }}{{ 123456.75 }}"), "2TrueNone1.01e+201e-05123456.75");
  EXPECT_EQ(render("{{ [1, 'a', none, true] }}{{ {'a': \"it's\"} }}"), "[1, 'a', None, True]{'a': \"it's\"}");
  EXPECT_EQ(render("{{ 'x'|upper if true }}|{{ 'y' if false }}|{{ 1 if 0 else 2 }}"), "X||2");
  EXPECT_EQ(render("{{ -x|abs }}{{ 'a' + 'b'|upper }}{{ not 1 == 2 }}{{ 1 < 2 < 3 }}{{ 'b' in 'abc' }}{{ 3 not in [1] }}", {{"x", 4}}),
            "4aBTrueTrueTrueTrue");
  EXPECT_EQ(render("{{ x in missing }}{{ missing is defined }}{{ none.attr }}|{{ d.missing }}|", {{"d", ojson::object()}}), "FalseFalse||");
}

TEST(Jinja, StringMethodsAndFiltersFollowPython) {
  EXPECT_EQ(render("{{ ' a  b '.split() }}{{ 'a,b,,c'.split(',') }}{{ 'a b c'.split(' ', 1) }}{{ 'a,b,c'.rsplit(',', 1) }}"),
            "['a', 'b']['a', 'b', '', 'c']['a', 'b c']['a,b', 'c']");
  EXPECT_EQ(render("[{{ '\\n\u3000x y\\t '.strip() }}][{{ 'xxaxx'.lstrip('x') }}][{{ 'ab\\n\\n'.rstrip('\\n') }}]"), "[x y][axx][ab]");
  EXPECT_EQ(render("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'aXa'.replace('a', 'b') }}{{ 'abcb'.find('b') }}"),
            "TrueTruebXb1");
  EXPECT_EQ(render("{{ '  t  '|trim }}|{{ [3, 1, 2]|sort|join(',') }}|{{ [1, 2]|first }}{{ [1, 2]|last }}|{{ 'hello world'|title }}"),
            "t|1,2,3|12|Hello World");
  EXPECT_EQ(render("{{ missing|default('d') }}{{ ''|default('e', true) }}{{ 'x'|default('f') }}"), "dex");
  EXPECT_EQ(render("{{ users|map(attribute='name')|join(', ') }}|{{ users|selectattr('admin')|list|length }}|"
                   "{{ [1, 2, 3, 4]|select('odd')|list }}|{{ [1, 2, 3]|reject('equalto', 2)|list }}",
                   {{"users", {{{"name", "ann"}, {"admin", true}}, {{"name", "bo"}, {"admin", false}}}}}),
            "ann, bo|1|[1, 3]|[1, 3]");
  EXPECT_EQ(render("{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}"), "a\n  b\n\n  c|  a\n  b");
  EXPECT_EQ(render("{{ '3'|int + 1 }}{{ 'x'|int }}{{ 2|float }}{{ [1, 2, 2]|unique|list }}{{ [1, 5, 3]|max }}{{ [1, 2]|sum }}"),
            "402.0[1, 2]53");
}

TEST(Jinja, TojsonIsPythonsJsonDumpsWithoutAsciiEscaping) {
  const ojson tool = {{"name", "f\u00e9"}, {"n", 1.5}, {"list", {1, nullptr, true}}, {"empty", ojson::object()}, {"q", "a\"b\\\n"}};
  EXPECT_EQ(render("{{ t|tojson }}", {{"t", tool}}),
            "{\"name\": \"f\u00e9\", \"n\": 1.5, \"list\": [1, null, true], \"empty\": {}, \"q\": \"a\\\"b\\\\\\n\"}");
  EXPECT_EQ(render("{{ {'b': [1, 2], 'a': {}}|tojson(indent=2) }}"), "{\n  \"b\": [\n    1,\n    2\n  ],\n  \"a\": {}\n}");
  EXPECT_EQ(render("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true, separators=(',', ':')) }}"), "{\"a\":2,\"b\":1}");
  EXPECT_EQ(render("{{ '\u00e9\U0001F600'|tojson(ensure_ascii=true) }}"), "\"\\u00e9\\ud83d\\ude00\"");
  EXPECT_NE(render("{{ missing|tojson }}").find("not JSON serializable"), std::string::npos);
}

TEST(Jinja, MacrosTakeDefaultsAndKeywordsAndSeeGlobals) {
  EXPECT_EQ(render("{% macro m(a, b=2) %}{{a}}-{{b}}-{{ g }}{% endmacro %}{{ m(1) }}|{{ m(1, b=3) }}", {{"g", "G"}}), "1-2-G|1-3-G");
  EXPECT_EQ(render("{% set s %}x{{ 1 + 1 }}{% endset %}[{{ s }}]"), "[x2]");
}

TEST(Jinja, ErrorsNameTheLineAndTheConstruct) {
  EXPECT_EQ(render("a\n{{ foo.bar }}"), "ERROR: template line 2: 'foo' is undefined");
  EXPECT_EQ(render("x\n\n{% if true %}{{ x|wordwrap }}{% endif %}"), "ERROR: template line 3: the filter 'wordwrap' is not supported by this interpreter");
  EXPECT_EQ(render("{% include 'x' %}"), "PARSE ERROR: template line 1: the statement {% include %} is not supported by this interpreter");
  EXPECT_EQ(render("{% if true %}x"), "PARSE ERROR: template line 1: the template ends inside a block; expected one of: elif, else, endif");
  EXPECT_EQ(render("{{ raise_exception('Only user and assistant roles') }}"),
            "ERROR: template line 1: the template raised an exception: Only user and assistant roles");
  EXPECT_EQ(render("{{ 1 + 'a' }}"), "ERROR: template line 1: unsupported operand types for +: 'int' and 'str'");
  EXPECT_EQ(render("{{ 'a' }"), "PARSE ERROR: template line 1: a tag opened here is never closed (}})");
  EXPECT_EQ(render("{% set ns = 1 %}{% set ns.x = 2 %}"), "ERROR: template line 1: cannot set 'x' on ns, which is not a namespace()");
}

TEST(Jinja, HostileTemplatesFailInsteadOfHangingOrCrashing) {
  EXPECT_NE(render("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}").find("limit of 1000000 steps"),
            std::string::npos);
  EXPECT_NE(render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("macros nested more than 64 deep"), std::string::npos);
  EXPECT_NE(render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").find("nested more than 200 deep"),
            std::string::npos);
  EXPECT_NE(render("{{ 'ab' * 100000000000 }}").find("byte limit"), std::string::npos);
  EXPECT_NE(render("{% set ns = namespace(s='xy') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}").find("byte limit"),
            std::string::npos);
}

// Cases rendered by Python's jinja2 (tests/tokenizer/chat_reference.py): each
// line holds a template name, a context and the text jinja2 produced, or that
// it raised.
TEST(JinjaReference, GeneratedConversationsRenderAsJinja2Does) {
  const char* work = std::getenv("INTERLACE_CHAT_WORK");
  if (!work) GTEST_SKIP() << "INTERLACE_CHAT_WORK is not set (tests/tokenizer/check_chat_templates.sh sets it)";
  std::ifstream templates_file(std::string(work) + "/templates.json");
  ASSERT_TRUE(templates_file) << work << "/templates.json";
  const ojson templates = ojson::parse(templates_file);
  std::map<std::string, Template> compiled;
  for (const auto& [name, source] : templates.items()) {
    auto t = Template::parse(source.get<std::string>(), name);
    ASSERT_TRUE(t.ok()) << t.status();
    compiled.emplace(name, *t);
  }
  std::ifstream cases(std::string(work) + "/cases.jsonl");
  ASSERT_TRUE(cases) << work << "/cases.jsonl";
  // The Jinja form of Interlace's template is the one compiled in, and renders
  // what ChatTemplate renders token by token (byte tokenizer: text is bytes).
  ASSERT_EQ(templates.value("interlace", ""), interlace_chat_template_source())
      << "the reference ran another model/templates/interlace_chat.jinja than the one built in";
  const ByteTokenizer bytes;
  auto own = ChatTemplate::create(bytes);
  ASSERT_TRUE(own.ok());
  const JinjaChatTemplate interlace_jinja = JinjaChatTemplate::interlace();
  auto qwen3 = JinjaChatTemplate::from_source(templates.value("qwen3", ""), ojson::object(), "qwen3");
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  std::map<std::string, int> checked, errors, rerendered;
  int differ = 0;
  std::string line;
  while (std::getline(cases, line)) {
    const ojson c = ojson::parse(line);
    const std::string name = c["template"];
    auto out = compiled.at(name).render(c["context"]);
    ++checked[name];
    if (c.contains("error")) {
      ++errors[name];
      EXPECT_FALSE(out.ok()) << name << ": jinja2 raised " << c["error"] << " but this rendered " << *out << "\ncontext: " << c["context"].dump();
      continue;
    }
    if (name == "qwen3" || name == "interlace") {
      auto k = (name == "qwen3" ? *qwen3 : interlace_jinja).first_rerendered_message(c["context"]);
      ASSERT_TRUE(k.ok()) << k.status();
      if (name == "qwen3") {
        rerendered[name] += k->has_value();
      } else {
        EXPECT_FALSE(k->has_value()) << "Interlace's template rewrote history at message " << **k << " of " << c["context"].dump();
        std::vector<Message> messages;
        for (const ojson& m : c["context"]["messages"]) messages.push_back(to_message(m));
        const std::string tokens = bytes.decode(own->render(messages, c["context"]["add_generation_prompt"].get<bool>()));
        EXPECT_EQ(tokens, c["text"].get<std::string>()) << "ChatTemplate and its Jinja form differ on " << c["context"].dump();
      }
    }
    if (!out.ok() || *out != c["text"].get<std::string>()) {
      if (++differ <= 5)
        ADD_FAILURE() << name << " differs from jinja2\ncontext: " << c["context"].dump() << "\njinja2: " << c["text"].dump()
                      << "\nhere:   " << (out.ok() ? ojson(*out).dump() : std::string(out.status().message()));
    }
  }
  EXPECT_EQ(differ, 0);
  for (const auto& [name, n] : checked) {
    std::printf("%s: %d cases (%d where jinja2 raised), %s\n", name.c_str(), n, errors[name], differ ? "see the differences above" : "all identical");
    EXPECT_GE(n, 200) << name;
  }
  EXPECT_GE(checked.size(), 3u);
  std::printf("qwen3: %d conversations render their history differently once they go on (reasoning dropped)\n", rerendered["qwen3"]);
  EXPECT_GT(rerendered["qwen3"], 0) << "Qwen3's template drops earlier reasoning; the generated conversations should show it";
}

}  // namespace
}  // namespace interlace::model::jinja
