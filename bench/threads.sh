#!/usr/bin/env bash
# The default thread count against --threads 1 and --threads N (all cores),
# decode tokens/s of the SmolLM2-135M shape (bf16), on an idle machine and
# beside one process that keeps a core busy (`yes`), alternating, three
# rounds. The default should match all cores when idle and --threads 1 (on
# two cores) when one is busy.
# Usage: bench/threads.sh   (ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
slm=${SLM:-build/slm}
model=build/bench-models/smollm2-135m-bf16
[ -f "$model/config.json" ] || $slm create --shape smollm2-135m --dtype bf16 --seed 1 --out "$model" >/dev/null 2>&1
decode() {
  $slm bench -m "$model" -p 16 -n 32 -r 3 "$@" --output-format json >"$model.json"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d threads %.1f tok/s" % (r["threads"], r["decode_tokens_per_s"]))' "$model.json"
}
for condition in idle busy; do
  [ "$condition" = busy ] && { yes >/dev/null & busy=$!; sleep 0.3; }
  for round in $(seq "${ROUNDS:-3}"); do
    echo "$condition round $round: default $(decode) | --threads 1 $(decode --threads 1) | --threads $(nproc) $(decode --threads "$(nproc)")"
  done
  [ "$condition" = busy ] && kill "$busy"
done
