#!/usr/bin/env bash
# slm finetune as a user runs it: a tiny model with a real tokenizer learns a
# small JSON-lines dataset, writes a PEFT adapter folder and metrics, and bad
# input ends with one clear message and the documented exit code.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tokenizers

model="$SLM_WORK/model"
"$SLM_BIN" create --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --init-std 0.1 \
  --tokenizer "$TOKENIZERS/tokenizer-llama2/models" --seed 3 --out "$model" 2>/dev/null
python3 - "$SLM_WORK" <<'PY'
import json, sys
work = sys.argv[1]
with open(f"{work}/train.jsonl", "w") as f:
    for i in range(20):
        if i % 2:
            f.write(json.dumps({"prompt": f"Q: what is {i} plus {i}? A:", "completion": f" {2 * i}"}) + "\n")
        else:
            f.write(json.dumps({"text": f"The number {i} is written as {i}."}) + "\n")
with open(f"{work}/eval.jsonl", "w") as f:
    f.write(json.dumps({"text": "The number 4 is written as 4."}) + "\n")
PY

# The run's options; common leaves out the ones the resume checks below change.
common=(-m "$model" --eval-data "$SLM_WORK/eval.jsonl" --batch-size 4 --lora-r 4 --lora-alpha 8
  --lora-targets q_proj,v_proj,down_proj --eval-every 20 --threads 2)
args=("${common[@]}" --data "$SLM_WORK/train.jsonl" --max-steps 40 --lr 1e-2)
out="$SLM_WORK/adapter"
rm -rf "$out"
if "$SLM_BIN" finetune "${args[@]}" --out "$out" 2>"$SLM_WORK/finetune.err"; then
  pass "finetune exits 0"
else
  fail "finetune failed: $(tail -3 "$SLM_WORK/finetune.err")"
fi
# Not a terminal: a line per step; then the closing summary, with the final and best losses.
[ "$(grep -c '^step [0-9]*/40 ' "$SLM_WORK/finetune.err")" = 40 ] && grep -q '^  training loss [0-9.]* at the end, best [0-9.]* (step [0-9]*)$' "$SLM_WORK/finetune.err" \
  && grep -q '^  eval loss [0-9.]* at the end, best [0-9.]*$' "$SLM_WORK/finetune.err" \
  && pass "progress lines and the closing summary" || fail "progress/summary: $(tail -5 "$SLM_WORK/finetune.err")"
[ -f "$out/adapter_model.safetensors" ] && [ -f "$out/adapter_config.json" ] && pass "adapter folder written" \
  || fail "adapter files missing"
[ "$(json_get "$out/adapter_config.json" \
  'j["peft_type"] == "LORA" and j["r"] == 4 and j["lora_alpha"] == 8 and j["target_modules"] == ["q_proj", "v_proj", "down_proj"] and j["bias"] == "none" and j["task_type"] == "CAUSAL_LM"')" = True ] \
  && pass "adapter_config.json has the PEFT fields" || fail "adapter_config.json: $(cat "$out/adapter_config.json")"
