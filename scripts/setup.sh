#!/usr/bin/env bash
# Installs every package slm needs to build, test and benchmark on Debian 12,
# then the npm packages of the references and of the server's test clients
# (from the committed lock files).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(
  build-essential cmake pkg-config        # compiler and build
  nlohmann-json3-dev                      # JSON: config.json, tokenizer.json, CLI output
  libsimdjson-dev                         # JSON at GB/s: the 33 MB Gemma 3 tokenizer.json loads in well under 1 s
  libcli11-dev                            # command-line parsing
  libpcre2-dev                            # Unicode regular expressions of pre-tokenizers
  libutf8proc-dev                         # Unicode normalization (NFC, NFKC, ...)
  libopenblas-dev                         # f32 matrix products for prefill
  libcpp-httplib-dev                      # HTTP/1.1 server of slm serve (threads, keep-alive, chunked streaming)
  libgtest-dev libgmock-dev               # unit tests
  libbenchmark-dev                        # microbenchmarks
  clang libclang-rt-14-dev                # libFuzzer targets
  g++-aarch64-linux-gnu qemu-user         # AArch64 build and tests under emulation (scripts/check_aarch64.sh)
  libgtest-dev:arm64 libopenblas-dev:arm64 libpcre2-dev:arm64 libutf8proc-dev:arm64 libcpp-httplib-dev:arm64
  libsimdjson14:arm64                     # (libsimdjson-dev is one architecture only: cmake/aarch64-linux-gnu.cmake)
  libgomp1:arm64                          # the programs run on the multiarch runtime alone (scripts/check_aarch64.sh)
  python3-torch python3-numpy             # PyTorch reference for parity tests
  python3-jinja2                          # chat-template reference: the Jinja transformers renders with
  bible-kjv-text bible-kjv fortunes       # public-domain text: tokenizer benchmarks, the default model's recipe
  chromium fonts-dejavu-core              # headless browser for the web chat's end-to-end test
  tmux                                    # drives slm chat in a terminal for its interactive test
  ccache                                  # compiler cache: a rebuild of unchanged sources is a cache hit
)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)                  # tokenizer reference (@huggingface/tokenizers)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # The arm64 libraries come from Debian's multiarch archive.
  dpkg --print-foreign-architectures | grep -qx arm64 || as_root dpkg --add-architecture arm64
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for dir in tests/reference tests/serve; do
  if [ -f "$dir/package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
echo "setup: all dependencies installed"
