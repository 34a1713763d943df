#!/usr/bin/env bash
# Rebuilds slm's default model, models/slm-tiny, from public-domain text with
# slm's own tools: corpus -> tokenizer-train -> create (random init) ->
# finetune --full (pretraining) -> the committed folder.
#
# Usage: scripts/default_model/train.sh        (after scripts/setup.sh and a build)
#   SLM=build/slm  WORK=build/default_model  OUT=models/slm-tiny
#   MAX_STEPS=...  THREADS=...               override the defaults below
set -euo pipefail
cd "$(dirname "$0")/../.."
SLM=${SLM:-build/slm}
WORK=${WORK:-build/default_model}
OUT=${OUT:-models/slm-tiny}
MAX_STEPS=${MAX_STEPS:-1000}
THREADS=${THREADS:-$(nproc)}

[[ -x $SLM ]] || { echo "train.sh: $SLM is not built (cmake --build build)" >&2; exit 1; }
command -v bible >/dev/null || { echo "train.sh: the Debian package bible-kjv is missing (scripts/setup.sh)" >&2; exit 1; }

(cd scripts/default_model && npm ci --no-audit --no-fund --loglevel=error)
python3 scripts/default_model/corpus.py --out "$WORK/corpus"

"$SLM" tokenizer-train --vocab-size 4096 --special-tokens "<|endoftext|>,<|im_start|>,<|im_end|>" \
  --out "$WORK/tokenizer" "$WORK/corpus/train.txt"

rm -rf "$WORK/init" "$WORK/trained"
"$SLM" create --arch llama --hidden 256 --layers 4 --heads 8 --kv-heads 4 --intermediate 768 \
  --tie-embeddings --max-position 1024 --rope-theta 10000 --init-std 0.02 --seed 1 --dtype f32 \
  --tokenizer "$WORK/tokenizer" --out "$WORK/init"

"$SLM" finetune --full -m "$WORK/init" --data "$WORK/corpus/train.jsonl" --eval-data "$WORK/corpus/eval.jsonl" \
  --pack --seq-len 256 --batch-size 8 --lr 2e-3 --lr-schedule cosine --warmup-steps 100 \
  --max-steps "$MAX_STEPS" --weight-decay 0.1 --max-grad-norm 1.0 --seed 1 \
  --eval-every 250 --save-every 250 --save-dtype bf16 --threads "$THREADS" --out "$WORK/trained"

mkdir -p "$OUT"
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json loss.svg metrics.jsonl; do
  if [[ -f $WORK/trained/$f ]]; then cp "$WORK/trained/$f" "$OUT/$f.tmp" && mv "$OUT/$f.tmp" "$OUT/$f"; fi
done
# Sampling defaults, the ChatML chat template and <|im_end|> as an end of
# sequence (configure.py says why).
python3 scripts/default_model/configure.py "$OUT"
echo "train.sh: $OUT rebuilt"
SLM=$SLM WORK=$WORK OUT=$OUT scripts/default_model/evaluate.sh

