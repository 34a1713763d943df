#!/usr/bin/python3
"""Reference forward pass of the Hugging Face Llama family, in plain PyTorch.

Covers the architectures slm loads (model_type llama, mistral, qwen2, qwen3,
gemma2, gemma3_text, phi3) with the same semantics as Hugging Face transformers:

  embeddings -> N x [RMSNorm -> attention -> residual -> RMSNorm -> SwiGLU -> residual]
             -> RMSNorm -> lm_head (or the tied embedding matrix)

and for Gemma (modeling_gemma2.py, modeling_gemma3.py):

  embeddings * sqrt(hidden) (the scale rounded to torch_dtype)
             -> N x [RMSNorm -> attention -> RMSNorm -> residual -> RMSNorm -> GeGLU -> RMSNorm -> residual]
             -> RMSNorm -> lm_head -> final-logit soft cap

  * Gemma's RMSNorm scales by (1 + weight); its MLP is down(gelu_tanh(gate) * up)
  * scores scaled by query_pre_attn_scalar^-0.5, then soft-capped
    (cap * tanh(score / cap), attn_logit_softcapping) before the mask
  * sliding layers per layer_types (else gemma2: even layers; gemma3: all
    but every sliding_window_pattern-th); gemma3's sliding layers rotate with
    rope_local_base_freq and no rope_scaling, its full layers with rope_theta
    and rope_scaling; gemma3 has a per-head q/k norm

  * RMSNorm: x * rsqrt(mean(x^2) + eps) * weight
  * RoPE in the rotate-half layout (first half of each head pairs with the
    second half), inv_freq = theta^(-2i/d), with rope_scaling "linear"
    (inv_freq / factor) and "llama3" (wavelength-dependent smoothing)
  * grouped-query attention (each key/value head serves heads/kv_heads queries)
  * biases: q/k/v on qwen2 (always); q/k/v and o_proj on llama and qwen3
    when attention_bias; gate/up/down on llama when mlp_bias; none on mistral
  * per-head RMSNorm on q and k before RoPE (qwen3)
  * sliding-window causal mask: key j is visible from query i iff
    j <= i and i - j < window (mistral: sliding_window; qwen2/3 only when
    use_sliding_window, and only for layers >= max_window_layers)
  * SwiGLU MLP: down(silu(gate(x)) * up(x))

and for Phi-3 (modeling_phi3.py), Llama's block with fused projections:

  * self_attn.qkv_proj holds q, k and v as one matrix (rows: every q row,
    then k, then v) and mlp.gate_up_proj holds gate then up; each is one
    product split by columns afterwards, as transformers slices them; no
    biases anywhere; plain RMSNorm; silu
  * a sliding window on every layer whenever sliding_window is set
  * the whole head rotates (partial_rotary_factor other than 1 is refused)
  * rope_scaling null or "longrope": inv_freq = 1 / (ext * theta^(2i/d)) with
    ext = long_factor when the forward's sequence (max position + 1) is longer
    than original_max_position_embeddings, else short_factor; cos and sin are
    both multiplied by attention_factor (given, or sqrt(1 + ln(factor) /
    ln(original)) when factor > 1), so each score grows by its square

Every weight is upcast and all arithmetic runs in float64 by default, so the
values are the exact answer for the weights in the file, not one particular
float32 summation order; `--precision f32` runs in float32 the way
transformers does for an f32 model. `--bf16-activations` emulates slm's
AVX512-BF16 path: every product with a weight stored as bf16 (the
projections and the head) first rounds its input activations to bf16 (round
to nearest even, as vcvtne2ps2bf16 does), prefill and decode alike, and in
training the gradient its backward multiplies by the weight; all else stays
float64. The safetensors reader is self-contained
(numpy only), so the script needs nothing beyond Debian's python3-torch and
python3-numpy.

Usage:
  llama_reference.py MODEL_DIR --out expected.json
                     [--prompt-ids 1,2,3 | --prompt-len N --seed S]
                     [--greedy N] [--precision f64|f32] [--bf16-activations]

The JSON written holds prompt_ids, last_logits (the full vocabulary row of the
last prompt position), prompt_logits (every position's row), greedy_ids and greedy_margins (top-1 minus top-2 logit
at every greedy step; each step recomputes the whole sequence without any
cache, so it independently checks a KV-cached implementation),
greedy_last_logits (the row that chose the last greedy token), nll (mean
negative log-likelihood of prompt_ids[1:] given their prefixes) and
perplexity = exp(nll).
"""

