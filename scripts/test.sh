#!/usr/bin/env bash
# The whole test suite: a Release build with every test, a compile of every
# source for AArch64, then the same suite under AddressSanitizer +
# UndefinedBehaviorSanitizer, then each fuzz target for a bounded time. SLM_TEST_QUICK=1 skips the sanitizer and fuzz stages.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/setup.sh

echo "== Release build and tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSLM_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

if [ "${SLM_TEST_QUICK:-0}" = 1 ]; then exit 0; fi

echo "== AArch64 compile check"
scripts/check_aarch64.sh

echo "== AddressSanitizer + UBSan build and tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLM_SANITIZE=ON -DSLM_WERROR=ON -DSLM_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"

if [ -x scripts/fuzz.sh ]; then
  echo "== Fuzzing (bounded)"
  scripts/fuzz.sh "${SLM_FUZZ_SECONDS:-30}"
fi
