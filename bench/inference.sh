#!/usr/bin/env bash
# Inference figures for docs/benchmarks.md: prefill and decode tokens/s of
# random models at the shapes of real ones, for each weight dtype, beside the
# machine's own limits measured in the same run (slm bench --probe); then, for
# bf16 weights, prefill at 128, 512 and 2048 tokens and decode at depth 0, 512
# and 2048 (flash attention).
# Usage: bench/inference.sh [SHAPE...]   (default: smollm2-135m)
# THREADS and DTYPES (default "f32 bf16 q8 q4") override.
set -euo pipefail
cd "$(dirname "$0")/.."
slm=build/slm
shapes=("${@:-smollm2-135m}")
threads=${THREADS:-$(nproc)}
read -r -a dtypes <<<"${DTYPES:-f32 bf16 q8 q4}"
mkdir -p build/bench-models

# model folder for SHAPE with weights stored as DTYPE (f32 or bf16), created once
model() {
  local dir="build/bench-models/$1-$2"
  [ -f "$dir/config.json" ] || $slm create --shape "$1" --dtype "$2" --seed 1 --out "$dir" >/dev/null 2>&1
  echo "$dir"
}

# bench SHAPE DTYPE ARGS... : one `slm bench` run as JSON
bench() {
  local shape=$1 dtype=$2
  shift 2
  local stored load
  stored=$([ "$dtype" = f32 ] && echo f32 || echo bf16)
  load=$([ "$dtype" = q8 ] || [ "$dtype" = q4 ] && echo "$dtype" || echo auto)
  $slm bench -m "$(model "$shape" "$stored")" --dtype "$load" --threads "$threads" --attn flash --output-format json "$@"
}

echo "| shape | weights | prefill 128 tok/s | decode 64 tok/s | decode GB/s (% of read bandwidth) | prefill GFLOP/s (% of peak) | first token s | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for shape in "${shapes[@]}"; do
  for dtype in "${dtypes[@]}"; do
    bench "$shape" "$dtype" -p 128 -n 64 -r 3 --probe | python3 -c '
import json, sys
j = json.load(sys.stdin)
m = j["machine"]
peak = "" if j.get("prefill_peak_percent") is None else " (%.0f%%)" % j["prefill_peak_percent"]
print("| %s | %s | %.0f | %.1f | %.1f (%.0f%% of %.1f) | %.0f%s | %.2f | %.0f |" % (sys.argv[1], sys.argv[2],
      j["prefill_tokens_per_s"], j["decode_tokens_per_s"], j["decode_weight_gb_per_s"],
      j["decode_bandwidth_percent"], m["read_gb_per_s"], j["prefill_gflops"], peak, j["first_token_seconds"],
      j["peak_rss_mib"]))' "$shape" "$dtype"
  done
done

echo
echo "| shape | weights | length | prefill tok/s | decode tok/s at that depth | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- |"
for shape in "${shapes[@]}"; do
  for length in 128 512 2048; do
    # decode depth 0 belongs with the 128-token row: the table above has it
    depth=$([ "$length" = 128 ] && echo 0 || echo "$length")
    bench "$shape" bf16 -p "$length" -n 32 --depth "$depth" -r 2 | python3 -c '
import json, sys
j = json.load(sys.stdin)
print("| %s | bf16 | %s (depth %d) | %.0f | %.1f | %.0f |" % (sys.argv[1], sys.argv[2], j["depth"],
      j["prefill_tokens_per_s"], j["decode_tokens_per_s"], j["peak_rss_mib"]))' "$shape" "$length"
  done
done
