#!/usr/bin/env bash
# Inference figures for docs/benchmarks.md: prefill and decode tokens/s of
# random models at the shapes of real ones, for each weight dtype, beside the
# machine's own limits measured in the same run (slm bench --probe).
# Usage: bench/inference.sh [SHAPE...]   (default: smollm2-135m)
set -euo pipefail
cd "$(dirname "$0")/.."
slm=build/slm
shapes=("${@:-smollm2-135m}")
threads=${THREADS:-$(nproc)}
mkdir -p build/bench-models

echo "| shape | weights | prefill 128 tok/s | decode 64 tok/s | decode GB/s (% of read bandwidth) | prefill GFLOP/s (% of peak) | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for shape in "${shapes[@]}"; do
  for stored in f32 bf16; do
    [ -f "build/bench-models/$shape-$stored/config.json" ] ||
      $slm create --shape "$shape" --dtype "$stored" --seed 1 --out "build/bench-models/$shape-$stored" 2>/dev/null
  done
  for dtype in f32 bf16 q8 q4; do
    source_dtype=$([ "$dtype" = f32 ] && echo f32 || echo bf16)
    load=$([ "$dtype" = q8 ] || [ "$dtype" = q4 ] && echo "$dtype" || echo auto)
    $slm bench -m "build/bench-models/$shape-$source_dtype" --dtype "$load" --threads "$threads" -p 128 -n 64 -r 3 \
      --probe --output-format json |
      python3 -c '
import json, sys
j = json.load(sys.stdin)
m = j["machine"]
peak = "" if j.get("prefill_peak_percent") is None else " (%.0f%%)" % j["prefill_peak_percent"]
print("| %s | %s | %.0f | %.1f | %.1f (%.0f%% of %.1f) | %.0f%s | %.0f |" % (sys.argv[1], sys.argv[2],
      j["prefill_tokens_per_s"], j["decode_tokens_per_s"], j["decode_weight_gb_per_s"],
      j["decode_bandwidth_percent"], m["read_gb_per_s"], j["prefill_gflops"], peak, j["peak_rss_mib"]))' "$shape" "$dtype"
  done
done
