#!/usr/bin/env bash
# The newcomer path: commands without -m use the committed default model
# (models/slm-tiny), which loads, generates text made of its own vocabulary,
# and beats a unigram model on held-out text; its ChatML chat template renders
# as @huggingface/jinja renders it and <|im_end|> ends a generation;
# $SLM_MODEL overrides it.
source "$(dirname "$0")/lib.sh"
require_tokenizers
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
# info: where the model is, its end-of-sequence ids (ChatML's <|im_end|> too), its
# sampling defaults, its chat template, and with --tensors every weight.
"$SLM_BIN" info --tensors --output-format json > "$SLM_WORK/info-full.json"
[ "$(json_get "$SLM_WORK/info-full.json" 'j["eos_token_ids"] == [0, 2] and j["tokenizer"]["chat_template"] and j["generation_defaults"]["temperature"] == 0.8 and j["path"].endswith("models/slm-tiny") and len(j["tensors"]) == 4 * 9 + 2 and j["placement"] == "cpu: model.embed_tokens, model.layers.0-3, model.norm, lm_head"')" = True ] \
  && pass "info: path, eos ids, sampling defaults, chat template, tensors" || fail "info: $(head -c 300 "$SLM_WORK/info-full.json")"
"$SLM_BIN" finetune --data "$SOURCE_DIR/examples/kettlewise/train.jsonl" --max-steps 1 --lora-r 2 --out "$SLM_WORK/info-adapter" \
  --overwrite 2> /dev/null
"$SLM_BIN" info -m "$SLM_WORK/info-adapter" --output-format json > "$SLM_WORK/info-adapter.json"
[ "$(json_get "$SLM_WORK/info-adapter.json" 'j["kind"] == "adapter" and j["r"] == 2 and j["base_model_name_or_path"] == "slm-tiny"')" = True ] \
  && pass "info on an adapter folder describes it; a default-model adapter names its base slm-tiny, not a path" \
  || fail "info adapter: $(cat "$SLM_WORK/info-adapter.json")"
if "$SLM_BIN" merge --adapter "$SLM_WORK/info-adapter" --out "$SLM_WORK/info-merged" 2>"$SLM_WORK/info-merged.err" \
    && cmp -s "$SLM_WORK/info-merged/tokenizer.json" "$model/tokenizer.json"; then
  pass "merge without -m finds the default model from base_model_name_or_path slm-tiny"
else
  fail "merge of a default-model adapter: $(cat "$SLM_WORK/info-merged.err")"
fi
# An installed (here: copied) binary finds the default model beside it, as
# share/slm/slm-tiny, and never in the source tree; missing, it says where it looked.
prefix="$SLM_WORK/prefix"
rm -rf "$prefix"
mkdir -p "$prefix/bin"
cp "$SLM_BIN" "$prefix/bin/slm"
if "$prefix/bin/slm" generate -p hi -n 2 > /dev/null 2> "$SLM_WORK/missing.err"; then
  fail "a copied binary without share/slm/slm-tiny ran (it read the source tree)"
else
  grep -q "$prefix/share/slm/slm-tiny" "$SLM_WORK/missing.err" && grep -q "SLM_MODEL" "$SLM_WORK/missing.err" \
    && pass "missing default model: $(cat "$SLM_WORK/missing.err")" || fail "missing default model: $(cat "$SLM_WORK/missing.err")"
fi
mkdir -p "$prefix/share/slm"
cp -r "$model" "$prefix/share/slm/slm-tiny"
"$prefix/bin/slm" info --output-format json > "$SLM_WORK/installed.json"
[ "$(json_get "$SLM_WORK/installed.json" "j['path'] == '$prefix/share/slm/slm-tiny'")" = True ] \
  && pass "an installed binary uses share/slm/slm-tiny beside it" || fail "installed: $(head -c 200 "$SLM_WORK/installed.json")"

ids=$("$SLM_BIN" tokenize -p "Hello there" --no-special)
[ -n "$ids" ] && [ "$(echo "$ids" | "$SLM_BIN" detokenize)" = "Hello there" ] \
  && pass "tokenize and detokenize without -m" || fail "tokenize/detokenize without -m: '$ids'"
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

# The chat template: every conversation of the reference, with and without the
# generation prompt, rendered by `slm chat-template` (without -m) byte for byte
# as chat_template_reference.mjs renders the folder's template. Conversations
# whose content is a list of parts are left out: ChatML joins content with
# `+`, and string + list is where the port (JavaScript's Array toString),
# Python Jinja (a TypeError) and slm (the list as JSON) all differ.
node "$SOURCE_DIR/tests/reference/chat_template_reference.mjs" "$SLM_WORK/chat_reference" "default=$model" > /dev/null
if python3 - "$SLM_BIN" "$SLM_WORK" "$SLM_WORK/chat_reference/chat_templates.json" <<'PY'
import json, subprocess, sys
slm, work, reference = sys.argv[1:]
cases = [c for c in json.load(open(reference))["cases"] if c["name"].startswith("default/")
         and all(isinstance(m["content"], str) for m in c["context"]["messages"])]
if len(cases) < 10:
    sys.exit(f"only {len(cases)} default/ cases in {reference}: has tokenizer_config.json a chat_template?")
failed = 0
for case in cases:
    messages = f"{work}/messages.json"
    with open(messages, "w") as f:
        json.dump(case["context"]["messages"], f)
    flags = ["--add-generation-prompt"] if case["context"]["add_generation_prompt"] else []
    run = subprocess.run([slm, "chat-template", "--messages", messages, *flags], capture_output=True, text=True)
    ok = run.returncode != 0 if "error" in case else run.returncode == 0 and run.stdout == case["expected"]
    if not ok:
        failed += 1
        print(f"{case['name']}: expected {case.get('expected', case.get('error'))!r}, got {run.stdout!r} {run.stderr!r}")
# The template is ChatML: it renders as the reference's own ChatML feature template.
by_name = {c["name"]: c for c in json.load(open(reference))["cases"]}
for ours, chatml in [("default/system_user/prompt", "feature/chatml/system_user"),
                     ("default/multi_turn/no_prompt", "feature/chatml/multi_turn")]:
    if by_name[ours]["expected"] != by_name[chatml]["expected"]:
        failed += 1
        print(f"{ours} is not ChatML: {by_name[ours]['expected']!r} != {by_name[chatml]['expected']!r}")
print(f"{len(cases)} renders and 2 ChatML checks, {failed} failed")
sys.exit(failed > 0)
PY
then pass "chat template renders as the reference"; else fail "chat template"; fi

im_end=$(json_get "$model/tokenizer.json" '[t["id"] for t in j["added_tokens"] if t["content"] == "<|im_end|>"][0]')
[ "$(json_get "$model/generation_config.json" "$im_end in j['eos_token_id'] and 0 in j['eos_token_id']")" = True ] \
  && pass "<|endoftext|> and <|im_end|> (id $im_end) end a generation" || fail "eos ids: $(cat "$model/generation_config.json")"

out=$(SLM_MODEL="$SLM_WORK/missing" "$SLM_BIN" generate -p hi -n 1 2>&1) && fail "SLM_MODEL ignored" \
  || { echo "$out" | grep -q "$SLM_WORK/missing" && pass "SLM_MODEL overrides the default: $out" || fail "error: $out"; }
finish
