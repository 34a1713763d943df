#!/usr/bin/python3
"""Reference LoRA (or full) training step of the Llama family, in plain PyTorch (float64).

The base model is tests/reference/llama_reference.py's Reference (the same
semantics as Hugging Face transformers); every targeted linear layer gets a
PEFT LoRA branch, y = W x + b + (alpha / r) * B (A x) (dropout off). The
targets are PEFT's module names: q_proj, k_proj, v_proj, o_proj, gate_proj,
up_proj, down_proj, or on Phi-3 its fused qkv_proj, o_proj, gate_up_proj,
down_proj (a LoRA there adds to the fused product before it is split, so B
has q+2kv or 2*intermediate rows); all-linear is every one of the family's.
For a model folder made by `slm create` the script:

  1. draws initial adapters: A as PEFT does (kaiming_uniform_, a = sqrt(5)),
     B ~ N(0, b_std^2) rather than PEFT's zeros, so the gradient of A is not
     zero and both tensors are checked; saved in PEFT's layout
     (OUT/adapter/adapter_config.json + adapter_model.safetensors), which the
     C++ side loads, so both start from identical values;
  2. draws a fixed batch of token ids and labels (Hugging Face causal-LM
     convention, with some -100 positions masked as a prompt would be);
  3. writes OUT/expected.json: the batch, the options, the mean loss and the
     gradient of every LoRA tensor at the initial adapters, and the loss
     before each of `--steps` AdamW steps on that batch (clip_grad_norm_,
     then torch.optim.AdamW, learning rate from transformers' schedule
     formulas via LambdaLR).

With --full there are no adapters: every weight of the model is a parameter
(embeddings, linear layers and biases, norms, lm_head or the tied embedding),
the gradients in expected.json are keyed by the weights' Hugging Face names
(the checkpoint's own: qkv_proj and gate_up_proj on Phi-3),
and AdamW decays only the matrices (biases and norm weights form a group
without weight decay, as transformers' Trainer builds it).

Usage:
  lora_reference.py MODEL_DIR --out OUT [--rank 4] [--alpha 8]
                    [--targets q_proj,...|all-linear] [--batch 2] [--seq 12]
                    [--steps 20] [--lr 1e-2] [--schedule cosine]
                    [--warmup 2] [--weight-decay 0.01] [--max-grad-norm 1.0]
                    [--seed 0] [--full] [--bf16-activations]

Needs only Debian's python3-torch and python3-numpy.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_reference import Config, Reference, read_safetensors  # noqa: E402

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FUSED_MODULES = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]  # Phi-3's linear layers
ATTENTION_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"}


def module_path(name):
    return ("self_attn." if name in ATTENTION_MODULES else "mlp.") + name


def family_modules(cfg):
    """The PEFT module names of cfg's linear layers, in all-linear order."""
    return FUSED_MODULES if cfg.fused else MODULES


def lora_shapes(cfg):
    """{module: (fan_in, fan_out)}: lora_A is [r, fan_in], lora_B [fan_out, r]."""
    H, q, kv, inter = cfg.hidden, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.intermediate
    if cfg.fused:
        return {"qkv_proj": (H, q + 2 * kv), "o_proj": (q, H), "gate_up_proj": (H, 2 * inter), "down_proj": (inter, H)}
    return {"q_proj": (H, q), "k_proj": (H, kv), "v_proj": (H, kv), "o_proj": (q, H),
            "gate_proj": (H, inter), "up_proj": (H, inter), "down_proj": (inter, H)}


def parse_targets(text, cfg):
    """--targets as a list of module names; ValueError names the valid ones."""
    valid = family_modules(cfg)
    targets = valid if text == "all-linear" else [t for t in text.split(",") if t]
    for t in targets:
        if t not in valid:
            raise ValueError(f"--targets: {cfg.model_type} has no module {t} "
                             f"(expected one of {', '.join(valid)} or all-linear)")
    if not targets:
        raise ValueError("--targets: no module named")
    return list(targets)


def write_safetensors(path, tensors):
    """tensors: {name: float32 numpy array}; written to a temp name, then renamed."""
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def read_adapter(folder):
    """A PEFT adapter folder as (adapter_config, {module path: (A, B)}), float64 tensors."""
    with open(os.path.join(folder, "adapter_config.json")) as f:
        config = json.load(f)
    pairs = {}
    for name, (array, _) in read_safetensors(os.path.join(folder, "adapter_model.safetensors")).items():
        key = name[len("base_model.model."):].rsplit(".lora_", 1)[0]
        slot = 0 if ".lora_A." in name else 1
        pairs.setdefault(key, [None, None])[slot] = torch.from_numpy(array.copy()).double()
    return config, {key: tuple(pair) for key, pair in pairs.items()}


class LoraReference(Reference):
    def __init__(self, model_dir, adapters, scale, bf16_activations=False):
        super().__init__(model_dir, dtype=torch.float64, bf16_activations=bf16_activations)
        self.adapters = adapters  # {"model.layers.L.self_attn.q_proj": (A, B)}
        self.scale = scale

    def linear(self, x, name, bias):
        y = super().linear(x, name, bias)
        if name in self.adapters:
            A, B = self.adapters[name]
            y = y + self.scale * ((x @ A.T) @ B.T)
        return y

    def loss(self, tokens, labels):
        """Mean next-token cross-entropy over the batch, as transformers' causal LM computes it."""
        logits = torch.stack([self.head(self.hidden_states(row)) for row in tokens])  # [B, T, V]
        shifted = logits[:, :-1, :].reshape(-1, logits.shape[-1])
        targets = labels[:, 1:].reshape(-1)
        return torch.nn.functional.cross_entropy(shifted, targets, ignore_index=-100)


