#!/usr/bin/env bash
# Compiles every source file of slm for AArch64 (g++-aarch64-linux-gnu), so
# the portable paths (no x86 intrinsics, the compiler's NEON vectorisation)
# keep compiling although no machine here runs them. Compile only: linking
# would need the libraries built for arm64, and their headers are the same
# as the host's, so the host's /usr/include serves after the cross sysroot's.
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${CXX_AARCH64:-aarch64-linux-gnu-g++}
# A fixed folder, so that with ccache a second run of unchanged sources is all hits.
work=$PWD/build-aarch64
mkdir -p "$work"
# cblas.h lives in the host's x86_64 multiarch folder.
echo '#include "/usr/include/x86_64-linux-gnu/cblas.h"' > "$work/cblas.h"
launcher=$(command -v ccache || true)
export cxx work launcher CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
find src tools -name '*.cpp' | sort | xargs -P "$(nproc)" -I{} sh -c '
  $launcher "$cxx" -std=c++20 -O1 -fopenmp -Wall -Wextra -Werror -Iinclude -Isrc -Itools/slm -I"$work" -idirafter /usr/include \
    -DSLM_DEFAULT_MODEL_DIR="\"/usr/share/slm/slm-tiny\"" -DSLM_BUILD_BINARY_DIR="\"/usr/bin\"" -c {} -o "$work/$(echo {} | tr / _).o" || { echo "aarch64: {} failed" >&2; exit 255; }'
echo "aarch64: $(find src tools -name '*.cpp' | wc -l) files compile"
