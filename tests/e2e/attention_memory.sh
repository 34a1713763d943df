#!/usr/bin/env bash
# Flash attention's extra memory is linear in length, eager's quadratic: at a
# 4096-token prompt, eager's score matrix (heads × 4096 × 4096 floats) must
# show in peak memory and flash must stay far below it.
source "$(dirname "$0")/lib.sh"

model="$SLM_WORK/attention-memory-model"
"$SLM_BIN" create --arch llama --hidden 64 --layers 1 --heads 8 --kv-heads 2 --intermediate 128 --vocab 256 \
  --max-position 8192 --seed 3 --out "$model" 2>/dev/null

for attn in eager flash; do
  "$SLM_BIN" bench -m "$model" -p 4096 -n 1 -r 1 --threads 1 --attn "$attn" --output-format json > "$SLM_WORK/$attn.json"
done
eager=$(json_get "$SLM_WORK/eager.json" 'j["peak_rss_mib"]')
flash=$(json_get "$SLM_WORK/flash.json" 'j["peak_rss_mib"]')
echo "peak RSS at 4096 tokens: eager $eager MiB, flash $flash MiB"
scores_mib=$((8 * 4096 * 4096 * 4 / 1024 / 1024))
if python3 -c "import sys; e,f,s=map(float,sys.argv[1:]); sys.exit(0 if e - f > 0.9 * s else 1)" "$eager" "$flash" "$scores_mib"; then
  pass "eager holds the ${scores_mib} MiB score matrix that flash never allocates"
else
  fail "eager ($eager MiB) does not exceed flash ($flash MiB) by the score matrix ($scores_mib MiB)"
fi
if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 100 else 1)" "$flash"; then
  pass "flash stays under 100 MiB at 4096 tokens"
else
  fail "flash used $flash MiB at 4096 tokens"
fi
finish
