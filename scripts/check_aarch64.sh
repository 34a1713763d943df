#!/usr/bin/env bash
# AArch64 build and tests: cross-builds slm and its kernel tests for AArch64
# (g++-aarch64-linux-gnu with Debian's arm64 multiarch libraries,
# cmake/aarch64-linux-gnu.cmake), then runs them under qemu-aarch64 on two
# emulated CPUs: cortex-a53 (ARMv8.0: NEON, no SDOT) offers the scalar and
# neon paths, max (every feature qemu has) adds neondot. The kernel tests run
# each path the CPU offers against the reference kernels; one greedy
# generation of the default model per path must give the scalar path's
# tokens. Emulated timings say nothing of speed on ARM hardware.
set -euo pipefail
cd "$(dirname "$0")/.."
build=$PWD/build-aarch64
cmake -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release \
  -DSLM_WERROR=ON -DSLM_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target test_kernels slm_cli
# One thread: OpenMP's waits on qemu's emulated futexes make two threads
# hundreds of times slower.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# The kernel tests but attention and the prompt-sized matmuls, which run
# OpenBLAS's GEMM on weights the paths widen (widening is tested on its own)
# and take minutes under emulation.
slow='Attention.*:Dtypes/MatmulTest.GemmPath*:Dtypes/MatmulTest.PanelAndBlock*:Dtypes/MatmulTest.WideRows*'
# The arm64 runtime is Debian's multiarch one alone (loader, libc, libgomp,
# libstdc++ from one glibc and one GCC build): the cross toolchain's loader in
# /usr/aarch64-linux-gnu is another glibc build, and a program that loads it
# beside the multiarch libc corrupts pthread_create's stack cache and spins.
# A run that hangs anyway fails here instead of at CI's time limit.
emulate() {
  local cpu=$1 limit=$2; shift 2
  timeout "$limit" qemu-aarch64 -cpu "$cpu" "$@" || {
    local rc=$?
    [ "$rc" != 124 ] || echo "aarch64 -cpu $cpu: $1 did not end within $limit s" >&2
    return "$rc"
  }
}
generate() {
  SLM_CPU_ISA=$2 emulate "$1" 120 "$build/slm" generate -m models/slm-tiny -p "And God said" -n 24 --temperature 0 \
    --ignore-eos --output-format json | python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens"])'
}
for cpu_paths in "cortex-a53 neon" "max neon neondot"; do
  read -r cpu paths <<< "$cpu_paths"
  echo "aarch64 -cpu $cpu: kernel tests (scalar $paths)"
  emulate "$cpu" 900 "$build/tests/test_kernels" --gtest_brief=1 --gtest_filter="-$slow"
  want=$(generate "$cpu" scalar)
  [ "$(python3 -c "print(len($want))")" = 24 ] || { echo "aarch64 -cpu $cpu: generate gave $want" >&2; exit 1; }
  for isa in $paths; do
    got=$(generate "$cpu" "$isa")
    [ "$got" = "$want" ] || { echo "aarch64 -cpu $cpu: $isa generated $got, scalar $want" >&2; exit 1; }
    echo "aarch64 -cpu $cpu: $isa generates the scalar path's 24 tokens"
  done
done
