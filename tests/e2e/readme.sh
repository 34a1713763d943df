#!/usr/bin/env bash
# Every command of the README's sh blocks, run as printed, from a folder laid
# out like a checkout (build/slm, examples/): a README step that fails fails
# here. Left out, each said below: the two commands CI itself is (setup and
# build, the test suite), and one that needs a model from the hub. slm serve
# gets --port 0 added (a fixed port may be taken on a shared machine), and the
# curl after it is pointed at the port the server printed.
source "$(dirname "$0")/lib.sh"

work="$SLM_WORK/checkout"
rm -rf "$work"
mkdir -p "$work/build"
ln -s "$SLM_BIN" "$work/build/slm"
ln -s "$SOURCE_DIR/examples" "$work/examples"
cd "$work"

# The commands: each line of a ```sh block, continuation lines joined.
mapfile -t commands < <(python3 - "$SOURCE_DIR/README.md" <<'PY'
import sys
text = open(sys.argv[1]).read().split("\n")
inside, pending = False, ""
for line in text:
    if line.startswith("```"):
        inside = line.strip() == "```sh"
        continue
    if not inside or not line.strip():
        continue
    if line.endswith("\\"):
        pending += line[:-1]
        continue
    print(pending + line)
    pending = ""
PY
)
[ "${#commands[@]}" -ge 8 ] && pass "${#commands[@]} commands in the README" || fail "only ${#commands[@]} commands found"

server=""
url=""
for command in "${commands[@]}"; do
  case "$command" in
    scripts/quickstart.sh* | scripts/test.sh*)
      echo "skip: $command (CI runs it as .ci/run)"
      continue ;;
    *"~/"*)
      echo "skip: $command (needs a model from the hub)"
      continue ;;
    "build/slm serve"*)
      bash -c "${command%%#*} --port 0" 2>"$SLM_WORK/serve.err" &
      server=$!
      for _ in $(seq 300); do grep -q 'listening on' "$SLM_WORK/serve.err" && break; sleep 0.1; done
      url=$(grep -o 'listening on http://[^ ]*' "$SLM_WORK/serve.err" | cut -d' ' -f3)
      [ -n "$url" ] && pass "README: $command" || fail "README: $command: $(cat "$SLM_WORK/serve.err")"
      continue ;;
    curl*)
      command=${command//http:\/\/127.0.0.1:8080/$url} ;;
  esac
  if bash -c "$command" </dev/null >"$SLM_WORK/out.txt" 2>"$SLM_WORK/err.txt"; then
    pass "README: $command"
  else
    fail "README: $command: $(tail -3 "$SLM_WORK/err.txt")"
  fi
  case "$command" in
    curl*) grep -q '"choices"' "$SLM_WORK/out.txt" && pass "the server answered: $(head -c 200 "$SLM_WORK/out.txt")" \
      || fail "curl: $(cat "$SLM_WORK/out.txt")" ;;
    "build/slm generate"*) [ -s "$SLM_WORK/out.txt" ] && pass "it printed: $(head -c 120 "$SLM_WORK/out.txt")" \
      || fail "generate printed nothing" ;;
  esac
done
if [ -n "$server" ]; then kill "$server"; wait "$server" || true; fi
[ -f out/kettlewise-merged/model.safetensors ] && pass "the merged model folder is written" || fail "no merged model"
finish
