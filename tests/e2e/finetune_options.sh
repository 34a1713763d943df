#!/usr/bin/env bash
# The slm finetune options that change the arithmetic, each held to the
# PyTorch reference (tests/reference/finetune_reference.py, float64) run with
# the same options on the same examples, in the same order, from the same
# initial adapter: the per-step loss, learning rate and gradient norm in
# metrics.jsonl, and the adapter written. Covered: --grad-accum (and the loss
# normalised over the tokens of the whole step), --epochs, --pack, --seq-len,
# --warmup-steps, --lr-schedule, --max-grad-norm, --weight-decay, --save-every,
# and --lora-dropout by its effect (it has no bit-equal reference).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_tokenizers

PYTHON=${PYTHON:-/usr/bin/python3}
REFERENCE="$SOURCE_DIR/tests/reference/finetune_reference.py"
model="$SLM_WORK/model"
data="$SLM_WORK/train.jsonl"
"$SLM_BIN" create --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --init-std 0.1 \
  --tokenizer "$TOKENIZERS/tokenizer-llama2/models" --seed 3 --out "$model" 2>/dev/null
# Ten examples of different lengths (7 to 28 tokens), plain text and
# prompt/completion, so micro-batches count different numbers of tokens.
"$PYTHON" - "$data" <<'PY'
import json, sys
words = "the kettle boils water for tea while the cat sleeps near the warm stove".split()
with open(sys.argv[1], "w") as f:
    for i in range(10):
        if i % 3 == 1:
            f.write(json.dumps({"prompt": f"Q: what is {i} plus {i}? A:", "completion": f" {2 * i}"}) + "\n")
        else:
            f.write(json.dumps({"text": " ".join(words[: 2 + (7 * i) % 14])}) + "\n")
PY

seed=1  # the adapter's initialisation and the data order
lora=(-m "$model" --data "$data" --lora-r 4 --lora-alpha 8 --lora-targets q_proj,v_proj,down_proj --seed "$seed"
  --threads 2)

# The initial adapter: a one-step run whose step has learning rate 0 (the
# first of a warmup) writes the adapter as slm initialised it (A drawn, B
# zero), and the reference starts from that file.
init="$SLM_WORK/init"
rm -rf "$init"
"$SLM_BIN" finetune "${lora[@]}" --lora-dropout 0 --max-steps 1 --lr-schedule constant --warmup-steps 1 \
  --out "$init" 2>"$init.err" || fail "the initial adapter: $(tail -2 "$init.err")"
initial=$("$PYTHON" - "$init" "$SOURCE_DIR/tests/reference" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from llama_reference import read_safetensors
tensors = read_safetensors(f"{sys.argv[1]}/adapter_model.safetensors")
a = [abs(t).max() for n, (t, _) in tensors.items() if ".lora_A." in n]
b = [abs(t).max() for n, (t, _) in tensors.items() if ".lora_B." in n]
print("ok" if len(a) == len(b) == 6 and min(a) > 0 and max(b) == 0 else f"A max {a}, B max {b}")
PY
)
[ "$initial" = ok ] && pass "an lr-0 step writes the initial adapter (A drawn, B zero)" || fail "initial adapter: $initial"

# Tolerances: slm trains in f32, the reference in float64. Measured on this
# model over every run below: losses within 1.3e-6 relative, gradient norms
# 1.1e-5, learning rates 1e-16 (of the peak), adapters 8.4e-5 (relative
# Frobenius norm of the difference; that one is a single element whose
# gradient is near zero at some step, where Adam's m/sqrt(v) turns f32
# rounding into a different step; without it 4e-6). The bounds are 4 to 8
# times those. What they must catch moves far more: a skipped warmup or a mean
# of per-micro-batch means moved the loss by 4e-4 to 9e-2 and the adapter by
# 3e-2 or more when tried; --weight-decay 0.5 moves the adapter by 1.7e-2.
LOSS_BOUND=1e-5
NORM_BOUND=5e-5
ADAPTER_BOUND=5e-4

