#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.cpp) with clang, AddressSanitizer
# and UBSan in build-fuzz, then runs each for SECONDS (default 60), as many
# at once as there are cores, starting
# from its committed seed corpus tests/fuzz/corpus/<target>/ (and the
# dictionary tests/fuzz/<target>.dict when there is one). New inputs go to
# build-fuzz/corpus/<target>/, crashes to build-fuzz/artifacts/. Exits non-zero
# when any target finds a crash.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for source in tests/fuzz/fuzz_*.cpp; do targets+=("$(basename "$source" .cpp)"); done
fi

# -O1 and line tables, as for the sanitized suite: a fifth less compile time.
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DSLM_FUZZ=ON -DSLM_SANITIZE=ON \
  -DSLM_BUILD_TESTS=OFF -DSLM_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]}"

mkdir -p build-fuzz/artifacts
# One target's run: its log in build-fuzz/TARGET.log, its status its exit code.
fuzz_one() {
  local target=$1 binary work
  binary=$(find build-fuzz -type f -name "$target" -perm -u+x | head -n 1)
  work=build-fuzz/corpus/$target
  mkdir -p "$work"
  local options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
                 -artifact_prefix="build-fuzz/artifacts/$target-")
  [ -f "tests/fuzz/$target.dict" ] && options+=(-dict="tests/fuzz/$target.dict")
  local seeds=()
  [ -d "tests/fuzz/corpus/$target" ] && seeds+=("tests/fuzz/corpus/$target")
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$binary" "${options[@]}" "$work" "${seeds[@]}" 2>"build-fuzz/$target.log"
}

declare -A running=()
failed=()
# Waits for one running target and reports it.
reap() {
  local pid status=0 target
  wait -n -p pid "${!running[@]}" || status=$?
  target=${running[$pid]}
  unset "running[$pid]"
  echo "== $target: ${seconds}s, exit $status"
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)" "build-fuzz/$target.log" || true
  if [ "$status" != 0 ]; then
    failed+=("$target")
    tail -n 40 "build-fuzz/$target.log"
  fi
}
for target in "${targets[@]}"; do
  while [ ${#running[@]} -ge "$(nproc)" ]; do reap; done
  fuzz_one "$target" &
  running[$!]=$target
done
while [ ${#running[@]} -gt 0 ]; do reap; done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]} (inputs in build-fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: no crashes in ${targets[*]} (${seconds}s each)"
