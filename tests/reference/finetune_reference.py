#!/usr/bin/python3
"""`slm finetune` (LoRA, dropout off) as PyTorch computes it, from the documented rules.

The command's options that change the arithmetic, each done the way
docs/training.md states it, with nothing taken from slm but the token ids
(`slm tokenize`, which the tokenizer parity tests hold to Hugging Face
tokenizers) and the initial adapter (a PEFT folder slm wrote):

  data        {"text"}: the text with special tokens, then EOS, loss on every
              token; {"prompt","completion"}: the prompt with special tokens,
              the completion without, then EOS, loss on the completion and EOS.
              EOS goes on only when the ids do not already end with it.
  --seq-len   longer examples are cut to that many tokens; one with nothing
              left to predict is dropped.
  --pack      examples concatenated in file order, a new sequence whenever the
              next would pass --seq-len: one causal attention over the whole
              sequence (no mask between examples), positions running on, the
              first token of each example predicted from the last of the one
              before (as run_clm.py's group_texts concatenates).
  order       each epoch a permutation of the examples: Fisher-Yates driven by
              slm's seeded generator (xoshiro256** through splitmix64,
              src/core/random.cpp, written again below), seed mixed with the
              epoch. A micro-batch is the next --batch-size examples of that
              order, padded on the right to its longest.
  --grad-accum  an optimizer step is up to G micro-batches, never reaching
              into the next epoch (the last step of an epoch takes what is
              left, as transformers' Trainer does); its loss is the mean over
              every counted position of the step (tokens-weighted, as the
              Trainer's num_items_in_batch gives it).
  --epochs    epochs x ceil(ceil(examples / B) / G) steps; --max-steps N: N.
  optimizer   torch.optim.AdamW (all LoRA tensors are matrices, all decay),
              torch.nn.utils.clip_grad_norm_, the learning rate of
              transformers' get_{constant,linear,cosine}_schedule_with_warmup
              at the 0-based step (LambdaLR).

Writes OUT (JSON): per step the loss, learning rate and gradient norm
(before clipping), the epoch and the examples of the step; the number of
sequences the data became and of examples cut to --seq-len. --adapter-out
DIR: the trained adapter, DIR/adapter_model.safetensors. train(args), with
args from parser(), returns the same and the adapter, for a caller that runs
many (tests/e2e/finetune_options.sh, which imports torch once).

Usage:
  finetune_reference.py MODEL_DIR --slm SLM_BIN --adapter INIT_DIR --data train.jsonl --out OUT.json
      [--adapter-out DIR] [--batch-size 4] [--grad-accum 1] [--epochs 1 | --max-steps N] [--seq-len 512]
      [--pack] [--lr 2e-4] [--lr-schedule cosine] [--warmup-steps 0] [--weight-decay 0]
      [--max-grad-norm 1.0] [--seed 0]
"""

import argparse
import json
import math
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_reference import LoraReference, read_adapter, schedule_lambda, write_safetensors  # noqa: E402

IGNORE = -100
MASK64 = (1 << 64) - 1


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK64


