// node corpus.mjs SEED OUT.jsonl ROOT: at least 5 MB of varied text, one
// {"text": ...} per line: this repository's sources in chunks, generated
// prose in many scripts, and edge cases (emoji sequences, combining marks,
// whitespace runs, digits, contractions, special-token strings). The prose
// and the mixes are drawn from SEED, so a failure can be rerun exactly.
import fs from "node:fs";
import path from "node:path";

const [seedArg, out, root] = process.argv.slice(2);
let state = BigInt(seedArg) | 1n;
const rand = () => {  // xorshift64*, enough to vary text
  state ^= state >> 12n; state ^= (state << 25n) & 0xffffffffffffffffn; state ^= state >> 27n;
  return Number(((state * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn) >> 11n) / 2 ** 53;
};
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => String.fromCodePoint(a + i));

const docs = [];
// This repository's sources, 1..8 KiB chunks.
const exts = new Set([".cc", ".h", ".md", ".py", ".mjs", ".yaml", ".sh", ".capnp", ".txt", ".cmake"]);
const walk = (dir) => {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith(".") || ["build", "node_modules", "runs"].some((p) => e.name.startsWith(p))) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (exts.has(path.extname(e.name)) && fs.statSync(p).size < 400000) {
      const text = fs.readFileSync(p, "utf8");
      for (let i = 0; i < text.length;) {
        const n = 1024 + Math.floor(rand() * 7168);
        docs.push(text.slice(i, i + n));
        i += n;
      }
    }
  }
};
walk(root);

const scripts = [
  range(0x61, 0x7a), range(0xe0, 0xff), range(0x430, 0x44f), range(0x3b1, 0x3c9), range(0x5d0, 0x5ea),
  range(0x627, 0x64a), range(0x905, 0x939), range(0xe01, 0xe2e), range(0x4e00, 0x4fff), range(0x3041, 0x3096),
  range(0xac00, 0xad00), range(0x10a0, 0x10d0),
];
const emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷", "🧑🏿‍💻", "✈︎", "🤖"];
const combining = ["e\u0301", "a\u0308", "n\u0303", "o\u0302\u0323", "\u1100\u1161\u11a8", "A\u030a", "i\u0307\u0301"];
const spaces = [" ", "  ", "\t", "\n", "\r\n", "\n\n\n", "\u00a0", "\u2028", "\u3000", "    ", " \t \n"];
const specials = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "<|endoftext|>",
                  "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|reserved_special_token_5|>", "<|", "|>"];
const bits = ["don't", "I'M", "we'll", "they'RE", "it's", "3.14159", "1234567890", "٣٤٥", "²³", "Ⅻ", "1,000,000",
              "https://example.com/a?b=c", "x += y;", "#!/bin/sh", "$ echo $HOME", "«quoted»", "—", "…", "\\n"];
const word = (alphabet) => Array.from({ length: 1 + Math.floor(rand() * 9) }, () => pick(alphabet)).join("");
let prose = 0;
while (prose < 3.5e6) {
  const alphabet = pick(scripts);
  const parts = [];
  for (let w = 0; w < 20 + Math.floor(rand() * 200); ++w) {
    const r = rand();
    parts.push(r < 0.75 ? word(alphabet) : r < 0.8 ? pick(emoji) : r < 0.85 ? pick(combining) + word(alphabet)
               : r < 0.9 ? pick(bits) : r < 0.93 ? pick(specials) : r < 0.96 ? String(Math.floor(rand() * 1e6)) : pick(spaces));
    parts.push(rand() < 0.8 ? " " : pick(spaces));
  }
  const doc = parts.join("");
  docs.push(doc);
  prose += Buffer.byteLength(doc);
}
// Whole-document edge cases.
docs.push("", " ", "\n", "   \n\n  \t", "a", "<think>", "<|im_start|>user\nhi<|im_end|>", "😀".repeat(50), "9".repeat(300),
          "e\u0301".repeat(40), " ".repeat(100) + "x", "x" + "\n".repeat(20));
const lines = docs.map((text) => JSON.stringify({ text }));
fs.writeFileSync(out, lines.join("\n") + "\n");
const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d), 0);
console.log(`corpus: ${docs.length} texts, ${(bytes / 1e6).toFixed(1)} MB of UTF-8 (seed ${seedArg})`);
