#!/usr/bin/python3
"""Renders generated conversations with Python's jinja2, set up as transformers
sets it up for chat templates, for tests/model/jinja_test.cc to compare with.

usage: chat_reference.py SEED COUNT OUT_DIR NAME=TEMPLATE_FILE_OR_TOKENIZER_CONFIG...

Writes OUT_DIR/templates.json ({name: source}) and OUT_DIR/cases.jsonl, one
line per conversation and template: {"template", "context", "text"} or
{"template", "context", "error"} when jinja2 raised. The conversations mix
system prompts, tools, assistant tool calls (arguments as objects or JSON
strings), tool results, reasoning (as reasoning_content or inside <think> in
the content), special-token strings, multilingual text, emoji, combining
characters and whitespace runs; a few are malformed on purpose.
"""
import json
import random
import sys
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def transformers_environment():
    # What transformers' _compile_jinja_template does (less its {% generation %}
    # tracker, which no template here uses).
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


WORDS = ["the", "calc", "tool", "answer", "Hello", "world", "x", "42", "3.14", "-7", "a", "AbC", "don't", "\"quoted\"",
         "back\\slash", "tab\there", "über", "naïve", "café", "日本語", "中文字符", "한국어", "Привет", "مرحبا", "שלום",
         "हिन्दी", "ελληνικά", "e\u0301", "n\u0303", "😀", "👩‍💻", "🇫🇷", "∑", "→", "\u00a0", "\u3000", "\u200b",
         "<think>", "</think>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>",
         "</tool_response>", "<|eot_id|>", "{{ not_jinja }}", "{% raw %}", "\\n", "A" * 40, "ﬁ", "İ", "ß"]
SPACES = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n ", "   ", "\r\n"]


def text(rng, max_words=12, allow_empty=True):
    n = rng.randint(0 if allow_empty else 1, max_words)
    out = ""
    for i in range(n):
        out += rng.choice(WORDS)
        if i + 1 < n or rng.random() < 0.2:
            out += rng.choice(SPACES)
    if rng.random() < 0.15:
        out = rng.choice(SPACES) + out
    return out


def json_value(rng, depth=0, floats=True):
    kinds = ["str", "int", "bool", "null"] + (["float"] if floats else []) + (["list", "dict"] if depth < 2 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return text(rng, 4)
    if kind == "int":
        return rng.randint(-10**6, 10**6)
    if kind == "float":
        return rng.choice([0.5, -2.25, 1e-7, 3.0, 1e20, 123.456, rng.uniform(-1000, 1000)])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [json_value(rng, depth + 1, floats) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "b", "expression", "city", "unit", "ключ", "z"]) + str(i): json_value(rng, depth + 1, floats)
            for i in range(rng.randint(0, 3))}


def tool(rng):
    name = rng.choice(["calc", "search", "get_weather", "lookup_кв", "run_code"])
    params = {f"p{i}": {"type": rng.choice(["string", "integer", "number", "boolean"]), "description": text(rng, 5)}
              for i in range(rng.randint(0, 3))}
    return {"type": "function", "function": {"name": name, "description": text(rng, 8),
                                             "parameters": {"type": "object", "properties": params,
                                                            "required": list(params)[:1]}}}


def tool_call(rng, floats):
    args = {k: json_value(rng, 1, floats) for k in rng.sample(["expression", "query", "city", "n", "ключ", "flag"], rng.randint(0, 3))}
    if floats and rng.random() < 0.2:
        args = json.dumps(args, ensure_ascii=rng.random() < 0.5)
    return {"type": "function", "function": {"name": rng.choice(["calc", "search", "get_weather"]), "arguments": args}}


def conversation(rng, style):
    """STYLE: 'plain' (role/content only), 'hf' (tools, tool calls, reasoning), 'interlace' (what Interlace's
    Message holds: no content-embedded think, object arguments)."""
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": text(rng)})
    for turn in range(rng.randint(1, 4)):
        messages.append({"role": "user", "content": text(rng, allow_empty=rng.random() < 0.1)})
        if style == "plain":
            if rng.random() < 0.8 or turn < 1:
                messages.append({"role": "assistant", "content": text(rng)})
            continue
        for step in range(rng.randint(0, 3)):
            m = {"role": "assistant", "content": text(rng)}
            if style == "hf" and rng.random() < 0.3:
                m["content"] = rng.choice(["", "<think>", "<think>\n"]) + text(rng) + "</think>" + rng.choice(["", "\n", "\n\n"]) + text(rng)
            if rng.random() < 0.4:
                m["reasoning_content"] = text(rng)
            calls = [tool_call(rng, style == "hf") for _ in range(rng.randint(0, 2))] if rng.random() < 0.6 else []
            if calls:
                m["tool_calls"] = calls
            messages.append(m)
            for _ in calls:
                messages.append({"role": "tool", "content": text(rng)})
            if not calls:
                break
    if style == "hf" and rng.random() < 0.1:
        messages.append({"role": "system", "content": text(rng)})  # a system message later on
    context = {"messages": messages, "add_generation_prompt": rng.random() < 0.6}
    if style == "hf":
        if rng.random() < 0.5:
            context["tools"] = [tool(rng) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.5:
            context["enable_thinking"] = rng.random() < 0.5
    if style == "plain":
        context["bos_token"] = "<|begin_of_text|>"
        context["eos_token"] = "<|end_of_text|>"
    if rng.random() < 0.02:  # malformed: jinja2 and Interlace must both refuse or both render
        rng.choice(messages).pop("content", None)
    return context


def load_template(path):
    if path.endswith(".json"):
        config = json.load(open(path, encoding="utf-8"))
        source = config["chat_template"]
        if isinstance(source, list):
            source = next(t["template"] for t in source if t["name"] == "default")
        return source
    return open(path, encoding="utf-8").read()


def main():
    seed, count, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    templates = dict(arg.split("=", 1) for arg in sys.argv[4:])
    sources = {name: load_template(path) for name, path in templates.items()}
    env = transformers_environment()
    compiled = {name: env.from_string(source) for name, source in sources.items()}
    style_of = {"llama3": "plain", "interlace": "interlace"}
    rng = random.Random(seed)
    with open(f"{out_dir}/templates.json", "w", encoding="utf-8") as f:
        json.dump(sources, f, ensure_ascii=False)
    counts = {}
    with open(f"{out_dir}/cases.jsonl", "w", encoding="utf-8") as f:
        for name, template in compiled.items():
            for _ in range(count):
                context = conversation(rng, style_of.get(name, "hf"))
                case = {"template": name, "context": context}
                try:
                    case["text"] = template.render(**context)
                except Exception as e:  # what jinja2 refuses, Interlace must refuse too
                    case["error"] = f"{type(e).__name__}: {e}"
                f.write(json.dumps(case, ensure_ascii=False) + "\n")
                counts[name] = counts.get(name, 0) + 1
    print(f"chat_reference: seed {seed}, jinja2 {jinja2.__version__}, " +
          ", ".join(f"{n}: {c} conversations" for n, c in counts.items()))


if __name__ == "__main__":
    main()