# train NAME OPTIONS...: slm finetune and the reference, each with OPTIONS
# (named alike in both), dropout off; the reference keeps its last adapter.
train() {
  local name=$1
  shift
  rm -rf "$SLM_WORK/$name" "$SLM_WORK/$name.ref"
  "$SLM_BIN" finetune "${lora[@]}" --lora-dropout 0 "$@" --out "$SLM_WORK/$name" 2>"$SLM_WORK/$name.err" \
    || fail "$name: slm finetune: $(tail -2 "$SLM_WORK/$name.err")"
  local steps
  steps=$(json_get "$SLM_WORK/$name/checkpoint/data_state.json" 'j["step"]' 2>/dev/null || echo 0)
  "$PYTHON" "$REFERENCE" "$model" --slm "$SLM_BIN" --adapter "$init" --data "$data" --seed "$seed" "$@" \
    --save-steps "$steps" --save-dir "$SLM_WORK/$name.ref" --out "$SLM_WORK/$name.ref.json" 2>"$SLM_WORK/$name.ref.err" \
    || fail "$name: reference: $(tail -2 "$SLM_WORK/$name.ref.err")"
}

# compare METRICS_JSONL REFERENCE_JSON [ADAPTER REFERENCE_ADAPTER]: "ok" and the
# measured errors when every step's epoch matches and its loss, learning rate
# and gradient norm agree (and the adapters), else what differs.
compare() {
  "$PYTHON" - "$LOSS_BOUND" "$NORM_BOUND" "$ADAPTER_BOUND" "$SOURCE_DIR/tests/reference" "$@" <<'PY' 2>&1
import json, sys
loss_bound, norm_bound, adapter_bound = map(float, sys.argv[1:4])
sys.path.insert(0, sys.argv[4])
from llama_reference import read_safetensors
got = [j for j in map(json.loads, open(sys.argv[5])) if "loss" in j]
want = json.load(open(sys.argv[6]))["steps"]
if [(g["step"], g["epoch"]) for g in got] != [(w["step"], w["epoch"]) for w in want]:
    sys.exit(print(f"steps (step, epoch) {[(g['step'], g['epoch']) for g in got]}, "
                   f"reference {[(w['step'], w['epoch']) for w in want]}"))
def worst(key, scale=None):
    return max(abs(g[key] - w[key]) / (scale or abs(w[key])) for g, w in zip(got, want))
# The learning rate is 0 at a warmup's first step: its error is relative to the peak.
errors = {"loss": worst("loss"), "lr": worst("lr", max(w["lr"] for w in want)), "grad_norm": worst("grad_norm")}
bounds = {"loss": loss_bound, "lr": 1e-9, "grad_norm": norm_bound}
if len(sys.argv) > 8:
    a = read_safetensors(f"{sys.argv[7]}/adapter_model.safetensors")
    b = read_safetensors(f"{sys.argv[8]}/adapter_model.safetensors")
    if sorted(a) != sorted(b):
        sys.exit(print(f"adapter tensors {sorted(a)} vs {sorted(b)}"))
    squares = lambda tensors: sum(float((t ** 2).sum()) for t in tensors)
    errors["adapter"] = (squares(a[n][0] - b[n][0] for n in b) / squares(b[n][0] for n in b)) ** 0.5
    bounds["adapter"] = adapter_bound
text = ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
bad = [k for k in errors if not errors[k] <= bounds[k]]
print(f"ok ({len(got)} steps; {text})" if not bad else f"{', '.join(bad)} past the bound ({text}); losses "
      f"{[round(g['loss'], 6) for g in got]}, reference {[round(w['loss'], 6) for w in want]}")
PY
}

# agree NAME WHAT: slm's run NAME against the reference's, adapter included.
agree() {
  local name=$1 what=$2 steps result
  steps=$(json_get "$SLM_WORK/$name/checkpoint/data_state.json" 'j["step"]' 2>/dev/null || echo 0)
  result=$(compare "$SLM_WORK/$name/metrics.jsonl" "$SLM_WORK/$name.ref.json" "$SLM_WORK/$name" \
    "$SLM_WORK/$name.ref/step-$steps")
  [[ "$result" == ok* ]] && pass "$what = the reference: $result" || fail "$what: $result"
}

