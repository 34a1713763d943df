#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.cpp) with clang, AddressSanitizer
# and UBSan in build-fuzz, then runs each for SECONDS (default 60) starting
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

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLM_FUZZ=ON -DSLM_SANITIZE=ON \
  -DSLM_BUILD_TESTS=OFF -DSLM_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]}"

mkdir -p build-fuzz/artifacts
failed=()
for target in "${targets[@]}"; do
  binary=$(find build-fuzz -type f -name "$target" -perm -u+x | head -n 1)
  work=build-fuzz/corpus/$target
  mkdir -p "$work"
  options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
           -artifact_prefix="build-fuzz/artifacts/$target-")
  [ -f "tests/fuzz/$target.dict" ] && options+=(-dict="tests/fuzz/$target.dict")
  seeds=()
  [ -d "tests/fuzz/corpus/$target" ] && seeds+=("tests/fuzz/corpus/$target")
  echo "== $target for ${seconds}s"
  if ! ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$binary" "${options[@]}" "$work" "${seeds[@]}" 2>"build-fuzz/$target.log"; then
    failed+=("$target")
    tail -n 40 "build-fuzz/$target.log"
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)" "build-fuzz/$target.log" || true
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]} (inputs in build-fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: no crashes in ${targets[*]} (${seconds}s each)"
