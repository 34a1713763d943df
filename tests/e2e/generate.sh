#!/usr/bin/env bash
# The `slm generate` contract that scripts rely on: JSON fields, streaming
# text equal to the JSON text, seeds, stop strings, logprobs, context limits.
source "$(dirname "$0")/lib.sh"
require_tokenizers

model="$SLM_WORK/generate-model"
"$SLM_BIN" create --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --init-std 0.3 \
  --max-position 256 --tokenizer "$TOKENIZERS/tokenizer-llama2/models" --seed 11 --out "$model" 2>/dev/null

run() { "$SLM_BIN" generate -m "$model" "$@"; }

run -p "Once upon a time" -n 16 --temperature 0 --ignore-eos --logprobs 3 --output-format json > "$SLM_WORK/greedy.json"
[ "$(json_get "$SLM_WORK/greedy.json" 'len(j["tokens"])')" = 16 ] && pass "16 tokens generated" || fail "token count"
[ "$(json_get "$SLM_WORK/greedy.json" 'j["finish_reason"]')" = length ] && pass "finish_reason length" || fail "finish_reason"

# Embedding rows past the tokenizer's vocabulary (as padded Hugging Face
# checkpoints have) are never sampled: half of this model's ids have no text.
padded="$SLM_WORK/padded-model"
"$SLM_BIN" create --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --init-std 0.3 \
  --tokenizer "$TOKENIZERS/tokenizer-llama2/models" --vocab 64000 --seed 12 --out "$padded" 2>/dev/null
if "$SLM_BIN" generate -m "$padded" -p "Once" -n 64 --temperature 1.5 --ignore-eos --seed 3 --output-format json \
    > "$SLM_WORK/padded.json" 2>"$SLM_WORK/padded.err" \
  && [ "$(json_get "$SLM_WORK/padded.json" 'len(j["tokens"]) == 64 and max(j["tokens"]) < 32000')" = True ]; then
  pass "ids past the tokenizer's vocabulary are never sampled"
else
  fail "padded vocabulary: $(cat "$SLM_WORK/padded.err")"
fi
[ "$(json_get "$SLM_WORK/greedy.json" 'j["prompt_tokens"][0]')" = 1 ] && pass "prompt starts with BOS" || fail "BOS"
[ "$(json_get "$SLM_WORK/greedy.json" 'all(len(s) == 3 and s[0]["logprob"] >= s[1]["logprob"] >= s[2]["logprob"] and s[0]["logprob"] <= 0 for s in j["logprobs"])')" = True ] \
  && pass "logprobs: 3 per step, sorted, <= 0" || fail "logprobs shape"
[ "$(json_get "$SLM_WORK/greedy.json" 'all(s[0]["id"] == t for s, t in zip(j["logprobs"], j["tokens"]))')" = True ] \
  && pass "greedy picks the most likely token" || fail "greedy vs logprobs"
for key in load_s prefill_tokens_per_s decode_tokens_per_s; do
  [ "$(json_get "$SLM_WORK/greedy.json" "j['timings']['$key'] > 0")" = True ] && pass "timings.$key" || fail "timings.$key"
done

streamed=$(run -p "Once upon a time" -n 16 --temperature 0 --ignore-eos 2>/dev/null)
expected=$(json_get "$SLM_WORK/greedy.json" 'j["text"]')
[ "$streamed" = "$expected" ] && pass "streamed text equals the JSON text" || fail "streamed '$streamed' != json '$expected'"

