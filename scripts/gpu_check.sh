#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (docs/testing.md): builds
# the CUDA configuration, runs every GPU test (tests/unit/cuda, which skip
# elsewhere) and writes a report to $OUT/gpu_report.md (default build-cuda/).
# It fails when a GPU test fails or is skipped: here each one must run.
# Usage: scripts/gpu_check.sh   (about 3 minutes with 16 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build-cuda}
mkdir -p "$out"
report=$out/gpu_report.md
start=$SECONDS

command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found: no NVIDIA driver on this machine" >&2; exit 1; }
{
  echo "# slm GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo '```'
} > "$report"

cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DSLM_CUDA=ON -DSLM_WERROR=ON -DSLM_BUILD_BENCH=OFF >/dev/null
cmake --build build-cuda -j "$(nproc)" --target test_cuda slm_cli
status=0
./build-cuda/tests/test_cuda --gtest_brief=0 > "$out/test_cuda.log" 2>&1 || status=1
if grep -q "SKIPPED \]" "$out/test_cuda.log" && grep -q "no GPU" "$out/test_cuda.log"; then status=1; fi
{
  echo
  echo "## GPU tests (test_cuda): $([ $status = 0 ] && echo passed || echo FAILED)"
  echo
  echo '```'
  grep -E "^\[ *(OK|FAILED|SKIPPED) *\]|Failure|Expected|Which is|Skipped|no GPU" "$out/test_cuda.log" || true
  echo '```'
  echo
  echo "## slm info --device cuda"
  echo
  echo '```'
  ./build-cuda/slm info --device cuda 2>&1 || true
  echo '```'
  echo
  echo "$((SECONDS - start)) s in all."
} >> "$report"
cat "$report"
exit $status
