#!/usr/bin/env python3
"""Writes the generation and chat settings of the default model's folder.

Usage: configure.py OUT   (OUT/generation_config.json, OUT/tokenizer_config.json)

- Sampling defaults for `slm generate` (and transformers' generate): a model
  this small loops under greedy decoding.
- The ChatML chat template (Qwen2's and SmolLM2-Instruct's markers, without a
  default system message), so that `slm chat`, `slm chat-template` and
  {"messages"} fine-tuning work on the default model out of the box.
- <|im_end|> ends a generation beside <|endoftext|>: a ChatML turn ends with it.

Running it again on its own output changes nothing.
"""
import json
import os
import sys

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
END_OF_TURN = "<|im_end|>"


def rewrite(path, update):
    with open(path) as f:
        config = json.load(f)
    update(config)
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def token_id(tokenizer_path, content):
    with open(tokenizer_path) as f:
        for token in json.load(f)["added_tokens"]:
            if token["content"] == content:
                return token["id"]
    sys.exit(f"configure.py: {tokenizer_path}: no added token {content} (expected tokenizer-train's special tokens)")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: configure.py OUT")
    out = sys.argv[1]
    end_of_turn = token_id(os.path.join(out, "tokenizer.json"), END_OF_TURN)

    def generation(config):
        config.update({"do_sample": True, "temperature": 0.8, "top_p": 0.95, "repetition_penalty": 1.15})
        eos = config.get("eos_token_id", [])
        eos = eos if isinstance(eos, list) else [eos]
        config["eos_token_id"] = eos + [end_of_turn] if end_of_turn not in eos else eos

    rewrite(os.path.join(out, "generation_config.json"), generation)
    rewrite(os.path.join(out, "tokenizer_config.json"), lambda config: config.update({"chat_template": CHAT_TEMPLATE}))


if __name__ == "__main__":
    main()