a=$(run -p "Hello" -n 12 --temperature 1.0 --seed 5 --ignore-eos --output-format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
b=$(run -p "Hello" -n 12 --temperature 1.0 --seed 5 --ignore-eos --output-format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
c=$(run -p "Hello" -n 12 --temperature 1.0 --seed 6 --ignore-eos --output-format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
[ "$a" = "$b" ] && pass "same seed, same sample" || fail "seed 5 gave $a then $b"
[ "$a" != "$c" ] && pass "another seed, another sample" || fail "seeds 5 and 6 both gave $a"

# A stop string taken from the middle of the greedy text ends generation just before it.
stop=$(python3 -c 'import sys; t=sys.argv[1]; print(t[len(t)//2:len(t)//2+3])' "$expected")
run -p "Once upon a time" -n 16 --temperature 0 --ignore-eos --stop "$stop" --output-format json > "$SLM_WORK/stop.json"
[ "$(json_get "$SLM_WORK/stop.json" 'j["finish_reason"]')" = stop ] && pass "finish_reason stop" || fail "stop reason"
[ "$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); full=sys.argv[2]; stop=sys.argv[3]; print(stop not in j["text"] and full.startswith(j["text"]) and full[len(j["text"]):].startswith(stop))' "$SLM_WORK/stop.json" "$expected" "$stop")" = True ] \
  && pass "text ends right before the stop string" || fail "stop string handling"

long=$(python3 -c 'print("word " * 400)')
if run -p "$long" -n 4 > /dev/null 2> "$SLM_WORK/long.err"; then
  fail "a prompt longer than the context was accepted"
else
  grep -q "context" "$SLM_WORK/long.err" && pass "too-long prompt: $(cat "$SLM_WORK/long.err")" || fail "message: $(cat "$SLM_WORK/long.err")"
fi
run -p "$long" -n 4 --truncate --output-format json > "$SLM_WORK/truncated.json" \
  && [ "$(json_get "$SLM_WORK/truncated.json" 'len(j["prompt_tokens"]) <= 252')" = True ] \
  && pass "--truncate keeps the end of the prompt" || fail "--truncate"

"$SLM_BIN" perplexity -m "$model" -f "$SOURCE_DIR/README.md" --ctx 128 --output-format json > "$SLM_WORK/ppl.json"
[ "$(json_get "$SLM_WORK/ppl.json" 'j["tokens"] > 100 and abs(__import__("math").exp(j["mean_nll"]) - j["perplexity"]) < 1e-6 * j["perplexity"]')" = True ] \
  && pass "perplexity over README.md" || fail "perplexity"

"$SLM_BIN" info -m "$model" --output-format json > "$SLM_WORK/info.json"
[ "$(json_get "$SLM_WORK/info.json" 'j["model_type"] == "llama" and j["tokenizer"]["vocab_size"] == 32000')" = True ] \
  && pass "info" || fail "info"

# The default thread count leaves out a core another process keeps busy
# (a thread sharing it would stall the others at every barrier).
if [ "$(nproc)" -ge 2 ]; then
  yes > /dev/null &
  busy=$!
  sleep 0.3
  "$SLM_BIN" bench -m "$model" -p 4 -n 4 -r 1 --output-format json > "$SLM_WORK/busy.json"
  kill "$busy"
  [ "$(json_get "$SLM_WORK/busy.json" "j['threads'] < $(nproc)")" = True ] \
    && pass "beside a busy process: $(json_get "$SLM_WORK/busy.json" "j['threads']") of $(nproc) threads" \
    || fail "beside a busy process the default took $(json_get "$SLM_WORK/busy.json" "j['threads']") threads"
fi

# --help shows the defaults a user would otherwise have to guess.
help="$("$SLM_BIN" generate --help; "$SLM_BIN" finetune --help)"
grep -q -- "-n,--max-new-tokens INT:NONNEGATIVE=128" <<<"$help" && grep -q -- "--lr FLOAT:POSITIVE=0.0002" <<<"$help" \
  && grep -q -- "--lora-r INT:POSITIVE=8" <<<"$help" && pass "--help shows defaults" || fail "--help lacks defaults"

# --batch-file: every line through one engine, one result per line in input
# order, each the object the same prompt alone prints (same seed, same text).
cat > "$SLM_WORK/batch.jsonl" <<'JSONL'
{"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0}
{"prompt": "Hello", "max_tokens": 12, "temperature": 1.0, "seed": 5}
{"prompt": "The weather today is", "max_tokens": 9, "temperature": 0.8, "top_p": 0.9, "seed": 3, "stop": ["xyz"]}
{"prompt": 42}
JSONL
if run --batch-file "$SLM_WORK/batch.jsonl" --ignore-eos --logprobs 3 > "$SLM_WORK/batch.out"; then
  fail "a bad line should make the batch exit 1"
else
  pass "a bad line exits 1"
fi
[ "$(wc -l < "$SLM_WORK/batch.out")" = 4 ] && pass "one result per input line" || fail "$(wc -l < "$SLM_WORK/batch.out") result lines"
alone() { run -p "$1" -n "$2" --temperature "$3" --seed "${4:-0}" ${5:+--top-p $5} --ignore-eos --logprobs 3 --output-format json; }
i=0
while IFS='|' read -r prompt n temp seed top_p; do
  i=$((i + 1))
  alone "$prompt" "$n" "$temp" "$seed" "$top_p" > "$SLM_WORK/alone$i.json"
  [ "$(python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.loads(open(sys.argv[2]).read().splitlines()[int(sys.argv[3])]); print(a["tokens"] == b["tokens"] and a["text"] == b["text"] and a["finish_reason"] == b["finish_reason"])' "$SLM_WORK/alone$i.json" "$SLM_WORK/batch.out" $((i - 1)))" = True ] \
    && pass "batch line $i equals the prompt alone" || fail "batch line $i differs from the prompt alone"
done <<'ROWS'
Once upon a time|16|0|0|
Hello|12|1.0|5|
The weather today is|9|0.8|3|0.9
ROWS
[ "$(python3 -c 'import json,sys; print("prompt" in json.loads(open(sys.argv[1]).read().splitlines()[3])["error"])' "$SLM_WORK/batch.out")" = True ] \
  && pass "the bad line gets an error naming the field" || fail "bad line error"

finish
