#!/usr/bin/env bash
# Serving figures for docs/benchmarks.md: slm serve on the SmolLM2-135M shape
# (random weights, the default model's tokenizer) at 1, 8, 32 and 64
# concurrent streaming clients, 128-token prompts, 64 generated tokens each,
# for bf16 and q8 weights; beside `slm bench`'s single-sequence decode on the
# same weights and threads, so the cost of serving one client shows.
# Usage: bench/serve.sh   (THREADS, DTYPES="bf16 q8", LEVELS=1,8,32,64, ROUNDS=2 override)
set -euo pipefail
cd "$(dirname "$0")/.."
slm=${SLM:-build/slm}
threads=${THREADS:-$(nproc)}
read -r -a dtypes <<<"${DTYPES:-bf16 q8}"
levels=${LEVELS:-1,8,32,64}
model=build/bench-models/smollm2-135m-bf16-tokenizer
[ -f "$model/config.json" ] || $slm create --shape smollm2-135m --dtype bf16 --seed 1 --tokenizer models/slm-tiny \
  --vocab 49152 --out "$model" >/dev/null 2>&1

for dtype in "${dtypes[@]}"; do
  load=$([ "$dtype" = bf16 ] && echo auto || echo "$dtype")
  echo "== $dtype: slm bench, one sequence (prefill 128, decode 64)"
  $slm bench -m "$model" --dtype "$load" --threads "$threads" -p 128 -n 64 -r 3 --output-format json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({k: r[k] for k in r if "tokens_per_s" in k}))'
  echo "== $dtype: slm serve, streaming clients"
  log=$(mktemp)
  $slm serve -m "$model" --dtype "$load" --threads "$threads" --port 0 --parallel 64 --kv-cache 16384 2>"$log" &
  pid=$!
  for _ in $(seq 600); do grep -q 'listening on' "$log" && break; sleep 0.1; done
  url=$(grep -o 'listening on http://[^ ]*' "$log" | cut -d' ' -f3)
  node bench/serve_load.mjs "$url" --levels "$levels" --rounds "${ROUNDS:-2}"
  kill "$pid"
  wait "$pid" || true
  rm -f "$log"
done
