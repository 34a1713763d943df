#!/usr/bin/env bash
# Writes the model-parity fixtures: small random models made with `slm create`,
# one per option of the Llama family, and for each the values the PyTorch
# reference computes (tests/reference/llama_reference.py):
#
#   OUTDIR/NAME/model/          the model folder (config.json, safetensors)
#   OUTDIR/NAME/expected.json   prompt, last logits, greedy ids, nll, ...
#
# Usage: make_fixtures.sh SLM_BIN OUTDIR
# PYTHON overrides the interpreter (default /usr/bin/python3, Debian's, which
# has python3-torch). The model list must match kModels in
# tests/parity/test_parity.cpp.
set -euo pipefail

# Exits non-zero only when nothing can be made (no slm, no torch); a single
# model that fails is reported by its own tests.
if [[ $# -ne 2 ]]; then
  echo "usage: $0 SLM_BIN OUTDIR" >&2
  exit 2
fi
SLM_BIN=$1
OUTDIR=$2
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REFERENCE="$HERE/../reference/llama_reference.py"

if [[ ! -x $SLM_BIN ]]; then
  echo "$0: $SLM_BIN is not an executable slm binary" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import torch, numpy' 2>/dev/null; then
  echo "$0: $PYTHON cannot import torch and numpy (install python3-torch python3-numpy: scripts/setup.sh)" >&2
  exit 1
fi

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"

# Weights ~ N(0, 0.2²): large enough that logits spread over several units and
# greedy choices are rarely near ties, small enough that nothing saturates.
COMMON=(--init-std 0.2 --vocab 384)

# create NAME PROMPT_LEN SEED -- slm create options...
# Creates OUTDIR/NAME/model now; the reference runs on it afterwards with a
# random prompt of PROMPT_LEN ids drawn with SEED. A model that fails (slm
# create refuses it, the reference rejects it) leaves OUTDIR/NAME/error.txt,
# which its tests report; the others still run.
specs=()
create() {
  local name=$1 prompt_len=$2 seed=$3
  shift 4
  mkdir -p "$OUTDIR/$name"
  if "$SLM_BIN" create "${COMMON[@]}" --seed "$seed" --out "$OUTDIR/$name/model" "$@" 2>"$OUTDIR/$name/create.log"; then
    specs+=("$name $prompt_len $seed")
  else
    { echo "slm create $* failed:"; cat "$OUTDIR/$name/create.log"; } >"$OUTDIR/$name/error.txt"
  fi
}

reference() {
  local name=$1 prompt_len=$2 seed=$3
  if ! "$PYTHON" "$REFERENCE" "$OUTDIR/$name/model" --out "$OUTDIR/$name/expected.json" \
    --prompt-len "$prompt_len" --seed "$seed" 2>"$OUTDIR/$name/reference.log"; then
    { echo "the reference failed:"; cat "$OUTDIR/$name/reference.log"; } >"$OUTDIR/$name/error.txt"
  fi
}

create llama_gqa 24 1 -- --arch llama --hidden 96 --layers 2 --heads 6 --kv-heads 2 --intermediate 192
create llama_rope_llama3 24 2 -- --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 \
  --tie-embeddings --rope-scaling llama3 --rope-factor 8 --rope-low-freq-factor 1 --rope-high-freq-factor 4 \
  --rope-original-max-position 64 --rope-theta 10000 --max-position 4096
create llama_rope_linear 24 3 -- --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 4 --intermediate 128 \
  --rope-scaling linear --rope-factor 4 --rope-theta 500000
create llama_bias 20 4 -- --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 1 --intermediate 128 --attention-bias
create qwen2 24 5 -- --arch qwen2 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 160 --rope-theta 1000000
create qwen3 24 6 -- --arch qwen3 --hidden 48 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 --intermediate 128 \
  --tie-embeddings
create qwen3_window 24 7 -- --arch qwen3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 \
  --sliding-window 5
# slm create windows every layer; Qwen's max_window_layers keeps the first
# layers on full attention, so make layer 0 full and layer 1 windowed.
"$PYTHON" - "$OUTDIR/qwen3_window/model/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["max_window_layers"] = 1
json.dump(config, open(path, "w"), indent=2)
EOF
create mistral_window 24 8 -- --arch mistral --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 \
  --sliding-window 6
create llama_bf16 24 9 -- --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --dtype bf16
create llama_f16 24 10 -- --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --dtype f16
create llama_sharded 24 11 -- --arch llama --hidden 64 --layers 3 --heads 4 --kv-heads 2 --intermediate 128 --shards 3

# The reference runs are independent: two at a time (the machines have two cores).
pids=()
for spec in "${specs[@]}"; do
  # shellcheck disable=SC2086
  reference $spec &
  pids+=($!)
  if (( ${#pids[@]} >= 2 )); then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
done
wait
failed=""
for error in "$OUTDIR"/*/error.txt; do
  [[ -e $error ]] && failed+="$(basename "$(dirname "$error")") "
done
echo "model parity fixtures in $OUTDIR${failed:+; failed (see NAME/error.txt): $failed}" >&2
