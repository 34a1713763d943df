#!/usr/bin/python3
"""The PyTorch anchor of bench/training.sh: a LoRA training step of the
project's PyTorch reference (tests/reference/lora_reference.py) in float32,
at the same setting (rank 8 on every linear module, batch 4 x 256 tokens,
AdamW), timed on this machine with the same number of threads.

The reference is plain PyTorch written to be read (one sequence at a time,
an explicit causal mask), as a person would write a first fine-tuning loop
without transformers; it is the anchor issue 16 names ("the PyTorch
reference step").

Usage: training_pytorch.py MODEL_DIR [--threads N] [--steps N] [--batch B] [--seq T] [--rank R]
Prints one line: tokens/s over the timed steps (the first step is warm-up).
"""

import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from llama_reference import Reference  # noqa: E402
from lora_reference import LoraReference, family_modules, lora_shapes, module_path  # noqa: E402


class Float32Lora(LoraReference):
    """LoraReference in float32 (the reference itself runs in float64)."""

    def __init__(self, model_dir, adapters, scale):
        Reference.__init__(self, model_dir, dtype=torch.float32)
        self.adapters = adapters
        self.scale = scale


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = Float32Lora(args.model_dir, {}, 16.0 / args.rank)
    shapes = lora_shapes(model.cfg)
    params = []
    for layer in range(model.cfg.layers):
        for name in family_modules(model.cfg):
            fan_in, fan_out = shapes[name]
            A = torch.empty(args.rank, fan_in)
            torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            B = torch.zeros(fan_out, args.rank)
            A.requires_grad_(True)
            B.requires_grad_(True)
            model.adapters[f"model.layers.{layer}.{module_path(name)}"] = (A, B)
            params += [A, B]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    tokens = torch.randint(0, model.cfg.vocab, (args.batch, args.seq))
    labels = tokens.clone()

    def step():
        optimizer.zero_grad()
        model.loss(tokens, labels).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    print(f"{args.batch * args.seq * args.steps / seconds:.0f}")


if __name__ == "__main__":
    main()