def schedule_lambda(kind, warmup, total):
    def f(step):
        if step < warmup:
            return step / max(1, warmup)
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return f


def make_batch(args, vocab):
    """A fixed batch: random ids, a masked prompt in row 0, masked padding at the end of row 1."""
    tokens = torch.randint(0, vocab, (args.batch, args.seq))
    labels = tokens.clone()
    labels[0, : args.seq // 3] = -100  # a masked prompt
    if args.batch > 1:
        labels[1, -2:] = -100  # masked padding at the end
    return tokens, labels


def adamw_curve(model, tokens, labels, groups, flat, args):
    """The loss before each of args.steps AdamW steps (clip_grad_norm_, schedule via LambdaLR)."""
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_lambda(args.schedule, args.warmup, args.steps))
    curve, norms = [], []
    for _ in range(args.steps):
        optimizer.zero_grad()
        step_loss = model.loss(tokens, labels)
        step_loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(flat, args.max_grad_norm)))
        optimizer.step()
        scheduler.step()
        curve.append(float(step_loss))
    return curve, norms


def training_options(args):
    return {"batch": args.batch, "seq": args.seq, "lr": args.lr, "schedule": args.schedule,
            "warmup_steps": args.warmup, "steps": args.steps, "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm}


def run_full(args):
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    model = LoraReference(args.model_dir, {}, 0.0)
    names = sorted(model.expected_shapes())
    for name in names:
        model.w[name] = model.w[name].clone().requires_grad_()
    tokens, labels = make_batch(args, model.cfg.vocab)

    loss = model.loss(tokens, labels)
    loss.backward()
    grads = {name: model.w[name].grad.flatten().tolist() for name in names}
    first_loss = float(loss)

    flat = [model.w[name] for name in names]
    for p in flat:
        p.grad = None
    groups = [{"params": [p for p in flat if p.dim() == 2]},
              {"params": [p for p in flat if p.dim() != 2], "weight_decay": 0.0}]
    curve, norms = adamw_curve(model, tokens, labels, groups, flat, args)

    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump({"mode": "full", "tokens": tokens.flatten().tolist(), "labels": labels.flatten().tolist(),
                   **training_options(args), "loss": first_loss, "grads": grads, "curve": curve,
                   "grad_norms": norms}, f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=8.0)
    ap.add_argument("--targets", default="all-linear")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=12)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--schedule", default="cosine", choices=["constant", "linear", "cosine"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--b-std", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", action="store_true", help="train every weight instead of LoRA adapters")
    ap.add_argument("--bf16-activations", action="store_true",
                    help="round products with bf16 base weights as slm's AVX512-BF16 path does (llama_reference.py), "
                         "and write expected_bf16_activations.json instead of expected.json")
    args = ap.parse_args(argv)
    if args.full:
        run_full(args)
        return

    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = Config(json.load(f))
    try:
        targets = parse_targets(args.targets, cfg)
    except ValueError as e:
        sys.exit(str(e))
    torch.manual_seed(args.seed)
    vocab, layers = cfg.vocab, cfg.layers
    shapes = lora_shapes(cfg)

    # Initial adapters, in float32 (what the file holds), then used in float64.
    initial = {}
    for layer in range(layers):
        for t in targets:
            fan_in, fan_out = shapes[t]
            A = torch.empty(args.rank, fan_in, dtype=torch.float32)
            torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            B = torch.randn(fan_out, args.rank, dtype=torch.float32) * args.b_std
            initial[f"model.layers.{layer}.{module_path(t)}"] = (A, B)
    adapter_dir = os.path.join(args.out, "adapter")
    os.makedirs(adapter_dir, exist_ok=True)
    peft = {}
    for key, (A, B) in initial.items():
        peft[f"base_model.model.{key}.lora_A.weight"] = A.numpy()
        peft[f"base_model.model.{key}.lora_B.weight"] = B.numpy()
    write_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"), peft)
    with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": args.rank, "lora_alpha": args.alpha,
                   "lora_dropout": 0.0, "target_modules": targets, "bias": "none", "fan_in_fan_out": False,
                   "base_model_name_or_path": os.path.abspath(args.model_dir)}, f, indent=2)

    tokens = torch.randint(0, vocab, (args.batch, args.seq))
    labels = tokens.clone()
    labels[0, : args.seq // 3] = -100  # a masked prompt
    if args.batch > 1:
        labels[1, -2:] = -100  # masked padding at the end

    params = {key: (A.to(torch.float64).requires_grad_(), B.to(torch.float64).requires_grad_())
              for key, (A, B) in initial.items()}
    model = LoraReference(args.model_dir, params, args.alpha / args.rank, args.bf16_activations)

    loss = model.loss(tokens, labels)
    loss.backward()
    grads = {}
    for key, (A, B) in params.items():
        grads[f"base_model.model.{key}.lora_A.weight"] = A.grad.flatten().tolist()
        grads[f"base_model.model.{key}.lora_B.weight"] = B.grad.flatten().tolist()
    first_loss = float(loss)

    flat = [p for pair in params.values() for p in pair]
    for p in flat:
        p.grad = None
    curve, norms = adamw_curve(model, tokens, labels, flat, flat, args)

    expected = "expected_bf16_activations.json" if args.bf16_activations else "expected.json"
    with open(os.path.join(args.out, expected), "w") as f:
        json.dump({"mode": "lora", "tokens": tokens.flatten().tolist(), "labels": labels.flatten().tolist(),
                   "rank": args.rank, "alpha": args.alpha, "targets": targets, **training_options(args),
                   "loss": first_loss, "grads": grads, "curve": curve, "grad_norms": norms}, f)


if __name__ == "__main__":
    main()
