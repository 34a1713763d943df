#!/usr/bin/env bash
# AArch64 build and tests: cross-builds slm and its kernel tests for AArch64
# (g++-aarch64-linux-gnu with Debian's arm64 multiarch libraries,
# cmake/aarch64-linux-gnu.cmake), then runs them under qemu-aarch64 on two
# emulated CPUs: cortex-a53 (ARMv8.0: NEON, no SDOT) offers the scalar and
# neon paths, max (every feature qemu has) adds neondot and neonbf16 (BF16
# and I8MM). The kernel tests run each path the CPU offers against the
# reference kernels; one greedy generation of the default model per path
# must give the scalar path's tokens, and on max the bf16, q8 and q4 weights
# through neonbf16's own GEMMs (a 15-token prompt) neondot's tokens.
# Emulated timings say nothing of speed on ARM hardware.
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
# generate CPU PATH DTYPE PROMPT: the 24 greedy tokens.
generate() {
  SLM_CPU_ISA=$2 emulate "$1" 300 "$build/slm" generate -m models/slm-tiny --dtype "$3" -p "$4" -n 24 \
    --temperature 0 --ignore-eos --output-format json | python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens"])'
}
short="And God said"
long="In the beginning God created the heaven and the earth. And the earth was"
for cpu_paths in "cortex-a53 neon" "max neon neondot neonbf16"; do
  read -r cpu paths <<< "$cpu_paths"
  echo "aarch64 -cpu $cpu: kernel tests (scalar $paths)"
  emulate "$cpu" 900 "$build/tests/test_kernels" --gtest_brief=1 --gtest_filter="-$slow"
  want=$(generate "$cpu" scalar f32 "$short")
  [ "$(python3 -c "print(len($want))")" = 24 ] || { echo "aarch64 -cpu $cpu: generate gave $want" >&2; exit 1; }
  for isa in $paths; do
    got=$(generate "$cpu" "$isa" f32 "$short")
    [ "$got" = "$want" ] || { echo "aarch64 -cpu $cpu: $isa generated $got, scalar $want" >&2; exit 1; }
    echo "aarch64 -cpu $cpu: $isa generates the scalar path's 24 tokens"
  done
done
# neonbf16's bf16 and integer GEMMs inside matmul (tiles shared among
# threads, prompt-sized products); the other paths' prompt products are
# OpenBLAS's, left out above.
echo "aarch64 -cpu max: prompt-sized bf16, q8 and q4 products"
emulate max 900 "$build/tests/test_kernels" --gtest_brief=1 \
  --gtest_filter='Dtypes/MatmulTest.GemmPath*/bf16:Dtypes/MatmulTest.GemmPath*/q8:Dtypes/MatmulTest.GemmPath*/q4:Dtypes/MatmulTest.PanelAndBlock*/bf16'
for dtype in bf16 q8 q4; do
  want=$(generate max neondot "$dtype" "$long")
  got=$(generate max neonbf16 "$dtype" "$long")
  [ "$got" = "$want" ] || { echo "aarch64 -cpu max: $dtype weights on neonbf16 generated $got, neondot $want" >&2; exit 1; }
  echo "aarch64 -cpu max: $dtype weights through neonbf16's GEMMs give neondot's 24 tokens"
done
