// The real `openai` npm client against Interlace's gateway:
//   node client.mjs BASE_URL TOKEN MODEL
// Each check prints one line; any failure exits 1.
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
let failures = 0;
function check(ok, what, detail = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${ok || !detail ? "" : ": " + detail}`);
  if (!ok) failures++;
}
async function metric(name) {
  const text = await (await fetch(baseURL.replace(/\/v1$/, "") + "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.split(" ")[1]) : NaN;
}
const question = { role: "user", content: "What is 2+3? Use the calculator." };
// Ready once the gateway's worker is connected.
for (let i = 0; i < 200; i++) {
  const r = await fetch(baseURL.replace(/\/v1$/, "") + "/readyz").catch(() => null);
  if (r?.ok) break;
  await new Promise((r) => setTimeout(r, 50));
}

// Models.
const models = await client.models.list();
check(models.data.some((m) => m.id === model), "models.list names the served model", JSON.stringify(models.data));

// A whole answer.
const whole = await client.chat.completions.create({ model, messages: [question], max_tokens: 16, temperature: 0 });
check(whole.object === "chat.completion" && whole.choices[0].message.role === "assistant", "chat: a whole answer");
check(whole.usage.total_tokens === whole.usage.prompt_tokens + whole.usage.completion_tokens, "chat: usage adds up");

// Streamed: deltas, a finish reason, a usage chunk; the same text as the whole greedy answer.
const stream = await client.chat.completions.create({
  model, messages: [question], max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let text = "", finish = null, usage = null, chunks = 0;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.delta.content ?? "";
    finish = c.finish_reason ?? finish;
  }
}
check(chunks > 2 && finish !== null && usage !== null, "chat stream: chunks, a finish reason and usage", `${chunks} ${finish}`);
check(text === (whole.choices[0].message.content ?? ""), "chat stream: the same text as the whole answer",
      JSON.stringify([text, whole.choices[0].message.content]));
check(usage.prompt_tokens_details.cached_tokens >= usage.prompt_tokens - 16, "chat stream: the repeated prompt came from the cache",
      JSON.stringify(usage));

// Two turns with a tool call and its result, reasoning sent back under both names: turn two's prompt starts with turn one's.
const call = { id: "call_0", type: "function", function: { name: "calc", arguments: JSON.stringify({ expression: "2+3" }) } };
const turn1 = await client.chat.completions.create({ model, messages: [question], max_tokens: 8 });
const tools = [{ type: "function", function: { name: "calc", description: "Evaluates arithmetic", parameters: { type: "object", properties: { expression: { type: "string" } } } } }];
for (const key of ["reasoning_content", "reasoning"]) {
  const back = { role: "assistant", content: "", tool_calls: [call], [key]: "I should call the tool." };
  const turn2 = await client.chat.completions.create({
    model, tools, max_tokens: 8,
    messages: [question, back, { role: "tool", tool_call_id: "call_0", content: "5" }, { role: "user", content: "So?" }],
  });
  check(turn2.usage.prompt_tokens_details.cached_tokens >= turn1.usage.prompt_tokens - 16,
        `two turns with a tool call (${key}): cached tokens on turn two`, JSON.stringify([turn1.usage, turn2.usage]));
}

// n > 1.
const many = await client.chat.completions.create({ model, messages: [question], max_tokens: 4, n: 3 });
check(many.choices.length === 3 && many.choices.every((c, i) => c.index === i), "n = 3 gives three choices");

// A stop string ends the text at its first match.
const free = await client.completions.create({ model, prompt: "abc", max_tokens: 40, temperature: 0, ignore_eos: true });
const ascii = [...free.choices[0].text].slice(1).find((ch, i, all) => ch > " " && ch < "\x7f" && all.indexOf(ch) === i);
if (ascii) {
  const cut = await client.completions.create({ model, prompt: "abc", max_tokens: 40, temperature: 0, ignore_eos: true, stop: [ascii] });
  const want = free.choices[0].text.slice(0, free.choices[0].text.indexOf(ascii) + ascii.length);
  check(cut.choices[0].text === want && cut.choices[0].finish_reason === "stop", "a stop string ends the text at its match",
        JSON.stringify([cut.choices[0].text, want]));
}

// A client that goes away mid-stream: the gateway aborts its request.
const aborts = await metric("interlace_gateway_client_aborts_total");
const controller = new AbortController();
const long = await client.chat.completions.create(
  { model, messages: [question], max_tokens: 2000, ignore_eos: true, stream: true }, { signal: controller.signal });
let seen = 0;
try {
  for await (const _ of long) if (++seen === 3) controller.abort();
} catch (e) { /* the abort */ }
let after = aborts;
for (let i = 0; i < 100 && after <= aborts; i++) {
  await new Promise((r) => setTimeout(r, 50));
  after = await metric("interlace_gateway_client_aborts_total");
}
check(after === aborts + 1, "a client that hangs up mid-stream is aborted", `${aborts} -> ${after}`);

// Errors come back as the SDK's error classes with OpenAI's error objects.
async function expectError(what, status, fn) {
  try {
    await fn();
    check(false, what, "no error");
  } catch (e) {
    check(e.status === status && typeof e.error?.message === "string", what, `${e.status} ${e.message}`);
  }
}
await expectError("wrong key: 401", 401, () => new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).models.list());
await expectError("unknown model: 404", 404, () => client.chat.completions.create({ model: "gpt-9", messages: [question] }));
await expectError("bad temperature: 422", 422, () => client.chat.completions.create({ model, messages: [question], temperature: 9 }));
await expectError("no messages: 400", 400, () => client.chat.completions.create({ model, messages: [] }));
await expectError("too long: 413", 413, () => client.chat.completions.create({ model, messages: [question], max_tokens: 1000000 }));

console.log(failures ? `${failures} check(s) failed` : "the openai client works against the gateway");
process.exit(failures ? 1 : 0);