# --lr-schedule with --warmup-steps: each schedule's learning rate at every
# step, and the curve it gives. Clipping off here (and below unless tested).
common=(--batch-size 4 --max-steps 8 --lr 1e-2 --max-grad-norm 0)
train cosine "${common[@]}" --lr-schedule cosine --warmup-steps 2
agree cosine "--lr-schedule cosine --warmup-steps 2"
train linear "${common[@]}" --lr-schedule linear --warmup-steps 3
agree linear "--lr-schedule linear --warmup-steps 3"
train constant "${common[@]}" --lr-schedule constant --warmup-steps 1
agree constant "--lr-schedule constant --warmup-steps 1"

# --max-grad-norm small enough to clip at every step (the reference's norms,
# before clipping, are all above it).
train clip "${common[@]}" --lr-schedule cosine --warmup-steps 2 --max-grad-norm 0.05
agree clip "--max-grad-norm 0.05"
clipped=$(json_get "$SLM_WORK/clip.ref.json" 'min(s["grad_norm"] for s in j["steps"]) > 0.05')
[ "$clipped" = True ] && pass "--max-grad-norm 0.05 clips every step" || fail "--max-grad-norm 0.05 did not clip every step"

# --weight-decay: large, so the adapter it shrinks differs well past the bound.
train decay "${common[@]}" --lr-schedule cosine --warmup-steps 2 --weight-decay 0.5
agree decay "--weight-decay 0.5"

# --grad-accum 2 over micro-batches of 2 is --batch-size 4: the same examples
# per step, the loss the mean over all their tokens (not a mean of the two
# micro-batches' means), so the same curve and adapter as the cosine run.
train accum --batch-size 2 --grad-accum 2 --max-steps 8 --lr 1e-2 --max-grad-norm 0 --lr-schedule cosine \
  --warmup-steps 2
agree accum "--grad-accum 2 --batch-size 2"
result=$(compare "$SLM_WORK/accum/metrics.jsonl" "$SLM_WORK/cosine.ref.json" "$SLM_WORK/accum" "$SLM_WORK/cosine.ref/step-8")
[[ "$result" == ok* ]] && pass "--grad-accum 2 --batch-size 2 = --batch-size 4: $result" \
  || fail "--grad-accum 2 --batch-size 2 differs from --batch-size 4: $result"

# --epochs 2: 3 micro-batches of the 10 examples an epoch, so 6 steps, the
# second epoch in its own order; with --grad-accum 2, 2 steps an epoch, the
# second of each the one micro-batch left (a step never reaches into the next
# epoch).
train epochs --batch-size 4 --epochs 2 --lr 1e-2 --max-grad-norm 0 --lr-schedule linear --warmup-steps 1
agree epochs "--epochs 2 (6 steps, epochs 1,1,1,2,2,2)"
train epochs_accum --batch-size 4 --grad-accum 2 --epochs 2 --lr 1e-2 --max-grad-norm 0 --lr-schedule linear \
  --warmup-steps 1
agree epochs_accum "--epochs 2 --grad-accum 2 (4 steps, epochs 1,1,2,2)"

# --seq-len 10: the longer examples cut (the summary line counts them as the
# reference does), the curve of what is left.
train seq_len --batch-size 4 --max-steps 6 --lr 1e-2 --lr-schedule constant --seq-len 10
agree seq_len "--seq-len 10"
truncated=$(json_get "$SLM_WORK/seq_len.ref.json" 'j["truncated"]')
grep -q ", $truncated truncated to 10)" "$SLM_WORK/seq_len.err" && [ "$truncated" -gt 0 ] \
  && pass "--seq-len 10 truncates $truncated examples" || fail "--seq-len 10: $(grep truncated "$SLM_WORK/seq_len.err")"

# --pack: the examples concatenated into sequences of at most --seq-len, one
# causal attention over each (docs/training.md), as the reference packs them.
train pack --pack --seq-len 40 --batch-size 2 --max-steps 6 --lr 1e-2 --lr-schedule constant
agree pack "--pack --seq-len 40"
sequences=$(json_get "$SLM_WORK/pack.ref.json" 'j["sequences"]')
grep -q "^packed 10 examples into $sequences sequences of at most 40 tokens$" "$SLM_WORK/pack.err" \
  && pass "--pack: 10 examples into $sequences sequences" || fail "--pack: $(grep packed "$SLM_WORK/pack.err")"

