#!/usr/bin/env bash
# Held-out perplexity of the default model beside two baselines: the same
# architecture untrained (random init) and a unigram model of the training
# text. Windows of 256 tokens, the training sequence length.
# Usage: scripts/default_model/evaluate.sh   (after train.sh; same SLM/WORK/OUT)
set -euo pipefail
cd "$(dirname "$0")/../.."
SLM=${SLM:-build/slm}
WORK=${WORK:-build/default_model}
OUT=${OUT:-models/slm-tiny}
vocab=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$OUT/config.json")

"$SLM" tokenize -m "$OUT" --no-special -f "$WORK/corpus/train.txt" >"$WORK/train.ids"
"$SLM" tokenize -m "$OUT" --no-special -f "$WORK/corpus/eval.txt" >"$WORK/eval.ids"
python3 scripts/default_model/unigram.py "$WORK/train.ids" "$WORK/eval.ids" "$vocab"
echo "untrained: $("$SLM" perplexity -m "$WORK/init" --ctx 256 -f "$WORK/corpus/eval.txt" | tail -1)"
echo "slm-tiny:  $("$SLM" perplexity -m "$OUT" --ctx 256 -f "$WORK/corpus/eval.txt" | tail -1)"