import argparse
import json
import math
import os
import random
import struct
import sys

import numpy as np
import torch

# ---------------------------------------------------------------------------
# safetensors


def _decode(raw, dtype_name, shape):
    """Turns the raw little-endian bytes of one tensor into a float32 numpy array."""
    if dtype_name == "F32":
        a = np.frombuffer(raw, dtype="<f4")
    elif dtype_name == "F16":
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dtype_name == "BF16":
        # bfloat16 is the upper half of a float32: widen, shift, reinterpret.
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype_name == "F64":
        a = np.frombuffer(raw, dtype="<f8").astype(np.float32)
    else:
        raise ValueError(f"unsupported safetensors dtype {dtype_name}")
    return a.reshape(shape)


def read_safetensors(path):
    """Returns {name: (float32 numpy array, original dtype name)} for one file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if 8 + header_len > len(blob):
        raise ValueError(f"{path}: header length {header_len} runs past the end of the file")
    header = json.loads(blob[8 : 8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len :]
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        shape = info["shape"]
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * sizes[info["dtype"]]:
            raise ValueError(f"{path}: tensor {name} has {end - begin} bytes for shape {shape}")
        out[name] = (_decode(data[begin:end], info["dtype"], shape), info["dtype"])
    return out


def read_weights(model_dir):
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        out = {}
        for shard in sorted(set(weight_map.values())):
            part = read_safetensors(os.path.join(model_dir, shard))
            for name, value in part.items():
                if weight_map.get(name) != shard:
                    raise ValueError(f"{shard}: tensor {name} is not listed for this shard in the index")
                out[name] = value
        missing = set(weight_map) - set(out)
        if missing:
            raise ValueError(f"{index}: tensors listed but not found: {sorted(missing)}")
        return out
    raise FileNotFoundError(f"{model_dir}: neither model.safetensors nor model.safetensors.index.json")


# ---------------------------------------------------------------------------
# configuration


GEMMA = ("gemma2", "gemma3_text")
PHI3_MAX_POSITIONS = 4096  # Phi3Config's max_position_embeddings when config.json has none


class Config:
    def __init__(self, raw):
        self.model_type = raw["model_type"]
        if self.model_type not in ("llama", "mistral", "qwen2", "qwen3", "phi3") + GEMMA:
            raise ValueError(f"unsupported model_type {self.model_type}")
        self.gemma = self.model_type in GEMMA
        # Phi-3's checkpoint fuses q/k/v into qkv_proj and gate/up into gate_up_proj.
        self.fused = self.model_type == "phi3"
        self.hidden = raw["hidden_size"]
        self.intermediate = raw["intermediate_size"]
        self.layers = raw["num_hidden_layers"]
        self.heads = raw["num_attention_heads"]
        self.kv_heads = raw.get("num_key_value_heads") or self.heads
        self.head_dim = raw.get("head_dim") or self.hidden // self.heads
        self.vocab = raw["vocab_size"]
        self.eps = raw.get("rms_norm_eps", 1e-5 if self.fused else 1e-6)  # Phi3Config's default is 1e-5
        self.theta = raw.get("rope_theta", 10000.0)
        self.tied = raw.get("tie_word_embeddings", self.gemma)  # transformers' Gemma configs default to tied
        # Biases as transformers builds the layers: Qwen2 has q/k/v biases
        # always and no o_proj bias; Llama and Qwen3 put attention_bias on all
        # four projections (o_proj included); Mistral and Phi-3 have none
        # (Phi-3 ignores attention_bias); Llama's mlp_bias adds biases to
        # gate/up/down.
        attention_bias = bool(raw.get("attention_bias", False))
        with_bias = ("llama", "qwen3") + GEMMA
        self.qkv_bias = self.model_type == "qwen2" or (self.model_type in with_bias and attention_bias)
        self.o_bias = self.model_type in with_bias and attention_bias
        self.mlp_bias = self.model_type == "llama" and bool(raw.get("mlp_bias", False))
        self.qk_norm = self.model_type in ("qwen3", "gemma3_text")
        self.rope_scaling = raw.get("rope_scaling")
        act_key = "hidden_activation" if self.gemma else "hidden_act"
        self.act = raw.get(act_key) or ("gelu_pytorch_tanh" if self.gemma else "silu")
        if self.act not in ("silu", "gelu_pytorch_tanh"):
            raise ValueError(f"unsupported {act_key} {self.act}")
        # Gemma: (1 + weight) norms, post-norms, scaled embeddings, soft caps.
        self.norm_offset = 1.0 if self.gemma else 0.0
        self.scaling = (raw.get("query_pre_attn_scalar", 256) if self.gemma else self.head_dim) ** -0.5
        caps = (50.0, 30.0) if self.model_type == "gemma2" else (None, None)
        self.attn_softcap = raw.get("attn_logit_softcapping", caps[0])
        self.final_softcap = raw.get("final_logit_softcapping", caps[1])
        self.torch_dtype = raw.get("torch_dtype") or raw.get("dtype") or "float32"
        self.local_theta = raw.get("rope_local_base_freq", 10000.0) if self.model_type == "gemma3_text" else None
        if self.model_type == "gemma3_text":
            self.theta = raw.get("rope_theta", 1e6)

        window = raw.get("sliding_window")
        self.windows = [None] * self.layers  # None: full causal attention
        if self.gemma:
            window = window or 4096
            if raw.get("layer_types"):
                sliding = [t == "sliding_attention" for t in raw["layer_types"]]
            else:
                pattern = 2 if self.model_type == "gemma2" else raw.get("sliding_window_pattern", 6)
                sliding = [(layer + 1) % pattern != 0 for layer in range(self.layers)]
            self.windows = [window if s else None for s in sliding]
        elif self.model_type == "mistral" and window:
            self.windows = [window] * self.layers
        elif self.model_type in ("qwen2", "qwen3") and raw.get("use_sliding_window") and window:
            first = raw.get("max_window_layers", self.layers)
            self.windows = [window if layer >= first else None for layer in range(self.layers)]
        elif self.model_type == "phi3" and window is not None:
            self.windows = [window] * self.layers

        # longrope (Phi-3 only): {"short", "long", "original"}; cos and sin are
        # scaled by rope_attention_factor (1 for every other rotation).
        self.longrope = None
        self.rope_attention_factor = 1.0
        if self.model_type == "phi3":
            self.read_phi3_rope(raw)

    def read_phi3_rope(self, raw):
        """Phi-3's rotary options as transformers reads them: whole heads
        rotate, and rope_scaling is null, "default" or "longrope"."""
        inner = self.rope_scaling if isinstance(self.rope_scaling, dict) else {}
        for field, value in (("partial_rotary_factor", raw.get("partial_rotary_factor")),
                             ("rope_scaling.partial_rotary_factor", inner.get("partial_rotary_factor"))):
            if value is not None and value != 1.0:
                raise ValueError(f"{field} {value} is not supported (the whole head rotates: 1.0)")
        if not self.rope_scaling:
            return
        kind = inner.get("rope_type", inner.get("type", "default"))
        if kind == "default":
            return
        if kind != "longrope":
            raise ValueError(f"unsupported rope_scaling type {kind} for phi3 (expected longrope)")
        half = self.head_dim // 2
        factors = {}
        for key in ("short_factor", "long_factor"):
            value = inner.get(key)
            numbers = isinstance(value, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in value)
            if not numbers or len(value) != half:
                raise ValueError(f"rope_scaling.{key} must list {half} positive numbers (head_dim / 2), "
                                 f"got {json.dumps(value)[:80]}")
            factors[key] = [float(x) for x in value]
        # transformers' _compute_longrope_parameters: Phi-3's top-level
        # original_max_position_embeddings (the pretraining length) makes the
        # factor the ratio of the two lengths; without it, rope_scaling's own.
        max_positions = raw.get("max_position_embeddings") or PHI3_MAX_POSITIONS
        if raw.get("original_max_position_embeddings") is not None:
            original = raw["original_max_position_embeddings"]
            factor = max_positions / original
        else:
            original = max_positions
            factor = inner.get("factor") or 1.0
        if not isinstance(original, int) or original < 1:
            raise ValueError(f"original_max_position_embeddings {original} is not a positive integer")
        attention_factor = inner.get("attention_factor")
        if attention_factor is None:
            if factor > 1.0 and original == 1:
                raise ValueError("original_max_position_embeddings 1 leaves longrope's attention factor undefined")
            attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
        self.longrope = {"short": factors["short_factor"], "long": factors["long_factor"], "original": original}
        self.rope_attention_factor = float(attention_factor)


def rope_inv_freq(cfg, local=False, seq_len=None):
    """Inverse frequencies per rotary pair, float64, with rope_scaling applied
    (local: gemma3's sliding layers, rope_local_base_freq and no scaling).
    seq_len: the forward's length (max position + 1), which picks longrope's
    short or long factors; None: the short ones."""
    d = cfg.head_dim
    inv_freq = 1.0 / ((cfg.local_theta if local else cfg.theta) ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = None if local else cfg.rope_scaling
    if not rs:
        return inv_freq
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "longrope" and cfg.longrope:  # Config accepts longrope for phi3 only
        long = seq_len is not None and seq_len > cfg.longrope["original"]
        ext = torch.tensor(cfg.longrope["long" if long else "short"], dtype=torch.float64)
        return 1.0 / (ext * cfg.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    if kind == "linear":
        return inv_freq / rs["factor"]
    if kind == "llama3":
        factor = rs["factor"]
        low = rs.get("low_freq_factor", 1.0)
        high = rs.get("high_freq_factor", 4.0)
        original = rs.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv_freq
        low_freq_wavelen = original / low  # longer wavelengths: fully scaled
        high_freq_wavelen = original / high  # shorter wavelengths: untouched
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (original / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
        return torch.where(medium, smoothed, scaled)
    raise ValueError(f"unsupported rope_scaling type {kind}")


# ---------------------------------------------------------------------------
# the model


def bf16_rounded(x):
    return x.to(torch.bfloat16).to(x.dtype)


class RoundedProduct(torch.autograd.Function):
    """x · Wᵀ for a bf16 weight W as slm's AVX512-BF16 path computes it: the
    forward rounds x to bf16, and the backward, dx = dy · W, rounds dy (the
    bf16 GEMM rounds its left operand either way). W is a frozen base weight."""

    @staticmethod
    def forward(ctx, x, W):
        ctx.save_for_backward(W)
        return bf16_rounded(x) @ W.T

    @staticmethod
    def backward(ctx, dy):
        (W,) = ctx.saved_tensors
        return bf16_rounded(dy) @ W, None


class Reference:
    def __init__(self, model_dir, dtype=torch.float64, bf16_activations=False):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = Config(json.load(f))
        self.dtype = dtype
        raw = read_weights(model_dir)
        self.file_dtypes = sorted({d for _, d in raw.values()})
        # Weights whose products round their input to bf16 (--bf16-activations).
        self.rounding_weights = {name for name, (_, d) in raw.items() if d == "BF16"} if bf16_activations else set()
        self.w = {name: torch.from_numpy(a.copy()).to(dtype) for name, (a, _) in raw.items()}
        self.inv_freq = rope_inv_freq(self.cfg)  # longrope: the short factors
        # longrope's frequencies for a forward longer than the original length.
        self.long_inv_freq = (rope_inv_freq(self.cfg, seq_len=self.cfg.longrope["original"] + 1)
                              if self.cfg.longrope else None)
        self.local_inv_freq = rope_inv_freq(self.cfg, local=True) if self.cfg.local_theta else None
        self.check_tensor_names()
        self.mutation = os.environ.get("SLM_REFERENCE_MUTATION", "")
        if self.mutation:
            self.mutate(self.mutation)

    # A reference broken on purpose (SLM_REFERENCE_MUTATION): each leaves out
    # one feature, and the parity tests of the fixtures that have it must fail
    # (tests/parity/mutations.sh), so a test that could not tell is found.
    MUTATIONS = ("no_window", "no_rope_scaling", "no_qk_norm", "no_bias", "no_softcap", "no_norm_offset",
                 "swap_gate_up")

    def mutate(self, mutation):
        cfg = self.cfg
        if mutation not in self.MUTATIONS:
            raise ValueError(f"SLM_REFERENCE_MUTATION: unknown mutation {mutation} (known: {', '.join(self.MUTATIONS)})")
        if mutation == "no_window":
            cfg.windows = [None] * cfg.layers
        elif mutation == "no_rope_scaling":
            cfg.rope_scaling, cfg.longrope, cfg.rope_attention_factor = None, None, 1.0
            self.inv_freq, self.long_inv_freq = rope_inv_freq(cfg), None
        elif mutation == "no_qk_norm":
            cfg.qk_norm = False
        elif mutation == "no_bias":
            cfg.qkv_bias = cfg.o_bias = cfg.mlp_bias = False
        elif mutation == "no_softcap":
            cfg.attn_softcap = cfg.final_softcap = None
        elif mutation == "no_norm_offset":
            cfg.norm_offset = 0.0

    def expected_shapes(self):
        """Every tensor transformers would load for this config, with its shape."""
        cfg = self.cfg
        H, q, kv, inter = cfg.hidden, cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.intermediate
        shapes = {"model.embed_tokens.weight": [cfg.vocab, H], "model.norm.weight": [H]}
        if not cfg.tied:
            shapes["lm_head.weight"] = [cfg.vocab, H]
        for layer in range(cfg.layers):
            p = f"model.layers.{layer}."
            shapes[p + "input_layernorm.weight"] = [H]
            shapes[p + "post_attention_layernorm.weight"] = [H]
            if cfg.gemma:
                shapes[p + "pre_feedforward_layernorm.weight"] = [H]
                shapes[p + "post_feedforward_layernorm.weight"] = [H]
            attention = (("qkv_proj", q + 2 * kv, H), ("o_proj", H, q)) if cfg.fused else (
                ("q_proj", q, H), ("k_proj", kv, H), ("v_proj", kv, H), ("o_proj", H, q))
            for name, rows, cols in attention:
                shapes[p + f"self_attn.{name}.weight"] = [rows, cols]
                if (cfg.o_bias if name == "o_proj" else cfg.qkv_bias):
                    shapes[p + f"self_attn.{name}.bias"] = [rows]
            if cfg.qk_norm:
                shapes[p + "self_attn.q_norm.weight"] = [cfg.head_dim]
                shapes[p + "self_attn.k_norm.weight"] = [cfg.head_dim]
            mlp = (("gate_up_proj", 2 * inter, H), ("down_proj", H, inter)) if cfg.fused else (
                ("gate_proj", inter, H), ("up_proj", inter, H), ("down_proj", H, inter))
            for name, rows, cols in mlp:
                shapes[p + f"mlp.{name}.weight"] = [rows, cols]
                if cfg.mlp_bias:
                    shapes[p + f"mlp.{name}.bias"] = [rows]
        return shapes

    def check_tensor_names(self):
        expected = self.expected_shapes()
        missing = sorted(set(expected) - set(self.w))
        # Tied checkpoints may still carry lm_head; old ones store rotary inv_freq.
        unexpected = sorted(
            n for n in set(self.w) - set(expected) if n != "lm_head.weight" and not n.endswith("rotary_emb.inv_freq")
        )
        wrong = sorted(n for n in expected if n in self.w and list(self.w[n].shape) != expected[n])
        problems = []
        if missing:
            problems.append(f"missing tensors (config.json implies them): {', '.join(missing[:4])}"
                            + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
        if unexpected:
            problems.append(f"unexpected tensors: {', '.join(unexpected[:4])}")
        for n in wrong[:4]:
            problems.append(f"{n} has shape {list(self.w[n].shape)}, expected {expected[n]}")
        if problems:
            raise ValueError("; ".join(problems))

    def weight(self, name):
        if name not in self.w:
            raise KeyError(f"missing tensor {name} (config.json implies it)")
        return self.w[name]

    def product(self, x, weight_name):
        """x · Wᵀ, through RoundedProduct where --bf16-activations rounds it."""
        W = self.weight(weight_name)
        return RoundedProduct.apply(x, W) if weight_name in self.rounding_weights else x @ W.T

    def linear(self, x, name, bias):
        y = self.product(x, name + ".weight")
        return y + self.weight(name + ".bias") if bias else y

    def rms_norm(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg.eps) * (self.cfg.norm_offset + weight)

    def norm(self, x, name):
        return self.rms_norm(x, self.weight(name + ".weight"))

    def rope(self, x, positions, inv_freq, scale=1.0):
        """x: [heads, n, head_dim]; rotate-half layout; cos and sin multiplied
        by scale (longrope's attention factor; exact when it is 1)."""
        angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [n, d/2]
        angles = torch.cat([angles, angles], dim=-1)
        cos, sin = (angles.cos() * scale).to(self.dtype), (angles.sin() * scale).to(self.dtype)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def mask(self, n, window):
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        visible = j <= i
        if window is not None:
            visible &= (i - j) < window
        return visible

    def attention(self, x, layer, positions):
        cfg, p = self.cfg, f"model.layers.{layer}.self_attn."
        n = x.shape[0]

        def project(name):
            return self.linear(x, p + name, cfg.qkv_bias)

        if cfg.fused:
            # One product (a LoRA on qkv_proj adds to it whole), then the columns
            # split as transformers slices them: every q row, then k, then v.
            q_dim, kv_dim = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
            q, k, v = self.linear(x, p + "qkv_proj", False).split([q_dim, kv_dim, kv_dim], dim=-1)
        else:
            q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
        q = q.reshape(n, cfg.heads, cfg.head_dim).transpose(0, 1)
        k = k.reshape(n, cfg.kv_heads, cfg.head_dim).transpose(0, 1)
        v = v.reshape(n, cfg.kv_heads, cfg.head_dim).transpose(0, 1)
        if cfg.qk_norm:
            q = self.rms_norm(q, self.weight(p + "q_norm.weight"))
            k = self.rms_norm(k, self.weight(p + "k_norm.weight"))
        local = self.local_inv_freq is not None and cfg.windows[layer] is not None
        inv_freq = self.local_inv_freq if local else self.inv_freq
        # longrope picks its factors by the length of this forward, as
        # transformers' dynamic update does from max(position_ids) + 1.
        if self.long_inv_freq is not None and int(positions.max()) + 1 > cfg.longrope["original"]:
            inv_freq = self.long_inv_freq
        scale = cfg.rope_attention_factor
        q, k = self.rope(q, positions, inv_freq, scale), self.rope(k, positions, inv_freq, scale)
        group = cfg.heads // cfg.kv_heads
        k = k.repeat_interleave(group, dim=0)  # query head h reads kv head h // group
        v = v.repeat_interleave(group, dim=0)

        scores = (q @ k.transpose(1, 2)) * cfg.scaling  # [heads, n, n]
        if cfg.attn_softcap:
            scores = torch.tanh(scores / cfg.attn_softcap) * cfg.attn_softcap
        scores = scores.masked_fill(~self.mask(n, cfg.windows[layer]), float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v  # [heads, n, head_dim]
        out = out.transpose(0, 1).reshape(n, cfg.heads * cfg.head_dim)
        return self.linear(out, p + "o_proj", cfg.o_bias)

    def mlp(self, x, layer):
        p = f"model.layers.{layer}.mlp."
        if self.cfg.fused:
            # Phi-3: gate_up_proj's first intermediate rows are gate, the rest up.
            gate, up = self.linear(x, p + "gate_up_proj", False).chunk(2, dim=-1)
        else:
            gate = self.linear(x, p + "gate_proj", self.cfg.mlp_bias)
            up = self.linear(x, p + "up_proj", self.cfg.mlp_bias)
        if self.mutation == "swap_gate_up":
            gate, up = up, gate
        if self.cfg.act == "gelu_pytorch_tanh":
            act = torch.nn.functional.gelu(gate, approximate="tanh")
        else:
            act = torch.nn.functional.silu(gate)
        return self.linear(act * up, p + "down_proj", self.cfg.mlp_bias)

    def embed(self, tokens):
        x = self.weight("model.embed_tokens.weight")[tokens]
        if self.cfg.gemma:
            # transformers casts sqrt(hidden) to the weights' dtype (55.4256 -> 55.5 in bf16).
            dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[self.cfg.torch_dtype]
            x = x * torch.tensor(self.cfg.hidden ** 0.5, dtype=torch.float32).to(dtype).to(x.dtype)
        return x

    def hidden_states(self, tokens):
        """The final norm's output [len(tokens), hidden] for a 1-D tensor of ids."""
        cfg = self.cfg
        positions = torch.arange(len(tokens))
        x = self.embed(tokens)
        for layer in range(cfg.layers):
            p = f"model.layers.{layer}."
            if cfg.gemma:
                x = x + self.norm(self.attention(self.norm(x, p + "input_layernorm"), layer, positions),
                                  p + "post_attention_layernorm")
                x = x + self.norm(self.mlp(self.norm(x, p + "pre_feedforward_layernorm"), layer),
                                  p + "post_feedforward_layernorm")
            else:
                x = x + self.attention(self.norm(x, p + "input_layernorm"), layer, positions)
                x = x + self.mlp(self.norm(x, p + "post_attention_layernorm"), layer)
        return self.norm(x, "model.norm")

    def head(self, hidden):
        """Logits of final hidden states, soft-capped where the model caps them."""
        logits = self.product(hidden, "model.embed_tokens.weight" if self.cfg.tied else "lm_head.weight")
        if self.cfg.final_softcap:
            logits = torch.tanh(logits / self.cfg.final_softcap) * self.cfg.final_softcap
        return logits

    @torch.no_grad()
    def logits(self, ids):
        """Logits [len(ids), vocab] of the whole sequence, recomputed from scratch."""
        return self.head(self.hidden_states(torch.tensor(ids, dtype=torch.long)))


# ---------------------------------------------------------------------------
# expected values


def top2_margin(row):
    top = torch.topk(row, 2).values
    return float(top[0] - top[1])


def expected_values(ref, prompt_ids, greedy_steps):
    all_logits = ref.logits(prompt_ids).to(torch.float64)
    log_probs = torch.log_softmax(all_logits[:-1], dim=-1)
    targets = torch.tensor(prompt_ids[1:], dtype=torch.long)
    nll = float(-log_probs.gather(1, targets[:, None]).mean()) if len(prompt_ids) > 1 else float("nan")

    sequence = list(prompt_ids)
    greedy_ids, margins = [], []
    row = all_logits[-1]
    for _ in range(greedy_steps):
        row = ref.logits(sequence)[-1].to(torch.float64)  # no cache: the whole sequence each step
        token = int(torch.argmax(row))
        greedy_ids.append(token)
        margins.append(top2_margin(row))
        sequence.append(token)

    return {
        "model_type": ref.cfg.model_type,
        "weight_dtypes": ref.file_dtypes,
        "precision": "f64" if ref.dtype == torch.float64 else "f32",
        "bf16_activations": bool(ref.rounding_weights),
        "prompt_ids": list(prompt_ids),
        "last_logits": all_logits[-1].tolist(),
        "prompt_logits": all_logits.tolist(),
        "greedy_ids": greedy_ids,
        "greedy_margins": margins,
        "greedy_last_logits": row.tolist(),
        "nll": nll,
        "perplexity": math.exp(nll),
    }


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--out", required=True, help="where to write the expected values (JSON)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-ids", help="comma-separated token ids")
    prompt.add_argument("--prompt-len", type=int, default=16, help="length of a random prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random prompt")
    parser.add_argument("--greedy", type=int, default=32, help="greedy tokens to generate")
    parser.add_argument("--precision", choices=["f64", "f32"], default="f64")
    parser.add_argument("--bf16-activations", action="store_true",
                        help="round the input of every product with a bf16 weight to bf16, as slm's AVX512-BF16 path does")
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    try:
        ref = Reference(args.model_dir, torch.float64 if args.precision == "f64" else torch.float32,
                        args.bf16_activations)
    except (OSError, ValueError, KeyError) as e:
        print(f"llama_reference.py: {args.model_dir}: {e}", file=sys.stderr)
        sys.exit(1)
    if args.prompt_ids:
        prompt_ids = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
    else:
        rng = random.Random(args.seed)
        prompt_ids = [rng.randrange(ref.cfg.vocab) for _ in range(args.prompt_len)]
    if not prompt_ids or any(t < 0 or t >= ref.cfg.vocab for t in prompt_ids):
        parser.error(f"prompt ids must be in [0, {ref.cfg.vocab})")

    result = expected_values(ref, prompt_ids, args.greedy)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
        f.write("\n")
    os.replace(tmp, args.out)
    print(
        f"{args.model_dir}: {len(prompt_ids)} prompt tokens, nll {result['nll']:.6f}, "
        f"min greedy margin {min(result['greedy_margins'], default=float('nan')):.4f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
