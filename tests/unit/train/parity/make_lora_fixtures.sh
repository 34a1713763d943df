#!/usr/bin/env bash
# Writes the training parity fixtures: small random models (slm create) and,
# for each, what tests/reference/lora_reference.py computes in PyTorch: initial
# adapters in PEFT layout, a fixed batch, the loss and LoRA gradients, and a
# 20-step AdamW loss curve; for the full_* fixtures (--full) the gradient of
# every weight and the curve of training them all.
#
#   OUTDIR/NAME/model/           the model folder
#   OUTDIR/NAME/adapter/         adapter_config.json + adapter_model.safetensors (LoRA only)
#   OUTDIR/NAME/expected.json
#   OUTDIR/NAME/expected_bf16_activations.json   bf16 bases: the reference rounding
#                                as AVX512-BF16 does (lora_reference.py --bf16-activations)
#
# Usage: make_lora_fixtures.sh SLM_BIN OUTDIR. PYTHON overrides the
# interpreter (default /usr/bin/python3, Debian's, with python3-torch).
# OUTDIR/models.txt lists the fixtures in order; test_lora_parity.cpp holds
# its own list (kModels) to it.
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 SLM_BIN OUTDIR" >&2
  exit 2
fi
SLM_BIN=$1
OUTDIR=$2
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REFERENCE="$HERE/../../../reference/lora_reference.py"
if ! "$PYTHON" -c 'import torch, numpy' 2>/dev/null; then
  echo "$0: $PYTHON cannot import torch and numpy (install python3-torch python3-numpy)" >&2
  exit 1
fi
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"

# fixture NAME "REFERENCE OPTIONS" -- slm create options...
fixture() {
  local name=$1 reference_options=$2
  shift 3
  echo "$name" >>"$OUTDIR/models.txt"
  mkdir -p "$OUTDIR/$name"
  "$SLM_BIN" create --init-std 0.2 --vocab 96 --seed 7 --out "$OUTDIR/$name/model" "$@" 2>/dev/null
  # shellcheck disable=SC2086
  "$PYTHON" "$REFERENCE" "$OUTDIR/$name/model" --out "$OUTDIR/$name" $reference_options
}

fixture llama_gqa "--targets all-linear" -- \
  --arch llama --hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 48
fixture qwen3_tied "--targets q_proj,v_proj,down_proj --schedule linear --seed 1" -- \
  --arch qwen3 --hidden 32 --layers 2 --heads 4 --kv-heads 1 --head-dim 16 --intermediate 48 --tie-embeddings
fixture qwen2_bias "--targets all-linear --schedule constant --warmup 0 --seed 2" -- \
  --arch qwen2 --hidden 32 --layers 2 --heads 2 --kv-heads 2 --intermediate 40
fixture llama_bias "--targets o_proj,up_proj --schedule cosine --warmup 0 --seed 4" -- \
  --arch llama --hidden 32 --layers 2 --heads 4 --kv-heads 4 --intermediate 48 --attention-bias
fixture mistral_window "--targets all-linear --seq 16 --seed 3" -- \
  --arch mistral --hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 48 --sliding-window 5
fixture full_llama_gqa "--full --seed 5" -- \
  --arch llama --hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 48
fixture full_qwen3_tied "--full --schedule linear --seed 6" -- \
  --arch qwen3 --hidden 32 --layers 2 --heads 4 --kv-heads 1 --head-dim 16 --intermediate 48 --tie-embeddings
fixture full_qwen2_bias "--full --schedule constant --warmup 0 --seed 7" -- \
  --arch qwen2 --hidden 32 --layers 2 --heads 2 --kv-heads 2 --intermediate 40
fixture full_llama_bias "--full --seed 8" -- \
  --arch llama --hidden 32 --layers 2 --heads 4 --kv-heads 4 --intermediate 48 --attention-bias
# Gemma 3: q/k norm, (1 + weight) norms and post-norms, GeGLU, scaled
# embeddings, a local rope base on the windowed layer; Gemma 2: soft caps small
# enough to bend scores and logits (their backward), a window on layer 0.
GEMMA3=(--arch gemma3_text --hidden 32 --layers 2 --heads 4 --kv-heads 2 --head-dim 8 --intermediate 48
  --tie-embeddings --sliding-window 5 --sliding-pattern 2 --rope-theta 10000 --rope-local-theta 100
  --query-pre-attn-scalar 12)
GEMMA2=(--arch gemma2 --hidden 32 --layers 2 --heads 4 --kv-heads 2 --head-dim 8 --intermediate 48
  --sliding-window 5 --attn-softcap 2 --final-softcap 3)
fixture gemma3 "--targets all-linear --seq 16 --seed 9" -- "${GEMMA3[@]}"
fixture full_gemma3 "--full --seq 16 --seed 10" -- "${GEMMA3[@]}"
fixture gemma2 "--targets q_proj,k_proj,o_proj,gate_proj,down_proj --seq 16 --seed 11" -- "${GEMMA2[@]}"
fixture full_gemma2 "--full --seq 16 --seed 12" -- "${GEMMA2[@]}"
# Phi-3: q/k/v and gate/up fused in the checkpoint, LoRA on the fused modules
# (one A, B over the fused rows); longrope with an original context of 8, so
# the 16-token sequences train on the long factors with the attention factor.
PHI3=(--arch phi3 --hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 48 --sliding-window 5)
fixture phi3 "--targets all-linear --seq 16 --seed 13" -- "${PHI3[@]}"
fixture phi3_longrope "--targets qkv_proj,down_proj --seq 16 --seed 14" -- "${PHI3[@]}" --max-position 64 \
  --rope-scaling longrope --rope-original-max-position 8 --rope-short-factor 1,1.5,2,3 --rope-long-factor 2,3,5,8
fixture full_phi3 "--full --seq 16 --seed 15" -- "${PHI3[@]}"
# A bf16 base (the README's path): the plain reference, and the one that
# rounds each base product as the AVX512-BF16 path does (same adapters, same
# batch), which test_lora_parity reads on that path.
BF16=(--arch llama --hidden 32 --layers 2 --heads 4 --kv-heads 2 --intermediate 48 --dtype bf16)
fixture llama_bf16 "--targets all-linear --seed 16" -- "${BF16[@]}"
"$PYTHON" "$REFERENCE" "$OUTDIR/llama_bf16/model" --out "$OUTDIR/llama_bf16" --targets all-linear --seed 16 \
  --bf16-activations