# --save-every 3: a run killed (SIGKILL) after its fourth step holds the
# checkpoint of a multiple of 3 steps, and that adapter is the reference's
# after as many steps.
saved="$SLM_WORK/saved"
rm -rf "$saved" "$saved.ref"
"$SLM_BIN" finetune "${lora[@]}" --lora-dropout 0 --batch-size 4 --max-steps 100000 --lr 1e-2 --lr-schedule constant \
  --save-every 3 --out "$saved" 2>"$saved.err" &
pid=$!
for _ in $(seq 600); do
  [ "$(cat "$saved/metrics.jsonl" 2>/dev/null | grep -c '"loss"')" -ge 4 ] && break
  sleep 0.1
done
kill -KILL "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
# A kill between a save's two renames leaves that save as checkpoint.old-N.
checkpoint=$(ls -d "$saved/checkpoint" "$saved"/checkpoint.old-* 2>/dev/null | head -1 || true)
step=$(json_get "$checkpoint/data_state.json" 'j["step"]' 2>/dev/null || echo 0)
logged=$(grep -c '"loss"' "$saved/metrics.jsonl" || true)
if [ "$step" -gt 0 ] && [ $((step % 3)) = 0 ] && [ "$step" -le "$logged" ]; then
  "$PYTHON" "$REFERENCE" "$model" --slm "$SLM_BIN" --adapter "$init" --data "$data" --seed "$seed" --batch-size 4 \
    --max-steps "$step" --lr 1e-2 --lr-schedule constant --save-steps "$step" --save-dir "$saved.ref" \
    --out "$saved.ref.json" 2>"$saved.ref.err" || fail "--save-every reference: $(tail -2 "$saved.ref.err")"
  head -n "$step" "$saved/metrics.jsonl" >"$saved.metrics.jsonl"
  result=$(compare "$saved.metrics.jsonl" "$saved.ref.json" "$checkpoint" "$saved.ref/step-$step")
  [[ "$result" == ok* ]] && pass "--save-every 3: the checkpoint of step $step = the reference: $result" \
    || fail "--save-every 3, checkpoint of step $step: $result"
else
  fail "--save-every 3: killed after $logged logged steps, the checkpoint holds step $step (expected a multiple of 3)"
fi

# --lora-dropout: no bit-equal reference (another generator). Off, every run
# above equals the reference; 0.5 moves the curve well past the bound; the
# same seed twice gives the same run.
for run in dropout dropout_again; do
  rm -rf "$SLM_WORK/$run"
  "$SLM_BIN" finetune "${lora[@]}" --lora-dropout 0.5 "${common[@]}" --lr-schedule cosine --warmup-steps 2 \
    --out "$SLM_WORK/$run" 2>"$SLM_WORK/$run.err" || fail "--lora-dropout 0.5: $(tail -2 "$SLM_WORK/$run.err")"
done
moved=$("$PYTHON" - "$SLM_WORK/dropout/metrics.jsonl" "$SLM_WORK/cosine/metrics.jsonl" "$LOSS_BOUND" <<'PY'
import json, sys
a, b = ([j["loss"] for j in map(json.loads, open(p)) if "loss" in j] for p in sys.argv[1:3])
gap = max(abs(x - y) / y for x, y in zip(a, b))
print(f"ok: {gap:.1e}" if len(a) == len(b) == 8 and gap > 100 * float(sys.argv[3]) else f"{gap:.1e}")
PY
)
[[ "$moved" == ok* ]] && pass "--lora-dropout 0.5 moves the loss curve (largest relative change ${moved#ok: })" \
  || fail "--lora-dropout 0.5 moved the loss by $moved at most, not 100x the bound"
same_curve=$("$PYTHON" -c 'import json, sys
a, b = ([(j["loss"], j["grad_norm"]) for j in map(json.loads, open(p))] for p in sys.argv[1:3])
print(a == b)' "$SLM_WORK/dropout/metrics.jsonl" "$SLM_WORK/dropout_again/metrics.jsonl")
cmp -s "$SLM_WORK/dropout/adapter_model.safetensors" "$SLM_WORK/dropout_again/adapter_model.safetensors" \
  && [ "$same_curve" = True ] && pass "--lora-dropout 0.5 with the same seed twice: the same losses and adapter" \
  || fail "--lora-dropout 0.5 is not reproducible with the same seed"
finish
