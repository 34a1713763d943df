#!/usr/bin/env bash
# slm chat on the default model: through a pipe, a reply equals slm generate on
# the conversation rendered by slm chat-template; the history, the slash
# commands and a conversation longer than the context; then in a terminal
# (tmux): the prompt, Ctrl-C during a reply and at the prompt, Ctrl-D.
source "$(dirname "$0")/lib.sh"
unset SLM_MODEL
W="$SLM_WORK"
rm -rf "${W:?}"/*

chat() { "$SLM_BIN" chat --temperature 0 "$@"; }
# messages FILE: the roles and contents of a /save file, as Python sees them.
messages() { json_get "$1" '[(m["role"], m["content"]) for m in j["messages"]]'; }
# render_and_generate MESSAGES_JSON N OUT: generate's greedy reply (JSON) to
# the conversation rendered with the generation prompt, and the ids
# chat-template --ids gives the same text (OUT.ids).
render_and_generate() {
  echo "$1" > "$3.messages.json"
  "$SLM_BIN" chat-template --messages "$3.messages.json" --add-generation-prompt > "$3.prompt.txt"
  "$SLM_BIN" chat-template --messages "$3.messages.json" --add-generation-prompt --ids > "$3.ids"
  "$SLM_BIN" generate -f "$3.prompt.txt" -n "$2" --temperature 0 --output-format json > "$3"
}

# ---- two turns through a pipe
printf 'Hello, who are you?\nTell me about the sea.\n/save %s\n' "$W/two.json" | chat -n 24 > "$W/two.out" 2> "$W/two.err"
[ "$(json_get "$W/two.json" '[m["role"] for m in j["messages"]]')" = "['user', 'assistant', 'user', 'assistant']" ] \
  && pass "/save writes the 4 messages of two turns in order" || fail "saved: $(cat "$W/two.json")"
[ "$(json_get "$W/two.json" '[m["content"] for m in j["messages"][0::2]]')" = "['Hello, who are you?', 'Tell me about the sea.']" ] \
  && pass "the user messages are the input lines" || fail "saved user messages: $(messages "$W/two.json")"

render_and_generate '[{"role": "user", "content": "Hello, who are you?"}]' 24 "$W/first.json"
[ "$(json_get "$W/first.json" '" ".join(map(str, j["prompt_tokens"]))')" = "$(cat "$W/first.json.ids")" ] \
  && pass "generate encodes the rendered prompt as chat-template --ids does" || fail "prompt ids differ"
first_reply=$(json_get "$W/two.json" 'repr(j["messages"][1]["content"])')
[ "$first_reply" = "$(json_get "$W/first.json" 'repr(j["text"])')" ] && [ "$first_reply" != "''" ] \
  && pass "the first reply equals slm generate's greedy reply: $first_reply" \
  || fail "first reply $first_reply, generate $(json_get "$W/first.json" 'repr(j["text"])')"
# stdout is the replies, each with a newline: no prompt, no banner.
[ "$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["messages"]; print(open(sys.argv[2]).read() == m[1]["content"] + "\n" + m[3]["content"] + "\n")' "$W/two.json" "$W/two.out")" = True ] \
  && pass "stdout holds the two replies, one line each" || fail "stdout: $(cat "$W/two.out")"

# ---- the system prompt reaches the model: /system replaces --system and
# clears the history; the reply equals generate's for [system, user].
printf 'First question\n/system Answer like a sailor.\nWhat is a ship?\n/save %s\n' "$W/system.json" \
  | chat --system "Old prompt" -n 16 > /dev/null 2> "$W/system.err"
[ "$(json_get "$W/system.json" '[(m["role"], m["content"]) for m in j["messages"][:2]]')" = "[('system', 'Answer like a sailor.'), ('user', 'What is a ship?')]" ] \
  && [ "$(json_get "$W/system.json" 'len(j["messages"])')" = 3 ] \
  && pass "/system sets the system message and clears the conversation" || fail "after /system: $(messages "$W/system.json")"
render_and_generate '[{"role": "system", "content": "Answer like a sailor."}, {"role": "user", "content": "What is a ship?"}]' 16 "$W/system-gen.json"
[ "$(json_get "$W/system.json" 'repr(j["messages"][2]["content"])')" = "$(json_get "$W/system-gen.json" 'repr(j["text"])')" ] \
  && pass "the reply is generate's for the system prompt and the message" || fail "reply with /system"

# ---- /reset keeps the system prompt and nothing else; an unknown command is no turn
printf 'One\n/reset\n/frobnicate now\n/save %s\n' "$W/reset.json" | chat --system "Be brief." -n 8 > "$W/reset.out" 2> "$W/reset.err"
[ "$(messages "$W/reset.json")" = "[('system', 'Be brief.')]" ] && pass "/reset empties the history, keeps the system prompt" \
  || fail "after /reset: $(messages "$W/reset.json")"
[ "$(wc -l < "$W/reset.out")" = 1 ] && pass "an unknown command gets no reply (one reply line for one message)" \
  || fail "stdout: $(cat "$W/reset.out")"
grep -q "unknown command /frobnicate" "$W/reset.err" && pass "unknown command: $(grep unknown "$W/reset.err")" \
  || fail "no hint: $(cat "$W/reset.err")"

# ---- a conversation longer than the context (a pool of 256 positions): the
# oldest turns leave the prompt, /save keeps them; a message that cannot fit
# on its own is skipped with a note.
long=$(python3 -c 'print(" ".join(["the sea and the land and the sky"] * 60))')
{
  for i in 1 2 3 4 5 6; do echo "Message $i: tell me of the ships of Tarshish and the isles afar off."; done
  echo "$long"
  echo "/save $W/long.json"
} | chat -n 32 --kv-cache 256 > "$W/long.out" 2> "$W/long.err"
grep -q "left out of the prompt" "$W/long.err" && pass "old turns dropped: $(grep -m1 'left out' "$W/long.err")" \
  || fail "no drop note: $(cat "$W/long.err")"
grep -q "message skipped" "$W/long.err" && pass "a message too long alone: $(grep -m1 'skipped' "$W/long.err")" \
  || fail "no skip note: $(cat "$W/long.err")"
[ "$(json_get "$W/long.json" 'len(j["messages"]) == 12 and j["messages"][0]["content"].startswith("Message 1:")')" = True ] \
  && pass "/save keeps every turn, without the skipped one" || fail "saved: $(json_get "$W/long.json" 'len(j["messages"])') messages"

# ---- errors: a model without a chat template (1), a bad option (2)
cp -r "$SOURCE_DIR/models/slm-tiny" "$W/no-template"
python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); del c["chat_template"]; json.dump(c, open(p, "w"))' \
  "$W/no-template/tokenizer_config.json"
code=0
echo hi | "$SLM_BIN" chat -m "$W/no-template" > /dev/null 2> "$W/no-template.err" || code=$?
[ "$code" = 1 ] && grep -q "tokenizer_config.json: no chat_template" "$W/no-template.err" \
  && pass "no chat template: exit 1, $(cat "$W/no-template.err")" || fail "no template: exit $code, $(cat "$W/no-template.err")"
json_get "$SOURCE_DIR/models/slm-tiny/tokenizer_config.json" 'j["chat_template"]' > "$W/chatml.jinja"
[ "$(echo 'Hello, who are you?' | chat -m "$W/no-template" --chat-template "$W/chatml.jinja" -n 24)" = "$(json_get "$W/first.json" 'j["text"]')" ] \
  && pass "--chat-template FILE renders the conversation" || fail "--chat-template"
code=0
"$SLM_BIN" chat --top-k many < /dev/null > /dev/null 2>&1 || code=$?
[ "$code" = 2 ] && pass "a bad option value exits 2" || fail "bad option: exit $code"

# ---- in a terminal (tmux): prompt, Ctrl-C stops a reply and then hints, Ctrl-D exits 0
if ! command -v tmux > /dev/null; then
  fail "the terminal checks need tmux (scripts/setup.sh installs it)"
  finish
fi
socket="slm-chat-test-$$"
tmux_() { tmux -L "$socket" "$@"; }
trap 'tmux_ kill-server 2> /dev/null || true' EXIT
screen() { tmux_ capture-pane -p -t chat -S -200 2> /dev/null; }
# wait_for DESCRIPTION CHECK...: runs CHECK every 50 ms until it succeeds, for at most 30 s.
wait_for() {
  local what=$1; shift
  for _ in $(seq 600); do
    if "$@"; then return 0; fi
    sleep 0.05
  done
  fail "timed out waiting for $what; the screen: $(screen)"
  return 1
}
shows() { screen | grep -qF -- "$1"; }
# The last non-empty line of the screen is the prompt.
at_prompt() { [ "$(screen | grep -v '^ *$' | tail -1)" = ">" ]; }
# The reply has started: text on the screen after the typed message.
replying() { [ "$(screen | sed -n '/^> Hello there/,$p' | tail -n +2 | tr -d ' \n' | wc -c)" -gt 10 ]; }

tmux_ new-session -d -s chat -x 160 -y 40 \
  "'$SLM_BIN' chat -n 100000 --ignore-eos --threads 1 --seed 1; echo EXIT=\$? > '$W/exit'"
wait_for "the banner and the prompt" eval 'shows "Ctrl-D exits" && at_prompt' && pass "interactive: banner and prompt"
tmux_ send-keys -t chat "Hello there" Enter
wait_for "the reply to stream" replying && pass "interactive: the reply streams"
tmux_ send-keys -t chat C-c
wait_for "the reply to stop" eval 'shows "(reply stopped)" && at_prompt' \
  && pass "Ctrl-C stops the reply and the prompt comes back"
[ ! -f "$W/exit" ] && tmux_ has-session -t chat 2> /dev/null && pass "slm chat is still running after Ctrl-C" \
  || fail "slm chat ended on Ctrl-C: $(cat "$W/exit" 2> /dev/null)"
tmux_ send-keys -t chat C-c
wait_for "the hint" eval 'shows "(Ctrl-D exits" && at_prompt' && pass "Ctrl-C at the prompt prints a hint"
tmux_ send-keys -t chat "/save $W/interactive.json" Enter
wait_for "the save" eval 'shows "(saved 2 messages" && at_prompt' \
  && [ "$(json_get "$W/interactive.json" 'j["messages"][1]["role"] == "assistant" and len(j["messages"][1]["content"]) > 0')" = True ] \
  && pass "the stopped reply stays in the history" || fail "history after Ctrl-C: $(cat "$W/interactive.json" 2> /dev/null)"
tmux_ send-keys -t chat C-d
wait_for "slm chat to exit" test -f "$W/exit" && [ "$(cat "$W/exit")" = EXIT=0 ] \
  && pass "Ctrl-D exits with status 0" || fail "after Ctrl-D: $(cat "$W/exit" 2> /dev/null)"

finish
