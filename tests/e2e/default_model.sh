#!/usr/bin/env bash
# The newcomer path: commands without -m use the committed default model
# (models/slm-tiny), which loads, generates text made of its own vocabulary,
# and beats a unigram model on held-out text; $SLM_MODEL overrides it.
source "$(dirname "$0")/lib.sh"
model="$SOURCE_DIR/models/slm-tiny"
unset SLM_MODEL

size=$(stat -c %s "$model/model.safetensors")
[ "$size" -le $((25 * 1024 * 1024)) ] && pass "weights are $size bytes (<= 25 MiB)" || fail "weights too large: $size"
[ -f "$model/MODEL_CARD.md" ] && pass "model card present" || fail "no MODEL_CARD.md"

"$SLM_BIN" info --output-format json > "$SLM_WORK/info.json"
[ "$(json_get "$SLM_WORK/info.json" 'j["model_type"]')" = llama ] && pass "info without -m reads the default model" \
  || fail "info: $(cat "$SLM_WORK/info.json")"

"$SLM_BIN" generate -p "And God said" -n 24 --temperature 0 --ignore-eos --output-format json > "$SLM_WORK/greedy.json"
[ "$(json_get "$SLM_WORK/greedy.json" 'len(j["tokens"])')" = 24 ] && pass "generate without -m" || fail "generate"
# A trained model continues a verse with words; a broken one repeats one token or emits noise.
[ "$(json_get "$SLM_WORK/greedy.json" 'len(set(j["tokens"])) >= 6 and sum(c.isalpha() for c in j["text"]) > len(j["text"]) // 2')" = True ] \
  && pass "greedy continuation is mostly letters: $(json_get "$SLM_WORK/greedy.json" 'repr(j["text"])')" \
  || fail "continuation: $(json_get "$SLM_WORK/greedy.json" 'repr(j["text"])')"

# Held-out text the model never saw (written for this test): perplexity far
# below the vocabulary size (what an untrained model scores).
cat > "$SLM_WORK/heldout.txt" <<'TEXT'
And the king said unto his servants, Go ye into the city, and bring me word of all that is done there.
The people of the land gathered at the gate, and the elders spake unto them, saying, Fear not.
TEXT
"$SLM_BIN" perplexity -f "$SLM_WORK/heldout.txt" --output-format json > "$SLM_WORK/ppl.json"
[ "$(json_get "$SLM_WORK/ppl.json" 'j["perplexity"] < 100')" = True ] \
  && pass "held-out perplexity $(json_get "$SLM_WORK/ppl.json" 'round(j["perplexity"], 1)') < 100 (vocabulary 4096)" \
  || fail "perplexity $(cat "$SLM_WORK/ppl.json")"

out=$(SLM_MODEL="$SLM_WORK/missing" "$SLM_BIN" generate -p hi -n 1 2>&1) && fail "SLM_MODEL ignored" \
  || { echo "$out" | grep -q "$SLM_WORK/missing" && pass "SLM_MODEL overrides the default: $out" || fail "error: $out"; }
finish