def splitmix64(state):
    """(new state, output), as src/core/random.cpp."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


class Rng:
    """slm::Rng: xoshiro256** seeded through splitmix64."""

    def __init__(self, seed):
        self.s = []
        for _ in range(4):
            seed, value = splitmix64(seed)
            self.s.append(value)

    def next(self):
        s = self.s
        result = (rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result


def mix_seed(a, b):
    state = a ^ rotl(b, 32) ^ 0x6A09E667F3BCC909
    state, _ = splitmix64(state)
    _, value = splitmix64(state)
    return value ^ b


def epoch_order(count, seed, epoch):
    order = list(range(count))
    rng = Rng(mix_seed(seed, epoch))
    for i in range(count, 1, -1):
        j = rng.next() % i
        order[i - 1], order[j] = order[j], order[i - 1]
    return order


def tokenize(slm, model_dir, texts, special):
    """Ids of each text, from `slm tokenize --jsonl`."""
    command = [slm, "tokenize", "-m", model_dir, "--jsonl"] + ([] if special else ["--no-special"])
    lines = "".join(json.dumps(t) + "\n" for t in texts)
    result = subprocess.run(command, input=lines, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def eos_id(model_dir):
    with open(os.path.join(model_dir, "tokenizer_config.json")) as f:
        eos = json.load(f)["eos_token"]
    eos = eos["content"] if isinstance(eos, dict) else eos
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        added = json.load(f)["added_tokens"]
    return next(t["id"] for t in added if t["content"] == eos)


def read_examples(args):
    """(tokens, labels) of each example (or packed sequence), by the documented data rules, and how
    many examples were cut to --seq-len."""
    with open(args.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        if "messages" in row:
            sys.exit(f"{args.data}: {{\"messages\"}} examples are not modelled by this reference")
    eos = eos_id(args.model_dir)
    special = tokenize(args.slm, args.model_dir, [r.get("text", r.get("prompt")) for r in rows], True)
    plain = tokenize(args.slm, args.model_dir, [r.get("completion", "") for r in rows], False)
    examples, truncated = [], 0
    for row, head, completion in zip(rows, special, plain):
        if "text" in row:
            tokens, labels = list(head), list(head)
        else:
            tokens = head + completion
            labels = [IGNORE] * len(head) + completion
        if not tokens or tokens[-1] != eos:
            tokens.append(eos)
            labels.append(eos)
        truncated += len(tokens) > args.seq_len
        tokens, labels = tokens[: args.seq_len], labels[: args.seq_len]
        if any(label != IGNORE for label in labels[1:]):
            examples.append((tokens, labels))
    if args.pack:
        packed, current = [], ([], [])
        for tokens, labels in examples:
            if current[0] and len(current[0]) + len(tokens) > args.seq_len:
                packed.append(current)
                current = ([], [])
            current = (current[0] + tokens, current[1] + labels)
        if current[0]:
            packed.append(current)
        examples = packed
    return examples, truncated


def summed_loss(model, examples, indices):
    """Cross-entropy summed over the counted positions of one right-padded micro-batch, and their count."""
    total, counted = 0.0, 0
    for i in indices:
        tokens, labels = examples[i]
        # Right padding changes nothing before it under causal attention, and
        # pad positions have no label: each row alone gives the same sums.
        logits = model.head(model.hidden_states(torch.tensor(tokens, dtype=torch.long)))
        targets = torch.tensor(labels[1:], dtype=torch.long)
        total = total + torch.nn.functional.cross_entropy(logits[:-1], targets, ignore_index=IGNORE, reduction="sum")
        counted += int((targets != IGNORE).sum())
    return total, counted


def peft_tensors(params):
    """{PEFT tensor name: float64 numpy array} of the adapter."""
    tensors = {}
    for key, (A, B) in params.items():
        tensors[f"base_model.model.{key}.lora_A.weight"] = A.detach().numpy().copy()
        tensors[f"base_model.model.{key}.lora_B.weight"] = B.detach().numpy().copy()
    return tensors


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--slm", required=True, help="the slm binary, for `slm tokenize`")
    ap.add_argument("--adapter", required=True, help="PEFT folder of the initial adapter")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", help="the JSON to write")
    ap.add_argument("--adapter-out", help="folder to write the trained adapter into")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--pack", action="store_true")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lr-schedule", default="cosine", choices=["constant", "linear", "cosine"])
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def train(args):
    """{"sequences", "truncated", "steps": [per step], "adapter": {PEFT name: array}} of a run of args."""
    examples, truncated = read_examples(args)
    micro_per_epoch = math.ceil(len(examples) / args.batch_size)
    total = args.max_steps or args.epochs * math.ceil(micro_per_epoch / args.grad_accum)
    config, params = read_adapter(args.adapter)
    for pair in params.values():
        for tensor in pair:
            tensor.requires_grad_()
    model = LoraReference(args.model_dir, params, config["lora_alpha"] / config["r"])
    flat = [p for pair in params.values() for p in pair]
    optimizer = torch.optim.AdamW(flat, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  schedule_lambda(args.lr_schedule, args.warmup_steps, total))
    epoch, cursor = 0, 0
    order = epoch_order(len(examples), args.seed, epoch)
    steps = []
    for step in range(total):
        if cursor >= len(order):
            epoch += 1
            order, cursor = epoch_order(len(examples), args.seed, epoch), 0
        micro = []
        while len(micro) < args.grad_accum and cursor < len(order):
            micro.append(order[cursor:cursor + args.batch_size])
            cursor = min(len(order), cursor + args.batch_size)
        sums = [summed_loss(model, examples, indices) for indices in micro]
        counted = sum(c for _, c in sums)
        loss = sum(s for s, _ in sums) / counted
        optimizer.zero_grad()
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        norm = float(torch.nn.utils.clip_grad_norm_(flat, args.max_grad_norm if args.max_grad_norm > 0 else math.inf))
        optimizer.step()
        scheduler.step()
        steps.append({"step": step + 1, "epoch": epoch + 1, "loss": float(loss), "lr": lr, "grad_norm": norm,
                      "examples": [i for indices in micro for i in indices]})
    return {"sequences": len(examples), "truncated": truncated, "steps": steps, "adapter": peft_tensors(params)}


def main(argv=None):
    args = parser().parse_args(argv)
    result = train(args)
    if args.adapter_out:
        os.makedirs(args.adapter_out, exist_ok=True)
        write_safetensors(os.path.join(args.adapter_out, "adapter_model.safetensors"), result["adapter"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump({k: v for k, v in result.items() if k != "adapter"}, f)


if __name__ == "__main__":
    main()