keys=$(python3 - "$out/adapter_model.safetensors" <<'PY'
import json, struct, sys
blob = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
header = json.loads(blob[8:8 + n])
names = sorted(k for k in header if k != "__metadata__")
ok = len(names) == 12 and header["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]["shape"] == [4, 64] \
    and header["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"]["shape"] == [64, 4]
print("ok" if ok else names)
PY
)
[ "$keys" = ok ] && pass "adapter tensors under PEFT names and shapes" || fail "adapter tensors: $keys"
grep -q "<polyline" "$out/loss.svg" 2>/dev/null && pass "loss.svg written" || fail "loss.svg missing"
steps=$(grep -c '"loss"' "$out/metrics.jsonl" || true)
[ "$steps" = 40 ] && pass "metrics.jsonl has one line per step" || fail "metrics.jsonl has $steps step lines"
learned=$(python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
losses = [r["loss"] for r in rows if "loss" in r]
evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
print(losses[-1] < losses[0] - 2 and len(evals) == 2)
PY
)
[ "$learned" = True ] && pass "the loss falls and eval runs twice" || fail "loss did not fall: $(head -c 300 "$out/metrics.jsonl")"

# start_run OUT [options...]: a run of "${args[@]}" in the background ($pid),
# its messages in OUT.err. wait_for_steps OUT N: until OUT/metrics.jsonl logs N
# steps or the run ends.
start_run() {
  local dir=$1
  shift
  rm -rf "$dir"
  "$SLM_BIN" finetune "${args[@]}" --out "$dir" "$@" 2>"$dir.err" &
  pid=$!
}
steps_logged() {
  local n
  n=$(grep -c '"loss"' "$1/metrics.jsonl" 2>/dev/null) || true
  echo "${n:-0}"
}
wait_for_steps() {
  while kill -0 "$pid" 2>/dev/null && [ "$(steps_logged "$1")" -lt "$2" ]; do sleep 0.02; done
}
# Leaves the exit status of the run in $rc.
wait_run() {
  set +e
  wait "$pid"
  rc=$?
  set -e
}

# Interrupted (Ctrl-C, or a plain kill as a job scheduler sends) and resumed,
# the run ends with the same adapter as the uninterrupted one.
for signal in INT TERM; do
  resumed="$SLM_WORK/resumed-$signal"
  start_run "$resumed"
  wait_for_steps "$resumed" 3
  kill -"$signal" "$pid" 2>/dev/null || true
  wait_run
  code=$((128 + $(kill -l "$signal")))
  if [ "$rc" = "$code" ] && [ "$(steps_logged "$resumed")" -lt 40 ]; then
    grep -q "interrupted: checkpoint of step" "$resumed.err" && pass "SIG$signal saves a checkpoint (exit $code)" \
      || fail "SIG$signal ended the run without the checkpoint message: $(tail -2 "$resumed.err")"
    "$SLM_BIN" finetune "${args[@]}" --out "$resumed" --resume "$resumed" 2>"$resumed.resume.err" \
      || fail "resume after SIG$signal failed: $(tail -2 "$resumed.resume.err")"
    cmp -s "$out/adapter_model.safetensors" "$resumed/adapter_model.safetensors" \
      && pass "resumed after SIG$signal: the same adapter" || fail "adapter resumed after SIG$signal differs"
  else
    echo "note: the run ended (exit $rc) before SIG$signal could interrupt it"
  fi
done

# The layout: the trained adapter, metrics and plot, and the last checkpoint
# as one folder, nothing half-saved beside it.
for file in adapter_config.json adapter_model.safetensors optimizer.safetensors trainer_state.json data_state.json; do
  [ -f "$out/checkpoint/$file" ] || fail "no checkpoint/$file"
done
leftovers=$(ls "$out" | grep -v -x -e adapter_config.json -e adapter_model.safetensors -e checkpoint -e metrics.jsonl \
  -e loss.svg || true)
[ -z "$leftovers" ] && pass "--out holds the adapter, metrics.jsonl, loss.svg and checkpoint/" \
  || fail "--out also holds: $leftovers"

# Killed outright (SIGKILL, out of memory) after a --save-every checkpoint,
# then resumed: every step is logged once, with the uninterrupted run's loss,
# and loss.svg plots the whole run.
killed="$SLM_WORK/killed"
start_run "$killed" --save-every 5
wait_for_steps "$killed" 8
kill -KILL "$pid" 2>/dev/null || true
wait_run
if [ "$rc" = 137 ]; then
  "$SLM_BIN" finetune "${args[@]}" --save-every 5 --out "$killed" --resume "$killed" 2>"$killed.resume.err" \
    || fail "resume after SIGKILL failed: $(tail -2 "$killed.resume.err")"
  once=$(python3 - "$killed/metrics.jsonl" "$out/metrics.jsonl" <<'PY'
import json, sys
got, want = ([(r["step"], r.get("loss"), r.get("eval_loss")) for r in map(json.loads, open(p))] for p in sys.argv[1:3])
print("ok" if got == want else [step for step, _, _ in got])
PY
)
  [ "$once" = ok ] && pass "killed and resumed: metrics.jsonl logs each step once, as the uninterrupted run" \
    || fail "killed and resumed: metrics.jsonl steps $once"
  cmp -s "$out/loss.svg" "$killed/loss.svg" && pass "killed and resumed: loss.svg plots the whole run" \
    || fail "killed and resumed: loss.svg differs from the uninterrupted run's"
  cmp -s "$out/adapter_model.safetensors" "$killed/adapter_model.safetensors" \
    && pass "killed and resumed: the same adapter" || fail "adapter resumed after SIGKILL differs"
else
  echo "note: the run ended (exit $rc) before SIGKILL"
fi

# --resume refuses what would change the arithmetic, naming each difference
# with both values, unless --resume-override; and a run that ends before the
# checkpoint's step.
python3 -c "import sys; sys.stdout.write(open(sys.argv[1]).read() + '{\"text\": \"one more\"}\n')" \
  "$SLM_WORK/train.jsonl" >"$SLM_WORK/train-more.jsonl"
rm -rf "$SLM_WORK/changed"
set +e
"$SLM_BIN" finetune "${common[@]}" --data "$SLM_WORK/train-more.jsonl" --max-steps 40 --lr 2e-2 --seed 1 \
  --resume "$out" --out "$SLM_WORK/changed" 2>"$SLM_WORK/changed.err"
rc=$?
set -e
refused=True
for part in "--lr 0.01 (this run: 0.02)" "--seed 0 (this run: 1)" "--data 20 examples, fingerprint" \
  "(this run: 21 examples, fingerprint" "--resume-override"; do
  grep -qF -- "$part" "$SLM_WORK/changed.err" || refused=False
done
[ "$rc" = 1 ] && [ "$refused" = True ] && [ ! -e "$SLM_WORK/changed" ] \
  && pass "--resume refuses changed settings: $(tail -1 "$SLM_WORK/changed.err")" \
  || fail "--resume with changed settings: exit $rc, $(cat "$SLM_WORK/changed.err")"
if "$SLM_BIN" finetune "${common[@]}" --data "$SLM_WORK/train.jsonl" --max-steps 40 --lr 2e-2 --resume "$out" \
  --resume-override --out "$SLM_WORK/changed" 2>"$SLM_WORK/changed.err" \
  && grep -qF -- "--resume-override: --lr 0.01 (this run: 0.02)" "$SLM_WORK/changed.err"; then
  pass "--resume-override continues with this run's settings and says which"
else
  fail "--resume-override: $(cat "$SLM_WORK/changed.err")"
fi
set +e
"$SLM_BIN" finetune "${common[@]}" --data "$SLM_WORK/train.jsonl" --max-steps 30 --lr 1e-2 --resume "$out" \
  --out "$SLM_WORK/shorter" 2>"$SLM_WORK/shorter.err"
rc=$?
set -e
[ "$rc" = 1 ] && grep -qF "the checkpoint is at step 40, past this run's last step 30" "$SLM_WORK/shorter.err" \
  && pass "--resume refuses --max-steps below the checkpoint's step: $(tail -1 "$SLM_WORK/shorter.err")" \
  || fail "--resume with --max-steps 30: exit $rc, $(cat "$SLM_WORK/shorter.err")"

# slm merge: the merged folder, read by the PyTorch reference, predicts what the
# base plus the adapter (read from the PEFT files) predicts.
merged="$SLM_WORK/merged"
rm -rf "$merged"
if "$SLM_BIN" merge -m "$model" --adapter "$out" --out "$merged" 2>"$SLM_WORK/merge.err"; then
  pass "merge exits 0"
else
  fail "merge failed: $(cat "$SLM_WORK/merge.err")"
fi
[ -f "$merged/tokenizer.json" ] && [ -f "$merged/config.json" ] && pass "merged folder has config and tokenizer" \
  || fail "merged folder incomplete: $(ls "$merged")"
# merged_agrees BASE ADAPTER MERGED: "ok" when the merged folder, read by the
# PyTorch reference, predicts what the base plus the PEFT adapter predicts.
merged_agrees() {
  /usr/bin/python3 - "$1" "$2" "$3" "$SOURCE_DIR/tests/reference" <<'PY' 2>&1
import sys, torch
sys.path.insert(0, sys.argv[4])
from llama_reference import Reference
from lora_reference import LoraReference, read_adapter
base, adapter, merged = sys.argv[1:4]
config, pairs = read_adapter(adapter)
ids = [1, 450, 1353, 29871, 29946, 338, 3971, 408]
want = LoraReference(base, pairs, config["lora_alpha"] / config["r"])
with torch.no_grad():
    a = want.logits(ids)
b = Reference(merged).logits(ids)
print("ok" if float((a - b).abs().max()) < 1e-4 else f"max difference {float((a - b).abs().max())}")
PY
}
agree=$(merged_agrees "$model" "$out" "$merged")
[ "$agree" = ok ] && pass "merged model = base + adapter (PyTorch reference)" || fail "merged model differs: $agree"
# --dtype chooses the merged weights' type: every tensor of the file in bf16.
rm -rf "$SLM_WORK/merged-bf16"
"$SLM_BIN" merge -m "$model" --adapter "$out" --out "$SLM_WORK/merged-bf16" --dtype bf16 2>"$SLM_WORK/merge.err" \
  || fail "merge --dtype bf16: $(cat "$SLM_WORK/merge.err")"
dtypes=$(python3 - "$SLM_WORK/merged-bf16/model.safetensors" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
(size,) = struct.unpack("<Q", data[:8])
header = json.loads(data[8:8 + size])
print(" ".join(sorted({v["dtype"] for k, v in header.items() if k != "__metadata__"})))
PY
)
[ "$dtypes" = BF16 ] && pass "merge --dtype bf16 writes bf16 weights" || fail "merge --dtype bf16 wrote: $dtypes"
expect_merge_error() {
  set +e
  "$SLM_BIN" merge "$@" >/dev/null 2>"$SLM_WORK/err"
  local rc=$?
  set -e
  [ "$rc" = 1 ] && pass "merge refuses: $(head -c 120 "$SLM_WORK/err")" || fail "merge $*: exit $rc"
}
expect_merge_error -m "$model" --adapter "$SLM_WORK/nowhere" --out "$SLM_WORK/m2"
expect_merge_error -m "$model" --adapter "$out" --out "$model"

# --adapter applies the adapter at run time: generate and perplexity give what
# the merged model gives, and a bad folder is one message naming the file.
generate_json() {
  "$SLM_BIN" generate "$@" -p "The number 4 is" -n 8 --temperature 0 --ignore-eos --logprobs 3 \
    --output-format json --threads 2 2>"$SLM_WORK/generate.err"
}
generate_json -m "$model" --adapter "$out" >"$SLM_WORK/adapted.json" \
  || fail "generate --adapter: $(cat "$SLM_WORK/generate.err")"
generate_json -m "$merged" >"$SLM_WORK/merged.json" || fail "generate merged: $(cat "$SLM_WORK/generate.err")"
same=$(python3 - "$SLM_WORK/adapted.json" "$SLM_WORK/merged.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
worst = max(abs(x["logprob"] - y["logprob"]) for s, t in zip(a["logprobs"], b["logprobs"]) for x, y in zip(s, t))
ids = [[x["id"] for x in s] for s in a["logprobs"]] == [[x["id"] for x in s] for s in b["logprobs"]]
ok = a["tokens"] == b["tokens"] and ids and worst < 1e-4
print("ok" if ok else f"tokens {a['tokens']} vs {b['tokens']}, log-probabilities differ by {worst}")
PY
)
[ "$same" = ok ] && pass "generate --adapter = the merged model (tokens and log-probabilities)" \
  || fail "generate --adapter: $same"
printf 'The number 4 is written as 4. The number 6 is written as 6.\n' >"$SLM_WORK/score.txt"
score() { "$SLM_BIN" perplexity "$@" -f "$SLM_WORK/score.txt" --output-format json --threads 2 2>/dev/null; }
nll_adapted=$(score -m "$model" --adapter "$out")
nll_merged=$(score -m "$merged")
[ "$(python3 -c "import json,sys; a,b=(json.loads(x)['mean_nll'] for x in sys.argv[1:3]); print(abs(a-b) < 1e-5)" \
  "$nll_adapted" "$nll_merged")" = True ] && pass "perplexity --adapter = the merged model" \
  || fail "perplexity --adapter $nll_adapted, merged $nll_merged"
set +e
"$SLM_BIN" generate -m "$model" --adapter "$SLM_WORK/nowhere" -p "hi" -n 1 >/dev/null 2>"$SLM_WORK/err"
rc=$?
set -e
[ "$rc" = 1 ] && [ "$(wc -l <"$SLM_WORK/err")" = 1 ] && grep -qF "$SLM_WORK/nowhere/adapter_config.json" "$SLM_WORK/err" \
  && pass "generate --adapter refuses a missing folder: $(cat "$SLM_WORK/err")" \
  || fail "generate --adapter nowhere: exit $rc, $(cat "$SLM_WORK/err")"

# --full trains every weight and writes a model folder that slm and the
# PyTorch reference (transformers' layout) both load.
full="$SLM_WORK/full"
rm -rf "$full"
if "$SLM_BIN" finetune --full -m "$model" --data "$SLM_WORK/train.jsonl" --out "$full" --max-steps 30 --lr 3e-3 \
  --batch-size 4 --save-dtype bf16 --grad-checkpointing --threads 2 2>"$SLM_WORK/full.err"; then
  pass "finetune --full exits 0"
else
  fail "finetune --full failed: $(tail -3 "$SLM_WORK/full.err")"
fi
for file in config.json model.safetensors generation_config.json tokenizer.json tokenizer_config.json metrics.jsonl \
  loss.svg checkpoint/config.json checkpoint/model.safetensors checkpoint/optimizer.safetensors \
  checkpoint/trainer_state.json checkpoint/data_state.json; do
  [ -f "$full/$file" ] || fail "finetune --full did not write $file"
done
[ "$(json_get "$full/config.json" 'j["torch_dtype"]')" = bfloat16 ] && pass "--save-dtype bf16 is the folder's dtype" \
  || fail "config.json torch_dtype: $(json_get "$full/config.json" 'j.get("torch_dtype")')"
learned=$(python3 - "$full/metrics.jsonl" <<'PY'
import json, sys
losses = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
print(len(losses) == 30 and losses[-1] < losses[0] - 2)
PY
)
[ "$learned" = True ] && pass "finetune --full: the loss falls" || fail "finetune --full: $(head -c 300 "$full/metrics.jsonl")"
"$SLM_BIN" generate -m "$full" -p "The number" -n 4 --threads 2 >/dev/null 2>"$SLM_WORK/err" \
  && pass "slm generate runs the trained folder" || fail "generate -m full: $(cat "$SLM_WORK/err")"
loads=$(/usr/bin/python3 - "$full" "$SOURCE_DIR/tests/reference" <<'PY' 2>&1
import sys, torch
sys.path.insert(0, sys.argv[2])
from llama_reference import Reference
print("ok" if bool(torch.isfinite(Reference(sys.argv[1]).logits([1, 450, 1353])).all()) else "not finite")
PY
)
[ "$loads" = ok ] && pass "the PyTorch reference loads the trained folder" || fail "reference: $loads"

# expect_error CODE MESSAGE -- finetune arguments...
expect_error() {
  local code=$1 message=$2
  shift 3
  set +e
  "$SLM_BIN" finetune -m "$model" --out "$SLM_WORK/bad-adapter" --max-steps 1 "$@" >/dev/null 2>"$SLM_WORK/err"
  local rc=$?
  set -e
  if [ "$rc" = "$code" ] && grep -qF -- "$message" "$SLM_WORK/err"; then
    pass "exit $code: $message"
  else
    fail "expected exit $code and '$message', got $rc: $(cat "$SLM_WORK/err")"
  fi
}
printf '{"text": "fine"}\n{"txt": "typo"}\n' >"$SLM_WORK/badline.jsonl"
: >"$SLM_WORK/empty.jsonl"
expect_error 1 "badline.jsonl:2: expected {\"text\"" -- --data "$SLM_WORK/badline.jsonl"
expect_error 1 "no training examples" -- --data "$SLM_WORK/empty.jsonl"
expect_error 1 "missing.jsonl: cannot read" -- --data "$SLM_WORK/missing.jsonl"
expect_error 1 "unknown module \"qkv\"" -- --data "$SLM_WORK/train.jsonl" --lora-targets qkv
expect_error 2 "--lora-r" -- --data "$SLM_WORK/train.jsonl" --lora-r 0
expect_error 2 "--lr" -- --data "$SLM_WORK/train.jsonl" --lr -1
expect_error 2 "--full excludes --lora-r" -- --data "$SLM_WORK/train.jsonl" --full --lora-r 4
expect_error 2 "--save-dtype requires --full" -- --data "$SLM_WORK/train.jsonl" --save-dtype bf16
expect_error 1 "is the base model's folder" -- --data "$SLM_WORK/train.jsonl" --full --out "$model"
expect_error 2 "--resume-override requires --resume" -- --data "$SLM_WORK/train.jsonl" --resume-override
expect_error 1 "$SLM_WORK/nowhere/checkpoint" -- --data "$SLM_WORK/train.jsonl" --resume "$SLM_WORK/nowhere"

# Phi-3: the default targets are its fused four, the adapter carries PEFT's
# names for them, and the merged folder (qkv_proj and gate_up_proj fused
# again) is base + adapter in the PyTorch reference.
phi3="$SLM_WORK/phi3"
"$SLM_BIN" create --arch phi3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 96 --sliding-window 8 \
  --init-std 0.1 --tokenizer "$TOKENIZERS/tokenizer-llama2/models" --seed 4 --out "$phi3" 2>/dev/null
rm -rf "$SLM_WORK/phi3-adapter" "$SLM_WORK/phi3-merged"
if "$SLM_BIN" finetune -m "$phi3" --data "$SLM_WORK/train.jsonl" --max-steps 6 --lr 2e-2 --batch-size 4 --lora-r 4 \
  --threads 2 --out "$SLM_WORK/phi3-adapter" 2>"$SLM_WORK/phi3.err" &&
  "$SLM_BIN" merge -m "$phi3" --adapter "$SLM_WORK/phi3-adapter" --out "$SLM_WORK/phi3-merged" 2>>"$SLM_WORK/phi3.err"; then
  targets=$(json_get "$SLM_WORK/phi3-adapter/adapter_config.json" '",".join(sorted(j["target_modules"]))')
  [ "$targets" = "down_proj,gate_up_proj,o_proj,qkv_proj" ] && pass "phi3: finetune adapts qkv_proj, o_proj, gate_up_proj, down_proj" \
    || fail "phi3 adapter targets: $targets"
  agree=$(merged_agrees "$phi3" "$SLM_WORK/phi3-adapter" "$SLM_WORK/phi3-merged")
  [ "$agree" = ok ] && pass "phi3: merged model (fused again) = base + adapter (PyTorch reference)" \
    || fail "phi3 merged model differs: $agree"
else
  fail "phi3 finetune/merge: $(tail -3 "$SLM_WORK/phi3.err")"
fi
finish
