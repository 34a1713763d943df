#!/usr/bin/env bash
# The README's first command: install dependencies, build slm and generate
# with the default model (models/slm-tiny, committed: no download).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target slm_cli
build/slm info
build/slm generate -p "Once upon a time" -n 60 --seed 1
