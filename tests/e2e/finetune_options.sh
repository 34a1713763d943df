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
# Tiny steps: OpenMP threads that spin while idle starve each other on a
# loaded 2-core machine (docs/training.md).
export OMP_WAIT_POLICY=passive
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

# slm's runs first, each noted in jobs.jsonl with what the reference must
# reproduce; then one Python process (torch imported once) runs the reference
# for each and compares. job NAME WHAT METRICS ADAPTER_FOLDER OPTIONS...
jobs="$SLM_WORK/jobs.jsonl"
: >"$jobs"
job() {
  "$PYTHON" -c 'import json, sys
keys = ("name", "what", "metrics", "adapter")
print(json.dumps({**dict(zip(keys, sys.argv[1:5])), "options": sys.argv[5:]}))' "$@" >>"$jobs"
}
# train NAME WHAT OPTIONS...: slm finetune with OPTIONS (the reference's names
# too), dropout off; the run and its adapter must be the reference's.
train() {
  local name=$1 what=$2
  shift 2
  rm -rf "${SLM_WORK:?}/$name"
  "$SLM_BIN" finetune "${lora[@]}" --lora-dropout 0 "$@" --out "$SLM_WORK/$name" 2>"$SLM_WORK/$name.err" \
    || fail "$name: slm finetune: $(tail -2 "$SLM_WORK/$name.err")"
  job "$name" "$what" "$SLM_WORK/$name/metrics.jsonl" "$SLM_WORK/$name" "$@"
}

# --lr-schedule with --warmup-steps: each schedule's learning rate at every
# step, and the curve it gives. Clipping off here (and below unless tested).
common=(--batch-size 4 --max-steps 8 --lr 1e-2 --max-grad-norm 0)
train cosine "--lr-schedule cosine --warmup-steps 2" "${common[@]}" --lr-schedule cosine --warmup-steps 2
train linear "--lr-schedule linear --warmup-steps 3" "${common[@]}" --lr-schedule linear --warmup-steps 3
train constant "--lr-schedule constant --warmup-steps 1" "${common[@]}" --lr-schedule constant --warmup-steps 1
# --max-grad-norm small enough to clip at every step (checked below: the
# reference's norms before clipping are all above it).
train clip "--max-grad-norm 0.05" "${common[@]}" --lr-schedule cosine --warmup-steps 2 --max-grad-norm 0.05
# --weight-decay large, so the adapter it shrinks differs well past the bound.
train decay "--weight-decay 0.5" "${common[@]}" --lr-schedule cosine --warmup-steps 2 --weight-decay 0.5
# --grad-accum 2 over micro-batches of 2 is --batch-size 4: the same examples
# per step, the loss the mean over all their tokens (not a mean of the two
# micro-batches' means); checked below against the cosine run's reference too.
train accum "--grad-accum 2 --batch-size 2" --batch-size 2 --grad-accum 2 --max-steps 8 --lr 1e-2 --max-grad-norm 0 \
  --lr-schedule cosine --warmup-steps 2
# --epochs 2: 3 micro-batches of the 10 examples an epoch, so 6 steps, the
# second epoch in its own order; with --grad-accum 2, 2 steps an epoch, the
# second of each the one micro-batch left (a step never reaches into the next
# epoch).
train epochs "--epochs 2 (6 steps, epochs 1,1,1,2,2,2)" --batch-size 4 --epochs 2 --lr 1e-2 --max-grad-norm 0 \
  --lr-schedule linear --warmup-steps 1
train epochs_accum "--epochs 2 --grad-accum 2 (4 steps, epochs 1,1,2,2)" --batch-size 4 --grad-accum 2 --epochs 2 \
  --lr 1e-2 --max-grad-norm 0 --lr-schedule linear --warmup-steps 1
# --seq-len 10: the longer examples cut (the summary line must count them as
# the reference does), the curve of what is left.
train seq_len "--seq-len 10" --batch-size 4 --max-steps 6 --lr 1e-2 --lr-schedule constant --seq-len 10
# --pack: the examples concatenated into sequences of at most --seq-len, one
# causal attention over each (docs/training.md), as the reference packs them.
train pack "--pack --seq-len 40" --pack --seq-len 40 --batch-size 2 --max-steps 6 --lr 1e-2 --lr-schedule constant

# --save-every 3: a run killed (SIGKILL) after its fourth step holds the
# checkpoint of a multiple of 3 steps, whose adapter must be the reference's
# after as many steps (a constant schedule: the same whatever --max-steps).
saved="$SLM_WORK/saved"
rm -rf "$saved"
"$SLM_BIN" finetune "${lora[@]}" --lora-dropout 0 --batch-size 4 --max-steps 100000 --lr 1e-2 --lr-schedule constant \
  --save-every 3 --out "$saved" 2>"$saved.err" &
pid=$!
for _ in $(seq 1200); do
  [ "$(cat "$saved/metrics.jsonl" 2>/dev/null | grep -c '"loss"')" -ge 4 ] && break
  sleep 0.1
