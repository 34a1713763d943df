#!/usr/bin/env bash
# Flash attention's extra memory is linear in length, eager's quadratic: at a
# 4096-token prompt, eager's score matrix (heads × 4096 × 4096 floats) must
# show in peak memory, and flash must grow only linearly from 512 tokens.
source "$(dirname "$0")/lib.sh"

model="$SLM_WORK/attention-memory-model"
"$SLM_BIN" create --arch llama --hidden 64 --layers 1 --heads 8 --kv-heads 2 --intermediate 128 --vocab 256 \
  --max-position 8192 --seed 3 --out "$model" 2>/dev/null

# Under AddressSanitizer, freed blocks wait in its quarantine (resident, up
# to 256 MiB), and OpenBLAS's small-matrix kernel frees a 2 KiB buffer per
# call: the quarantine would be measured, not slm. (No effect elsewhere.)
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0"
for attn in eager flash; do
  "$SLM_BIN" bench -m "$model" -p 4096 -n 1 -r 1 --threads 1 --attn "$attn" --output-format json > "$SLM_WORK/$attn.json"
done
"$SLM_BIN" bench -m "$model" -p 512 -n 1 -r 1 --threads 1 --attn flash --output-format json > "$SLM_WORK/flash512.json"
eager=$(json_get "$SLM_WORK/eager.json" 'j["peak_rss_mib"]')
flash=$(json_get "$SLM_WORK/flash.json" 'j["peak_rss_mib"]')
flash512=$(json_get "$SLM_WORK/flash512.json" 'j["peak_rss_mib"]')
echo "peak RSS at 4096 tokens: eager $eager MiB, flash $flash MiB (flash at 512 tokens: $flash512 MiB)"
scores_mib=$((8 * 4096 * 4096 * 4 / 1024 / 1024))
if python3 -c "import sys; e,f,s=map(float,sys.argv[1:]); sys.exit(0 if e - f > 0.9 * s else 1)" "$eager" "$flash" "$scores_mib"; then
  pass "eager holds the ${scores_mib} MiB score matrix that flash never allocates"
else
  fail "eager ($eager MiB) does not exceed flash ($flash MiB) by the score matrix ($scores_mib MiB)"
fi
# From 512 to 4096 tokens flash grows by the KV cache and activations
# (about 8 MiB here), not by a 4096² matrix; the baseline (libraries, and a
# sanitizer's shadow memory) cancels out.
if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) - float(sys.argv[2]) < 32 else 1)" "$flash" "$flash512"; then
  pass "flash grows by $(python3 -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 1))" "$flash" "$flash512") MiB from 512 to 4096 tokens"
else
  fail "flash grew from $flash512 MiB at 512 tokens to $flash MiB at 4096"
fi
finish
