#!/usr/bin/env bash
# Writes the model-parity fixtures: small random models made with `slm create`,
# one per option of the Llama family, and for each the values the PyTorch
# reference computes (tests/reference/llama_reference.py):
#
#   OUTDIR/NAME/model/          the model folder (config.json, safetensors)
#   OUTDIR/NAME/expected.json   prompt, last logits, greedy ids, nll, ...
#   OUTDIR/NAME/expected_bf16_activations.json   bf16 models: the same with
#                               activations rounded as on AVX512-BF16
#
# Usage: make_fixtures.sh SLM_BIN OUTDIR
# PYTHON overrides the interpreter (default /usr/bin/python3, Debian's, which
# has python3-torch). OUTDIR/models.txt lists every model this script makes,
# in order; test_parity.cpp holds its own list (kModels) to it.
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
names=()
create() {
  local name=$1 prompt_len=$2 seed=$3
  shift 4
  names+=("$name")
  mkdir -p "$OUTDIR/$name"
  if "$SLM_BIN" create "${COMMON[@]}" --seed "$seed" --out "$OUTDIR/$name/model" "$@" 2>"$OUTDIR/$name/create.log"; then
    specs+=("$name $prompt_len $seed")
  else
    { echo "slm create $* failed:"; cat "$OUTDIR/$name/create.log"; } >"$OUTDIR/$name/error.txt"
  fi
}

# expect NAME CONDITION: the fixture's config.json (as `c`, a Python dict)
# holds what the fixture is meant to exercise, so a change to `slm create`
# cannot quietly drop a feature from the parity tests.
expect() {
  local name=$1 condition=$2
  [[ -e $OUTDIR/$name/error.txt ]] && return
  if ! "$PYTHON" -c 'import json, sys; c = json.load(open(sys.argv[1])); sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)' \
    "$OUTDIR/$name/model/config.json" "$condition"; then
    echo "config.json does not have: $condition" >"$OUTDIR/$name/error.txt"
  fi
}

# A model with bf16 weights also gets expected_bf16_activations.json: the
# reference rounding every product's input to bf16 where slm's AVX512-BF16
# path does (--bf16-activations), which test_parity holds that path to tightly.
reference() {
  local name=$1 prompt_len=$2 seed=$3
  if ! "$PYTHON" "$REFERENCE" "$OUTDIR/$name/model" --out "$OUTDIR/$name/expected.json" \
    --prompt-len "$prompt_len" --seed "$seed" 2>"$OUTDIR/$name/reference.log"; then
    { echo "the reference failed:"; cat "$OUTDIR/$name/reference.log"; } >"$OUTDIR/$name/error.txt"
  elif grep -q '"weight_dtypes": \[[^]]*"BF16"' "$OUTDIR/$name/expected.json" &&
    ! "$PYTHON" "$REFERENCE" "$OUTDIR/$name/model" --out "$OUTDIR/$name/expected_bf16_activations.json" \
      --prompt-len "$prompt_len" --seed "$seed" --bf16-activations 2>>"$OUTDIR/$name/reference.log"; then
    { echo "the reference with --bf16-activations failed:"; cat "$OUTDIR/$name/reference.log"; } >"$OUTDIR/$name/error.txt"
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
# Gemma 3: q/k norm, (1 + weight) norms, post-norms, GeGLU, scaled embeddings,
# a 6-token window on layers 0 and 1 with their own rope base, a full layer 2
# with linear rope scaling, query_pre_attn_scalar != head_dim != hidden/heads.
create gemma3 24 12 -- --arch gemma3_text --hidden 64 --layers 3 --heads 4 --kv-heads 2 --head-dim 24 \
  --intermediate 128 --tie-embeddings --sliding-window 6 --sliding-pattern 3 --rope-theta 1000000 \
  --rope-local-theta 10000 --rope-scaling linear --rope-factor 4 --query-pre-attn-scalar 32
expect gemma3 'c["model_type"] == "gemma3_text" and c["hidden_activation"] == "gelu_pytorch_tanh"
  and c["layer_types"] == ["sliding_attention", "sliding_attention", "full_attention"] and c["sliding_window"] == 6
  and c["rope_local_base_freq"] != c["rope_theta"] and c["rope_scaling"]["rope_type"] == "linear"
  and c["query_pre_attn_scalar"] != c["head_dim"] and c["tie_word_embeddings"]'
# bf16 weights: the embedding scale is rounded to bf16 (sqrt(64) = 8 is exact, so use 48).
create gemma3_bf16 24 13 -- --arch gemma3_text --hidden 48 --layers 2 --heads 4 --kv-heads 1 --head-dim 16 \
  --intermediate 96 --sliding-window 5 --sliding-pattern 2 --dtype bf16
expect gemma3_bf16 'c["torch_dtype"] == "bfloat16" and c["layer_types"] == ["sliding_attention", "full_attention"]'
# Gemma 2: soft caps small enough to bend the scores and logits, a window on the even layers.
create gemma2 24 14 -- --arch gemma2 --hidden 64 --layers 3 --heads 4 --kv-heads 2 --head-dim 16 \
  --intermediate 128 --sliding-window 5 --attn-softcap 3 --final-softcap 4 --query-pre-attn-scalar 24
expect gemma2 'c["model_type"] == "gemma2" and c["attn_logit_softcapping"] == 3 and c["final_logit_softcapping"] == 4
  and c["layer_types"] == ["sliding_attention", "full_attention", "sliding_attention"] and not c["tie_word_embeddings"]'

# Phi-3: q/k/v and gate/up fused in the checkpoint, a window on every layer.
create phi3 24 15 -- --arch phi3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --sliding-window 6
expect phi3 'c["model_type"] == "phi3" and c["sliding_window"] == 6 and not c["tie_word_embeddings"]
  and c["rope_scaling"] is None'
create phi3_bf16 24 18 -- --arch phi3 --hidden 64 --layers 2 --heads 4 --kv-heads 1 --intermediate 128 \
  --sliding-window 7 --dtype bf16
expect phi3_bf16 'c["torch_dtype"] == "bfloat16" and c["model_type"] == "phi3"'
# Phi-3.5's longrope: a 131072 context over an original 4096 (attention factor
# 1.19), so these 56 tokens rotate by the short factors; then an original
# context of 16, which the 24-token prompt already passes: the long factors.
LONGROPE=(--arch phi3 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --rope-scaling longrope
  --rope-short-factor 1,1.2,1.5,2,3,5,8,13 --rope-long-factor 1.5,2,3,5,8,13,21,34)
create phi3_longrope 24 16 -- "${LONGROPE[@]}" --max-position 131072 --rope-original-max-position 4096
expect phi3_longrope 'c["rope_scaling"]["type"] == "longrope" and c["original_max_position_embeddings"] == 4096
  and c["max_position_embeddings"] == 131072 and "attention_factor" not in c["rope_scaling"]'
create phi3_longrope_long 24 17 -- "${LONGROPE[@]}" --max-position 64 --rope-original-max-position 16
expect phi3_longrope_long 'c["rope_scaling"]["type"] == "longrope" and c["original_max_position_embeddings"] == 16'

printf '%s\n' "${names[@]}" >"$OUTDIR/models.txt"

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
