#!/usr/bin/env bash
# The whole test suite: a Release build with every test, an AArch64 build
# whose kernel tests and one generation run under qemu-aarch64, then the same
# suite under AddressSanitizer + UndefinedBehaviorSanitizer, then the threaded
# tests under ThreadSanitizer, then each fuzz target for a bounded time.
# SLM_TEST_QUICK=1 skips the sanitizer and fuzz stages. With ccache installed
# (scripts/setup.sh) a rebuild of unchanged sources is a cache hit, in this
# checkout or another; the stage times end the output.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

# Each stage's wall time, printed at the end (also when a stage fails).
stages=()
stage_name=""
stage_start=$SECONDS
stage() {
  if [ -n "$stage_name" ]; then stages+=("$(printf '%5ds  %s' $((SECONDS - stage_start)) "$stage_name")"); fi
  stage_name=$1
  stage_start=$SECONDS
  if [ -n "$stage_name" ]; then echo "== $stage_name"; fi
}
report() {
  stage ""
  echo "== stage times"
  printf '%s\n' "${stages[@]}"
  printf '%5ds  total\n' "$SECONDS"
}
trap report EXIT

stage "setup"
scripts/setup.sh

stage "Release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSLM_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
# Every test has a time limit: its own TIMEOUT where it sets one, else 10
# minutes (30 under the sanitizers), so a hang fails the run instead of
# stalling it.
stage "Release tests"
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 600

if [ "${SLM_TEST_QUICK:-0}" = 1 ]; then exit 0; fi

stage "AArch64 build and tests (qemu)"
scripts/check_aarch64.sh

# -O1 and line tables only: the sanitizers need neither full optimisation nor
# full debug info, and both cost compile time.
stage "AddressSanitizer + UBSan build"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DSLM_SANITIZE=ON -DSLM_WERROR=ON -DSLM_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j "$jobs"
stage "AddressSanitizer + UBSan tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" --timeout 1800

# ThreadSanitizer over the code that starts its own threads: the engine
# (test_generate), the tokenizer's parallel encode (test_tokenizer) and the
# server's request handling (test_serve); only those binaries are built. The
# kernels are left out, and OpenMP runs one thread: GCC's libgomp is not
# instrumented, so TSan cannot see a parallel region's fork and join and
# reports every region as racing with the code around it (70 such reports in
# the first minute of test_kernels, none of them real). The split scanner's
# sweeps against PCRE2 run on one thread and took 90 s here (the Release and
# AddressSanitizer stages run them): left out.
stage "ThreadSanitizer build"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DSLM_SANITIZE_THREAD=ON -DSLM_WERROR=ON -DSLM_BUILD_BENCH=OFF >/dev/null
cmake --build build-tsan -j "$jobs" --target test_generate test_tokenizer test_serve
stage "ThreadSanitizer tests"
printf '%s\n' generate tokenizer serve |
  OMP_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 GTEST_FILTER='-SplitScanner.*' \
  xargs -P "$jobs" -I{} sh -c 'build-tsan/tests/test_{} --gtest_brief=1 >build-tsan/test_{}.log 2>&1 || { tail -n 60 build-tsan/test_{}.log; exit 1; }'

# Ten targets, two at a time: 20 s each is 100 s of fuzzing from the
# committed seeds (SLM_FUZZ_SECONDS for longer runs).
stage "Fuzzing (bounded)"
scripts/fuzz.sh "${SLM_FUZZ_SECONDS:-20}"