done
{ kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || true
# A kill between a save's two renames leaves that save as checkpoint.old-N.
checkpoint=$(ls -d "$saved/checkpoint" "$saved"/checkpoint.old-* 2>/dev/null | head -1 || true)
step=$(json_get "$checkpoint/data_state.json" 'j["step"]' 2>/dev/null || echo 0)
logged=$(cat "$saved/metrics.jsonl" 2>/dev/null | grep -c '"loss"' || true)
if [ "$step" -gt 0 ] && [ $((step % 3)) = 0 ] && [ "$step" -le "$logged" ]; then
  head -n "$step" "$saved/metrics.jsonl" >"$saved.metrics.jsonl"
  job saved "--save-every 3: the checkpoint of step $step" "$saved.metrics.jsonl" "$checkpoint" \
    --batch-size 4 --max-steps "$step" --lr 1e-2 --lr-schedule constant
else
  fail "--save-every 3: killed after $logged logged steps, the checkpoint holds step $step (expected a multiple of 3)"
fi

# Every job against the reference: each step's (step, epoch) the same, its
# loss, learning rate and gradient norm within the bounds, and the adapter;
# then what some runs add. One line per check, "ok: ..." or "FAIL: ...", and
# "checked N" at the end, so a reference that dies cannot pass.
verdicts=$("$PYTHON" - "$SOURCE_DIR/tests/reference" "$jobs" "$model" "$SLM_BIN" "$init" "$data" "$seed" "$SLM_WORK" \
  "$LOSS_BOUND" "$NORM_BOUND" "$ADAPTER_BOUND" <<'PY' 2>&1
import json, re, sys
sys.path.insert(0, sys.argv[1])
import torch
from finetune_reference import parser, train
from llama_reference import read_safetensors
jobs_file, model, slm, init, data, seed, work = sys.argv[2:9]
loss_bound, norm_bound, adapter_bound = map(float, sys.argv[9:12])
torch.set_num_threads(1)  # tiny products: threads only wait on each other


def compare(got, want, adapter):
    """'ok (errors)' or what is past its bound."""
    if [(g["step"], g["epoch"]) for g in got] != [(w["step"], w["epoch"]) for w in want["steps"]]:
        return (f"steps (step, epoch) {[(g['step'], g['epoch']) for g in got]}, "
                f"reference {[(w['step'], w['epoch']) for w in want['steps']]}")
    def worst(key, scale=None):
        return max(abs(g[key] - w[key]) / (scale or abs(w[key])) for g, w in zip(got, want["steps"]))
    # The learning rate is 0 at a warmup's first step: its error is relative to the peak.
    errors = {"loss": worst("loss"), "lr": worst("lr", max(w["lr"] for w in want["steps"])),
              "grad_norm": worst("grad_norm")}
    bounds = {"loss": loss_bound, "lr": 1e-9, "grad_norm": norm_bound, "adapter": adapter_bound}
    trained = {name: array for name, (array, _) in read_safetensors(f"{adapter}/adapter_model.safetensors").items()}
    expected = want["adapter"]
    if sorted(trained) != sorted(expected):
        return f"adapter tensors {sorted(trained)}, reference {sorted(expected)}"
    squares = lambda arrays: sum(float((a ** 2).sum()) for a in arrays)
    errors["adapter"] = (squares(trained[n] - expected[n] for n in expected) / squares(expected.values())) ** 0.5
    text = ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
    bad = [k for k in errors if not errors[k] <= bounds[k]]
    if bad:
        return (f"{', '.join(bad)} past the bound ({text}); losses {[round(g['loss'], 6) for g in got]}, "
                f"reference {[round(w['loss'], 6) for w in want['steps']]}")
    return f"ok ({len(got)} steps; {text})"


def verdict(what, result):
    if result == "ok":
        print(f"ok: {what}")
    else:
        print(f"ok: {what}: {result}" if result.startswith("ok") else f"FAIL: {what}: {result}")


runs, references = {}, {}
for job in map(json.loads, open(jobs_file)):
    name = job["name"]
    runs[name] = [j for j in map(json.loads, open(job["metrics"])) if "loss" in j]
    args = parser().parse_args([model, "--slm", slm, "--adapter", init, "--data", data, "--seed", seed] + job["options"])
    references[name] = train(args)
    verdict(f"{job['what']} = the reference", compare(runs[name], references[name], job["adapter"]))
    if name == "clip":
        norms = [s["grad_norm"] for s in references[name]["steps"]]
        verdict("--max-grad-norm 0.05 clips every step", "ok" if min(norms) > 0.05 else f"norms {norms}")
    if name == "accum":
        verdict("--grad-accum 2 --batch-size 2 = --batch-size 4", compare(runs[name], references["cosine"], job["adapter"]))
    if name == "seq_len":
        count = references[name]["truncated"]
        line = re.search(r"\d+ truncated to 10\)", open(f"{work}/{name}.err").read())
        verdict(f"--seq-len 10 truncates {count} examples",
                "ok" if count > 0 and line and line.group(0) == f"{count} truncated to 10)" else f"slm: {line}")
    if name == "pack":
        count = references[name]["sequences"]
        line = f"packed 10 examples into {count} sequences of at most 40 tokens"
        verdict(f"--pack: 10 examples into {count} sequences",
                "ok" if line in open(f"{work}/{name}.err").read().splitlines() else f"slm did not print {line!r}")
print(f"checked {len(runs)}")
PY
)
while IFS= read -r line; do
  case "$line" in
    ok:* | checked*) echo "$line" ;;
    *) fail "${line#FAIL: }" ;;
  esac
done <<<"$verdicts"
grep -qx "checked $(wc -l <"$jobs")" <<<"$verdicts" || fail "the reference did not check every job"

# --lora-dropout: no bit-equal reference (another generator). Off, every run
# above equals the reference; 0.5 moves the curve well past the bound; the
# same seed twice gives the same run.
for run in dropout dropout_again; do
  rm -rf "${SLM_WORK:?}/$run"
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
