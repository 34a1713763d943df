#!/usr/bin/env bash
# Full-training figures for docs/benchmarks.md: `slm finetune --full`
# pretraining a random model of 6.8 M parameters (llama, hidden 256, 6 layers,
# 8 heads, 4 KV heads, MLP 768, vocabulary 4096 from `slm tokenizer-train`) on
# packed 256-token sequences, batch 8, with and without --grad-checkpointing,
# beside the machine's OpenBLAS sgemm throughput measured in the same run
# (slm bench --probe). The compute figure counts 6 FLOP per weight per token
# (forward, dx and dW) over the linear layers and lm_head.
# Usage: bench/full_training.sh. SLM (default build/slm), WORK (default
# build/bench-models/full-training), THREADS and STEPS override.
set -euo pipefail
cd "$(dirname "$0")/.."
slm=${SLM:-build/slm}
threads=${THREADS:-$(nproc)}
steps=${STEPS:-8}
work=${WORK:-build/bench-models/full-training}
mkdir -p "$work"

python3 - "$work" <<'PY'
import json, random, sys
words = "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their".split()
rng = random.Random(0)
with open(f"{sys.argv[1]}/data.jsonl", "w") as jsonl, open(f"{sys.argv[1]}/data.txt", "w") as text:
    for _ in range(256):
        line = " ".join(rng.choice(words) for _ in range(400))
        jsonl.write(json.dumps({"text": line}) + "\n")
        text.write(line + "\n")
PY
model="$work/model"
if [ ! -f "$model/config.json" ]; then
  $slm tokenizer-train --vocab-size 4096 --out "$work/tokenizer" "$work/data.txt" >/dev/null 2>&1
  $slm create --arch llama --hidden 256 --layers 6 --heads 8 --kv-heads 4 --intermediate 768 --vocab 4096 \
    --tokenizer "$work/tokenizer" --seed 1 --out "$model" 2>/dev/null
fi
sgemm=$($slm bench -m "$model" --probe -p 16 -n 4 -r 1 --threads "$threads" --output-format json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["machine"]["sgemm_gflops"])')

echo "| model | options | training tok/s | GFLOP/s (% of sgemm) | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- |"
for options in "" "--grad-checkpointing"; do
  out="$work/trained"
  rm -rf "$out"  # finetune refuses to overwrite a run folder
  # shellcheck disable=SC2086
  /usr/bin/time -f "%M" -o "$work/rss" $slm finetune --full -m "$model" --data "$work/data.jsonl" --out "$out" \
    --pack --seq-len 256 --batch-size 8 --max-steps "$steps" --lr-schedule constant --threads "$threads" \
    $options 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
  read -r rate gflops rss < <(python3 bench/training_rate.py "$out/metrics.jsonl" "$model/config.json" "$work/rss" \
    $((8 * 256)) 6)
  share=$(awk -v g="$gflops" -v s="$sgemm" 'BEGIN { printf "%.0f%% of %.0f", 100 * g / s, s }')
  echo "| 6.8 M llama, batch 8 × 256 | ${options:-(none)} | $rate | $gflops ($share) | $rss |"
done
