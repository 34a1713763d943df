#!/usr/bin/env bash
# The parity tests can fail: for each way of breaking the PyTorch reference
# (llama_reference.py's SLM_REFERENCE_MUTATION: leave out the window, the rope
# scaling, the q/k norm, the biases, the soft caps, Gemma's (1 + weight),
# or swap gate and up), the fixtures are made again with the broken
# reference and test_parity runs on them: every fixture that has the feature
# must fail its LastLogitsMatchReference test. A feature whose fixtures still
# pass is one the suite does not see. Opt-in (cmake -DSLM_MUTATION_TESTS=ON;
# about ten minutes on two cores).
#
# Usage: mutations.sh SLM_BIN TEST_PARITY_BIN OUTDIR
set -euo pipefail
if [[ $# -ne 3 ]]; then
  echo "usage: $0 SLM_BIN TEST_PARITY_BIN OUTDIR" >&2
  exit 2
fi
SLM_BIN=$1
TEST_PARITY=$2
OUTDIR=$3
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# mutation: the fixtures that have what it breaks (each must fail).
declare -A must_fail=(
  [no_window]="mistral_window qwen3_window gemma3 gemma3_bf16 gemma2 phi3 phi3_bf16"
  [no_rope_scaling]="llama_rope_llama3 llama_rope_linear gemma3 phi3_longrope phi3_longrope_long"
  [no_qk_norm]="qwen3 qwen3_window gemma3 gemma3_bf16"
  [no_bias]="llama_bias qwen2"
  [no_softcap]="gemma2"
  [no_norm_offset]="gemma3 gemma3_bf16 gemma2"
  [swap_gate_up]="llama_gqa qwen2 gemma2 phi3 phi3_longrope"
)

mkdir -p "$OUTDIR"
failures=0
for mutation in no_window no_rope_scaling no_qk_norm no_bias no_softcap no_norm_offset swap_gate_up; do
  dir="$OUTDIR/$mutation"
  SLM_REFERENCE_MUTATION=$mutation PYTHON=$PYTHON bash "$HERE/make_fixtures.sh" "$SLM_BIN" "$dir" 2>"$dir.log" || true
  SLM_PARITY_DIR=$dir OMP_WAIT_POLICY=passive "$TEST_PARITY" --gtest_filter='Models/Parity.LastLogitsMatchReference/*' \
    --gtest_output="json:$dir.json" >/dev/null 2>&1 || true
  failed=$("$PYTHON" - "$dir.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
names = [t["value_param"].strip('"') for suite in report["testsuites"] for t in suite["testsuite"]
         if "value_param" in t and t.get("failures")]
print(" ".join(sorted(names)))
PY
  ) || failed=""
  # The run counts only if the broken reference made every fixture (a missing
  # one would fail for that reason alone) and a model without the feature
  # still passes.
  made=$( (find "$dir" -mindepth 2 -maxdepth 2 -name expected.json 2>/dev/null || true) | wc -l)
  listed=$( (cat "$dir/models.txt" 2>/dev/null || true) | wc -l)
  if [[ $made -eq 0 || $made -ne $listed ]]; then
    echo "FAIL: with $mutation, the reference made $made of $listed fixtures (see $dir.log)"
    failures=$((failures + 1))
    continue
  fi
  if [[ $mutation != swap_gate_up && " $failed " == *" llama_gqa "* ]]; then
    echo "FAIL: with $mutation, llama_gqa (which lacks the feature) fails too: the run is not the mutation's"
    failures=$((failures + 1))
    continue
  fi
  missed=""
  for fixture in ${must_fail[$mutation]}; do
    [[ " $failed " == *" $fixture "* ]] || missed+="$fixture "
  done
  if [[ -z $missed ]]; then
    echo "ok: $mutation fails ${must_fail[$mutation]}"
  else
    echo "FAIL: with $mutation, these fixtures still pass: $missed(failed: ${failed:-none})"
    failures=$((failures + 1))
  fi
done
exit $((failures > 0))
