#!/usr/bin/env bash
# Compiles every source file of slm for AArch64 (g++-aarch64-linux-gnu), so
# the portable paths (no x86 intrinsics, the compiler's NEON vectorisation)
# keep compiling although no machine here runs them. The front end only
# (-fsyntax-only: parsing, overload resolution, template instantiation,
# intrinsics and their types), which is where a portable path breaks, in half
# the time code generation would add. No linking: that would need the
# libraries built for arm64, and their headers are the same as the host's, so
# the host's /usr/include serves after the cross sysroot's.
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${CXX_AARCH64:-aarch64-linux-gnu-g++}
work=$PWD/build-aarch64
mkdir -p "$work"
# cblas.h lives in the host's x86_64 multiarch folder.
echo '#include "/usr/include/x86_64-linux-gnu/cblas.h"' > "$work/cblas.h"
export cxx work
find src tools -name '*.cpp' | sort | xargs -P "$(nproc)" -I{} sh -c '
  "$cxx" -std=c++20 -fsyntax-only -O1 -fopenmp -Wall -Wextra -Werror -Wno-psabi -Iinclude -Isrc -Itools/slm -I"$work" -idirafter /usr/include \
    -DSLM_DEFAULT_MODEL_DIR="\"/usr/share/slm/slm-tiny\"" -DSLM_BUILD_BINARY_DIR="\"/usr/bin\"" {} || { echo "aarch64: {} failed" >&2; exit 255; }'
echo "aarch64: $(find src tools -name '*.cpp' | wc -l) files compile"
