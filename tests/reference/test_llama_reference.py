#!/usr/bin/python3
"""Self-checks of llama_reference.py: properties the Hugging Face semantics
imply, checked on tiny models written here, so that a mistake in the reference
cannot hide behind an identical mistake in the C++ it judges.

Run: /usr/bin/python3 tests/reference/test_llama_reference.py
"""

import json
import math
import os
import struct
import sys
import tempfile
import unittest

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_reference as ref  # noqa: E402
import lora_reference as lora  # noqa: E402


def write_safetensors(path, tensors):
    """tensors: {name: (dtype name, raw little-endian bytes, shape)}."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, raw, shape) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_model(directory, seed=0, std=0.3, **overrides):
    """A random model folder (f32) for `overrides` on top of a tiny llama config."""
    config = dict(model_type="llama", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=50, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False)
    config.update(overrides)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    cfg = ref.Config(config)
    shapes = ref.Reference.expected_shapes(type("R", (), {"cfg": cfg})())
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in shapes.items():
        value = rng.standard_normal(shape) * std + (1.0 if name.endswith("norm.weight") else 0.0)
        weights[name] = value.astype("<f4")
    write_safetensors(os.path.join(directory, "model.safetensors"),
                      {n: ("F32", w.tobytes(), w.shape) for n, w in weights.items()})
    return weights


class SafetensorsReader(unittest.TestCase):
    def test_dtypes_decode_exactly(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            f32 = np.array([1.5, -0.25, 3e-3], dtype="<f4")
            f16 = np.array([1.5, -0.25, 65504.0], dtype="<f2")
            bf16 = np.array([0x3F80, 0xC020, 0x0000, 0x7F7F], dtype="<u2")  # 1, -2.5, 0, max bf16
            write_safetensors(path, {"a": ("F32", f32.tobytes(), [3]), "b": ("F16", f16.tobytes(), [3]),
                                     "c": ("BF16", bf16.tobytes(), [2, 2])})
            t = ref.read_safetensors(path)
            np.testing.assert_array_equal(t["a"][0], f32)
            np.testing.assert_array_equal(t["b"][0], f16.astype(np.float32))
            expected = np.array([[1.0, -2.5], [0.0, 3.3895313892515355e38]], dtype=np.float32)
            np.testing.assert_array_equal(t["c"][0], expected)
            self.assertEqual(t["c"][1], "BF16")

    def test_byte_size_must_match_shape(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            write_safetensors(path, {"a": ("F32", b"\0" * 8, [3])})
            with self.assertRaises(ValueError):
                ref.read_safetensors(path)


class Rope(unittest.TestCase):
    def test_scores_depend_only_on_relative_position(self):
        with tempfile.TemporaryDirectory() as d:
            make_model(d)
            r = ref.Reference(d)
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, 1, 8, generator=g, dtype=torch.float64)
        k = torch.randn(1, 1, 8, generator=g, dtype=torch.float64)
        r.inv_freq = ref.rope_inv_freq(r.cfg)[:4]
        for shift in (1, 7, 100):
            a = (r.rope(q, torch.tensor([5]), r.inv_freq) * r.rope(k, torch.tensor([2]), r.inv_freq)).sum()
            b = (r.rope(q, torch.tensor([5 + shift]), r.inv_freq) * r.rope(k, torch.tensor([2 + shift]), r.inv_freq)).sum()
            self.assertAlmostEqual(float(a), float(b), places=10)

    def test_rotate_half_pairs_i_with_i_plus_half(self):
        with tempfile.TemporaryDirectory() as d:
            make_model(d)
            r = ref.Reference(d)
        r.inv_freq = torch.tensor([math.pi / 2, 0.0], dtype=torch.float64)
        x = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
        # Position 1 turns pair (x0, x2) by 90 degrees: x0 -> x2; pair (x1, x3) has frequency 0.
        out = r.rope(x, torch.tensor([1]), r.inv_freq)
        torch.testing.assert_close(out, torch.tensor([[[0.0, 0.0, 1.0, 0.0]]], dtype=torch.float64))

    def test_linear_divides_every_frequency(self):
        cfg = ref.Config(dict(model_type="llama", hidden_size=64, intermediate_size=8, num_hidden_layers=1,
                              num_attention_heads=4, vocab_size=8, rope_scaling={"type": "linear", "factor": 4.0}))
        base = 1.0 / 10000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
        torch.testing.assert_close(ref.rope_inv_freq(cfg), base / 4)

    def test_llama3_bands(self):
        scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 64}
        cfg = ref.Config(dict(model_type="llama", hidden_size=64, intermediate_size=8, num_hidden_layers=1,
                              num_attention_heads=4, vocab_size=8, rope_scaling=scaling))
        base = 1.0 / 10000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
        scaled = ref.rope_inv_freq(cfg)
        wavelen = 2 * math.pi / base
        for b, s, w in zip(base.tolist(), scaled.tolist(), wavelen.tolist()):
            if w < 64 / 4:  # high frequencies: untouched
                self.assertAlmostEqual(s, b, places=15)
            elif w > 64 / 1:  # low frequencies: divided by factor
                self.assertAlmostEqual(s, b / 8, places=15)
            else:  # blended: transformers' closed form, smooth = (L / wavelength - low) / (high - low)
                smooth = (64 / w - 1.0) / (4.0 - 1.0)
                self.assertAlmostEqual(s, (1 - smooth) * b / 8 + smooth * b, places=15)
                self.assertTrue(b / 8 < s < b, (b, s, w))
        kinds = [(w < 16) + 2 * (w > 64) for w in wavelen.tolist()]
        self.assertEqual(set(kinds), {0, 1, 2}, "the fixture should exercise all three bands")


class InScratchFolder(unittest.TestCase):
    """A test case with a scratch folder; path(name) is a file in it."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def path(self, name):
        return os.path.join(self.dir.name, name)


class Model(InScratchFolder):
    def test_causal(self):
        make_model(self.path("m"))
        r = ref.Reference(self.path("m"))
        a = r.logits([1, 2, 3, 4, 5])
        b = r.logits([1, 2, 3, 4, 9])
        torch.testing.assert_close(a[:4], b[:4], rtol=0, atol=1e-12)
        self.assertGreater(float((a[4] - b[4]).abs().max()), 1e-3)

    def test_sliding_window_hides_keys_at_distance_window_or_more(self):
        # One layer, so a key's influence reaches only its own window.
        make_model(self.path("m"), model_type="mistral", num_hidden_layers=1, sliding_window=3)
        r = ref.Reference(self.path("m"))
        ids = [3, 1, 4, 1, 5, 9, 2, 6]
        last = r.logits(ids)[-1]
        # Position 7 sees positions 5, 6, 7 only.
        for far in (0, 4):
            changed = list(ids)
            changed[far] = 11
            torch.testing.assert_close(r.logits(changed)[-1], last, rtol=0, atol=1e-12)
        changed = list(ids)
        changed[5] = 11
        self.assertGreater(float((r.logits(changed)[-1] - last).abs().max()), 1e-3)

    def test_qwen_window_only_from_max_window_layers(self):
        for first_windowed, hidden in ((1, False), (0, True)):
            make_model(self.path("q"), model_type="qwen2", num_hidden_layers=1, use_sliding_window=True,
                       sliding_window=2, max_window_layers=first_windowed)
            r = ref.Reference(self.path("q"))
            ids = [3, 1, 4, 1, 5]
            changed = [11] + ids[1:]
            moved = float((r.logits(changed)[-1] - r.logits(ids)[-1]).abs().max())
            self.assertEqual(moved < 1e-12, hidden, (first_windowed, moved))

    def test_qwen_without_use_sliding_window_is_full_attention(self):
        make_model(self.path("q"), model_type="qwen3", num_hidden_layers=1, use_sliding_window=False,
                   sliding_window=2, max_window_layers=0)
        self.assertEqual(ref.Reference(self.path("q")).cfg.windows, [None])

    def test_grouped_query_attention_equals_repeated_heads(self):
        w = make_model(self.path("gqa"), num_attention_heads=4, num_key_value_heads=2)
        r = ref.Reference(self.path("gqa"))
        # The same model with 4 KV heads: KV head h holds the weights of GQA head h // 2.
        full = make_model(self.path("mha"), num_attention_heads=4, num_key_value_heads=4)
        for name in list(full):
            if name.endswith(("k_proj.weight", "v_proj.weight")):
                full[name] = np.repeat(w[name].reshape(2, 8, 32), 2, axis=0).reshape(32, 32)
            else:
                full[name] = w[name]
        write_safetensors(os.path.join(self.path("mha"), "model.safetensors"),
                          {n: ("F32", a.astype("<f4").tobytes(), a.shape) for n, a in full.items()})
        mha = ref.Reference(self.path("mha"))
        torch.testing.assert_close(r.logits([1, 2, 3, 4]), mha.logits([1, 2, 3, 4]), rtol=0, atol=1e-10)

    def test_tied_head_is_the_embedding(self):
        w = make_model(self.path("untied"))
        make_model(self.path("tied"), tie_word_embeddings=True)
        w["lm_head.weight"] = w["model.embed_tokens.weight"]
        write_safetensors(os.path.join(self.path("untied"), "model.safetensors"),
                          {n: ("F32", a.tobytes(), a.shape) for n, a in w.items()})
        del w["lm_head.weight"]
        write_safetensors(os.path.join(self.path("tied"), "model.safetensors"),
                          {n: ("F32", a.tobytes(), a.shape) for n, a in w.items()})
        a = ref.Reference(self.path("tied")).logits([4, 5, 6])
        b = ref.Reference(self.path("untied")).logits([4, 5, 6])
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_bias_layout_follows_transformers(self):
        cases = {("llama", True): {"q", "k", "v", "o"}, ("qwen3", True): {"q", "k", "v", "o"},
                 ("qwen2", False): {"q", "k", "v"}, ("mistral", True): set(), ("llama", False): set()}
        for (model_type, bias), expected in cases.items():
            cfg = ref.Config(dict(model_type=model_type, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                  num_attention_heads=2, vocab_size=8, attention_bias=bias))
            shapes = ref.Reference.expected_shapes(type("R", (), {"cfg": cfg})())
            found = {n.split(".")[-2][0] for n in shapes if n.endswith("_proj.bias")}
            self.assertEqual(found, expected, (model_type, bias))

    def test_missing_tensor_is_an_error(self):
        make_model(self.path("m"))
        make_model(self.path("b"), attention_bias=True)
        # Weights without biases under a config that asks for them.
        os.replace(os.path.join(self.path("m"), "model.safetensors"), os.path.join(self.path("b"), "model.safetensors"))
        with self.assertRaisesRegex(ValueError, "missing tensors"):
            ref.Reference(self.path("b"))

    def test_expected_values(self):
        make_model(self.path("m"))
        r = ref.Reference(self.path("m"))
        ids = [1, 7, 3, 9, 2]
        e = ref.expected_values(r, ids, greedy_steps=4)
        logits = r.logits(ids)
        self.assertEqual(e["greedy_ids"][0], int(torch.argmax(logits[-1])))
        manual = -sum(float(torch.log_softmax(logits[i], -1)[ids[i + 1]]) for i in range(4)) / 4
        self.assertAlmostEqual(e["nll"], manual, places=10)
        self.assertAlmostEqual(e["perplexity"], math.exp(manual), places=8)
        self.assertEqual(len(e["prompt_logits"]), 5)
        seq = ids + e["greedy_ids"][:3]
        torch.testing.assert_close(torch.tensor(e["greedy_last_logits"], dtype=torch.float64), r.logits(seq)[-1])
        top = sorted(r.logits(seq)[-1].tolist())[-2:]
        self.assertAlmostEqual(e["greedy_margins"][3], top[1] - top[0], places=10)


class Bf16Activations(InScratchFolder):
    """--bf16-activations rounds the input of products with bf16 weights, and
    their backward's dy, to bf16 (round to nearest even), and nothing else."""

    def bf16_model(self, directory):
        w = make_model(directory)
        write_safetensors(os.path.join(directory, "model.safetensors"),
                          {n: ("BF16", (a.view("<u4") >> 16).astype("<u2").tobytes(), a.shape) for n, a in w.items()})

    def test_no_effect_on_f32_weights(self):
        make_model(self.path("m"))
        a = ref.Reference(self.path("m")).logits([1, 2, 3])
        b = ref.Reference(self.path("m"), bf16_activations=True).logits([1, 2, 3])
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_rounds_inputs_and_gradients_of_bf16_products(self):
        self.bf16_model(self.path("m"))
        plain = ref.Reference(self.path("m"))
        rounding = ref.Reference(self.path("m"), bf16_activations=True)
        name = "model.layers.0.self_attn.q_proj"
        W = plain.weight(name + ".weight")
        x = (torch.randn(3, 32, dtype=torch.float64) * (1 + 1e-3)).requires_grad_()
        y = rounding.linear(x, name, False)
        x32 = x.detach().to(torch.float32)  # slm rounds float32 activations, to nearest even
        torch.testing.assert_close(y, x32.to(torch.bfloat16).to(torch.float64) @ W.T, rtol=1e-12, atol=0)
        self.assertGreater(float((y - plain.linear(x, name, False)).abs().max()), 1e-4)
        dy = torch.randn(3, W.shape[0], dtype=torch.float64)
        y.backward(dy)
        torch.testing.assert_close(x.grad, dy.to(torch.bfloat16).to(torch.float64) @ W, rtol=1e-12, atol=0)
        self.assertFalse(torch.equal(rounding.logits([1, 2, 3]), plain.logits([1, 2, 3])))


def gemma_config(model_type, **overrides):
    config = dict(model_type=model_type, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=50, rms_norm_eps=1e-6)
    config.update(overrides)
    return config


class Gemma(InScratchFolder):
    def test_norm_scales_by_one_plus_weight(self):
        make_model(self.path("g"), **gemma_config("gemma3_text"))
        r = ref.Reference(self.path("g"))
        x = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
        rms = math.sqrt(12.5 + 1e-6)
        torch.testing.assert_close(r.rms_norm(x, torch.zeros(2, dtype=torch.float64)), x / rms)
        torch.testing.assert_close(r.rms_norm(x, torch.ones(2, dtype=torch.float64)), 2 * x / rms)

    def test_layer_types_follow_transformers(self):
        g3 = ref.Config(gemma_config("gemma3_text", num_hidden_layers=12, sliding_window=4))
        self.assertEqual([i for i, w in enumerate(g3.windows) if w is None], [5, 11])
        g3 = ref.Config(gemma_config("gemma3_text", num_hidden_layers=4, sliding_window=4, sliding_window_pattern=2))
        self.assertEqual(g3.windows, [4, None, 4, None])
        g2 = ref.Config(gemma_config("gemma2", num_hidden_layers=4, sliding_window=4))
        self.assertEqual(g2.windows, [4, None, 4, None])  # the even layers slide
        listed = ref.Config(gemma_config("gemma2", num_hidden_layers=2, sliding_window=4,
                                         layer_types=["full_attention", "sliding_attention"]))
        self.assertEqual(listed.windows, [None, 4])

    def test_gemma3_local_layers_rotate_with_their_own_base_unscaled(self):
        cfg = ref.Config(gemma_config("gemma3_text", rope_theta=1e6, rope_local_base_freq=100.0,
                                      rope_scaling={"rope_type": "linear", "factor": 8.0}))
        exponents = torch.arange(0, 8, 2, dtype=torch.float64) / 8
        torch.testing.assert_close(ref.rope_inv_freq(cfg), 1.0 / 1e6 ** exponents / 8)
        torch.testing.assert_close(ref.rope_inv_freq(cfg, local=True), 1.0 / 100.0 ** exponents)

    def test_final_softcap_bounds_the_logits(self):
        make_model(self.path("g"), **gemma_config("gemma2", final_logit_softcapping=2.0))
        r = ref.Reference(self.path("g"))
        logits = r.logits([1, 2, 3])
        self.assertLess(float(logits.abs().max()), 2.0)
        r.cfg.final_softcap = None
        self.assertGreater(float(r.logits([1, 2, 3]).abs().max()), 2.0)

    def test_attention_softcap_changes_scores_only_when_small(self):
        make_model(self.path("g"), **gemma_config("gemma2", attn_logit_softcapping=1e9))
        r = ref.Reference(self.path("g"))
        uncapped = r.logits([1, 2, 3])
        r.cfg.attn_softcap = None
        torch.testing.assert_close(r.logits([1, 2, 3]), uncapped, rtol=1e-9, atol=1e-9)
        r.cfg.attn_softcap = 0.1
        self.assertGreater(float((r.logits([1, 2, 3]) - uncapped).abs().max()), 1e-3)

    def test_embedding_scale_is_rounded_to_torch_dtype(self):
        for dtype, scale in (("float32", math.sqrt(48)), ("bfloat16", 6.9375)):
            make_model(self.path(dtype), **gemma_config("gemma3_text", hidden_size=48, torch_dtype=dtype))
            r = ref.Reference(self.path(dtype))
            row = r.weight("model.embed_tokens.weight")[3]
            torch.testing.assert_close(r.embed(torch.tensor([3]))[0], row * scale)

    def test_post_norm_tensors(self):
        shapes = ref.Reference.expected_shapes(type("R", (), {"cfg": ref.Config(gemma_config("gemma2"))})())
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            self.assertIn(f"model.layers.1.{name}.weight", shapes)
        self.assertNotIn("lm_head.weight", shapes)  # Gemma ties by default
        self.assertNotIn("model.layers.0.self_attn.q_norm.weight", shapes)
        g3 = ref.Reference.expected_shapes(type("R", (), {"cfg": ref.Config(gemma_config("gemma3_text"))})())
        self.assertIn("model.layers.0.self_attn.q_norm.weight", g3)


# ---------------------------------------------------------------------------
# Phi-3: fused projections and longrope


def phi3_config(**overrides):
    """A tiny phi3 config.json (make_model's sizes; head_dim 8: four rotary pairs)."""
    config = dict(model_type="phi3", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=50, rms_norm_eps=1e-5,
                  rope_theta=10000.0, max_position_embeddings=32, original_max_position_embeddings=8)
    config.update(overrides)
    return config


def longrope(short, long, **extra):
    return dict(type="longrope", short_factor=list(short), long_factor=list(long), **extra)


def save_weights(directory, weights):
    write_safetensors(os.path.join(directory, "model.safetensors"),
                      {n: ("F32", a.astype("<f4").tobytes(), a.shape) for n, a in weights.items()})


def split_fused(weights, q=32, kv=16, inter=48):
    """The Llama-layout tensors of a Phi-3 checkpoint: qkv_proj's rows sliced
    into q, k, v (in that order) and gate_up_proj's into gate, up."""
    out = {}
    for name, a in weights.items():
        if name.endswith("self_attn.qkv_proj.weight"):
            stem = name[: -len("qkv_proj.weight")]
            out[stem + "q_proj.weight"], out[stem + "k_proj.weight"], out[stem + "v_proj.weight"] = (
                a[:q], a[q : q + kv], a[q + kv :])
            assert a.shape[0] == q + 2 * kv
        elif name.endswith("mlp.gate_up_proj.weight"):
            stem = name[: -len("gate_up_proj.weight")]
            out[stem + "gate_proj.weight"], out[stem + "up_proj.weight"] = a[:inter], a[inter:]
            assert a.shape[0] == 2 * inter
        else:
            out[name] = a
    return out


class Phi3(InScratchFolder):
    base = np.arange(0, 8, 2, dtype=np.float64) / 8  # the exponents of head_dim 8

    def inv_freq(self, ext, theta=10000.0):
        return torch.tensor(1.0 / (np.asarray(ext, dtype=np.float64) * theta ** self.base))

    def test_fused_projections_equal_mistral_with_row_slices(self):
        # Same weights: Phi-3 must equal Mistral (plain RMSNorm, SwiGLU, no
        # biases, a window on every layer) once its fused rows are split.
        w = make_model(self.path("phi3"), **phi3_config(sliding_window=3))
        make_model(self.path("mistral"), model_type="mistral", sliding_window=3)
        save_weights(self.path("mistral"), split_fused(w))
        phi3, mistral = ref.Reference(self.path("phi3")), ref.Reference(self.path("mistral"))
        self.assertEqual(phi3.cfg.windows, [3, 3])
        ids = [3, 1, 4, 1, 5, 9, 2, 6]
        torch.testing.assert_close(phi3.logits(ids), mistral.logits(ids), rtol=0, atol=1e-10)
        # The split is the one transformers makes: swapping k and v rows changes the logits.
        swapped = dict(w)
        for layer in range(2):
            a = w[f"model.layers.{layer}.self_attn.qkv_proj.weight"]
            swapped[f"model.layers.{layer}.self_attn.qkv_proj.weight"] = np.concatenate([a[:32], a[48:], a[32:48]])
        save_weights(self.path("phi3"), swapped)
        moved = ref.Reference(self.path("phi3")).logits(ids) - mistral.logits(ids)
        self.assertGreater(float(moved.abs().max()), 1e-3)

    def test_window_only_when_sliding_window_is_set(self):
        self.assertEqual(ref.Config(phi3_config(sliding_window=None)).windows, [None, None])
        self.assertEqual(ref.Config(phi3_config()).windows, [None, None])
        self.assertEqual(ref.Config(phi3_config(sliding_window=5, num_hidden_layers=3)).windows, [5, 5, 5])

    def test_no_biases_even_with_attention_bias(self):
        cfg = ref.Config(phi3_config(num_hidden_layers=1, attention_bias=True))
        shapes = ref.Reference.expected_shapes(type("R", (), {"cfg": cfg})())
        self.assertEqual(shapes["model.layers.0.self_attn.qkv_proj.weight"], [64, 32])
        self.assertEqual(shapes["model.layers.0.mlp.gate_up_proj.weight"], [96, 32])
        self.assertIn("lm_head.weight", shapes)  # Phi3Config does not tie by default
        without_eps = phi3_config()
        del without_eps["rms_norm_eps"]
        self.assertEqual(ref.Config(without_eps).eps, 1e-5)  # Phi3Config's default, not Llama's 1e-6
        self.assertFalse([n for n in shapes if n.endswith(".bias") or "q_proj" in n or "gate_proj" in n], shapes)

    def test_longrope_short_factors_up_to_original_long_beyond(self):
        short, long = [1.0, 1.5, 2.0, 4.0], [1.0, 3.0, 7.0, 20.0]
        cfg = ref.Config(phi3_config(rope_theta=500.0, rope_scaling=longrope(short, long)))
        for seq_len, ext in ((None, short), (1, short), (8, short), (9, long), (32, long)):
            torch.testing.assert_close(ref.rope_inv_freq(cfg, seq_len=seq_len), self.inv_freq(ext, 500.0),
                                       rtol=1e-15, atol=0, msg=str(seq_len))

    def test_longrope_attention_factor(self):
        def factor(**fields):
            fields.setdefault("rope_scaling", longrope([1] * 4, [2] * 4))
            return ref.Config(phi3_config(**fields)).rope_attention_factor

        # Top-level original: factor = 32 / 8 = 4; rope_scaling's factor is ignored.
        self.assertAlmostEqual(factor(), math.sqrt(1 + math.log(4) / math.log(8)), places=15)
        self.assertAlmostEqual(factor(rope_scaling=longrope([1] * 4, [2] * 4, factor=100.0)),
                               math.sqrt(1 + math.log(4) / math.log(8)), places=15)
        self.assertEqual(factor(rope_scaling=longrope([1] * 4, [2] * 4, attention_factor=1.25)), 1.25)
        self.assertEqual(factor(max_position_embeddings=8), 1.0)  # factor 1: no scaling
        # No top-level original: the original is max_position_embeddings, the factor rope_scaling's.
        no_original = dict(original_max_position_embeddings=None, max_position_embeddings=64)
        self.assertAlmostEqual(factor(rope_scaling=longrope([1] * 4, [2] * 4, factor=4.0), **no_original),
                               math.sqrt(1 + math.log(4) / math.log(64)), places=15)
        self.assertEqual(factor(**no_original), 1.0)
        cfg = ref.Config(phi3_config(rope_scaling=longrope([1] * 4, [2] * 4), **no_original))
        self.assertEqual(cfg.longrope["original"], 64)
        # No rope_scaling: no factor.
        self.assertEqual(factor(rope_scaling=None), 1.0)

    def test_longrope_factors_follow_the_forward_length(self):
        # original 4: a forward of 4 tokens uses the short factors, of 6 the long ones, at every position.
        ids, short, long = [5, 3, 8, 1, 9, 2], [1.0, 2.0, 3.0, 5.0], [1.0, 4.0, 9.0, 30.0]
        fields = dict(max_position_embeddings=16, original_max_position_embeddings=4)
        runs = {}
        for name, (s, l) in {"switch": (short, long), "short": (short, short), "long": (long, long)}.items():
            make_model(self.path(name), **phi3_config(rope_scaling=longrope(s, l), **fields))
            r = ref.Reference(self.path(name))
            runs[name] = (r.logits(ids[:4]), r.logits(ids))
        # Equal factors: the longer forward only appends rows (causality).
        torch.testing.assert_close(runs["short"][1][:4], runs["short"][0], rtol=0, atol=1e-12)
        # Different factors: 4 tokens rotate like the short model, 6 like the long one, prefix included.
        torch.testing.assert_close(runs["switch"][0], runs["short"][0], rtol=0, atol=1e-12)
        torch.testing.assert_close(runs["switch"][1], runs["long"][1], rtol=0, atol=1e-12)
        self.assertGreater(float((runs["switch"][1][:4] - runs["switch"][0]).abs().max()), 1e-3)

    def test_attention_factor_scales_each_score_by_its_square(self):
        # cos and sin both carry the factor, so q and k each grow by it: the
        # same as scaling qkv_proj's q and k rows (not v) in an unscaled model.
        a = 1.7
        make_model(self.path("scaled"), **phi3_config(rope_scaling=longrope([1] * 4, [1] * 4, attention_factor=a)))
        make_model(self.path("plain"), **phi3_config())  # the same weights, no rope_scaling
        scaled, plain = ref.Reference(self.path("scaled")), ref.Reference(self.path("plain"))
        for layer in range(2):
            plain.w[f"model.layers.{layer}.self_attn.qkv_proj.weight"][:48] *= a  # q's 32 rows, k's 16; not v
        self.assertEqual(scaled.cfg.rope_attention_factor, a)
        ids = [1, 2, 3, 4, 5]
        torch.testing.assert_close(scaled.logits(ids), plain.logits(ids), rtol=0, atol=1e-10)
        # And directly: rotated q . k carries a^2.
        g = torch.Generator().manual_seed(1)
        q, k = (torch.randn(1, 1, 8, generator=g, dtype=torch.float64) for _ in range(2))
        f = scaled.inv_freq

        def dot(scale):
            rotated = scaled.rope(q, torch.tensor([5]), f, scale) * scaled.rope(k, torch.tensor([2]), f, scale)
            return float(rotated.sum())
        self.assertAlmostEqual(dot(a), a * a * dot(1.0), places=12)

    def test_partial_rotary_factor_is_refused(self):
        with self.assertRaisesRegex(ValueError, "partial_rotary_factor"):
            ref.Config(phi3_config(partial_rotary_factor=0.75))
        with self.assertRaisesRegex(ValueError, "partial_rotary_factor"):
            ref.Config(phi3_config(rope_scaling=longrope([1] * 4, [1] * 4, partial_rotary_factor=0.5)))
        ref.Config(phi3_config(partial_rotary_factor=1.0))

    def test_factor_lists_must_hold_head_dim_over_two_numbers(self):
        for scaling, field in ((longrope([1] * 3, [1] * 4), "short_factor"),
                               (longrope([1] * 4, [1] * 5), "long_factor"),
                               (longrope([1] * 4, [1, 1, "2", 1]), "long_factor"),
                               (dict(type="longrope", short_factor=[1] * 4), "long_factor")):
            with self.assertRaisesRegex(ValueError, field, msg=str(scaling)):
                ref.Config(phi3_config(rope_scaling=scaling))
        # head_dim from config.json, not hidden / heads: 16 gives eight pairs.
        cfg = ref.Config(phi3_config(head_dim=16,
                                     rope_scaling=longrope([1] * 8, [2] * 8)))
        self.assertEqual(len(cfg.longrope["short"]), 8)

    def test_other_rope_types_are_refused(self):
        for scaling in ({"type": "linear", "factor": 2.0}, {"rope_type": "llama3", "factor": 8.0}, {"type": "su"}):
            with self.assertRaisesRegex(ValueError, "rope_scaling type", msg=str(scaling)):
                ref.Config(phi3_config(rope_scaling=scaling))
        # Other families still refuse longrope.
        with self.assertRaisesRegex(ValueError, "longrope"):
            ref.rope_inv_freq(ref.Config(dict(model_type="llama", hidden_size=32, intermediate_size=8,
                                              num_hidden_layers=1, num_attention_heads=4, vocab_size=8,
                                              rope_scaling=longrope([1] * 4, [1] * 4))))

    def test_split_projections_are_refused_in_a_phi3_folder(self):
        w = make_model(self.path("m"), **phi3_config())
        save_weights(self.path("m"), split_fused(w))
        with self.assertRaisesRegex(ValueError, "missing tensors.*qkv_proj.*unexpected tensors.*q_proj"):
            ref.Reference(self.path("m"))
        # And fused ones in a Llama folder.
        make_model(self.path("llama"))
        save_weights(self.path("llama"), w)
        with self.assertRaisesRegex(ValueError, "missing tensors.*unexpected tensors.*gate_up_proj"):
            ref.Reference(self.path("llama"))

    def test_expected_values_keys_are_the_llama_ones(self):
        make_model(self.path("phi3"), **phi3_config(rope_scaling=longrope([1] * 4, [2] * 4)))
        make_model(self.path("llama"))
        phi3 = ref.expected_values(ref.Reference(self.path("phi3")), [1, 2, 3, 4, 5, 6, 7], greedy_steps=2)
        llama = ref.expected_values(ref.Reference(self.path("llama")), [1, 2, 3], greedy_steps=1)
        self.assertEqual(sorted(phi3), sorted(llama))
        self.assertEqual(phi3["model_type"], "phi3")


class Phi3Lora(InScratchFolder):
    H, Q, KV, INTER, RANK = 32, 32, 16, 48, 4

    def run_lora(self, model, *options):
        out = self.path("out")
        lora.main([model, "--out", out, "--seq", "6", "--steps", "2", "--rank", str(self.RANK), *options])
        with open(os.path.join(out, "expected.json")) as f:
            return json.load(f), out

    def test_all_linear_trains_the_fused_modules(self):
        make_model(self.path("m"), **phi3_config(sliding_window=4))
        expected, out = self.run_lora(self.path("m"), "--targets", "all-linear")
        self.assertEqual(expected["targets"], ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
        sizes = {"self_attn.qkv_proj": (self.H, self.Q + 2 * self.KV), "self_attn.o_proj": (self.Q, self.H),
                 "mlp.gate_up_proj": (self.H, 2 * self.INTER), "mlp.down_proj": (self.INTER, self.H)}
        want = {}
        for layer in range(2):
            for module, (fan_in, fan_out) in sizes.items():
                stem = f"base_model.model.model.layers.{layer}.{module}"
                want[stem + ".lora_A.weight"] = [self.RANK, fan_in]
                want[stem + ".lora_B.weight"] = [fan_out, self.RANK]
        self.assertEqual({n: len(g) for n, g in expected["grads"].items()},
                         {n: shape[0] * shape[1] for n, shape in want.items()})
        adapter = ref.read_safetensors(os.path.join(out, "adapter", "adapter_model.safetensors"))
        self.assertEqual({n: list(a.shape) for n, (a, _) in adapter.items()}, want)
        with open(os.path.join(out, "adapter", "adapter_config.json")) as f:
            self.assertEqual(json.load(f)["target_modules"], expected["targets"])
        self.assertTrue(math.isfinite(expected["loss"]) and len(expected["curve"]) == 2)

    def test_full_gradients_use_the_checkpoint_names(self):
        make_model(self.path("m"), **phi3_config(rope_scaling=longrope([1] * 4, [2] * 4)))
        expected, _ = self.run_lora(self.path("m"), "--full")
        shapes = ref.Reference.expected_shapes(type("R", (), {"cfg": ref.Config(phi3_config())})())
        self.assertEqual(set(expected["grads"]), set(shapes))
        self.assertEqual(len(expected["grads"]["model.layers.1.self_attn.qkv_proj.weight"]), 64 * 32)
        self.assertEqual(len(expected["grads"]["model.layers.1.mlp.gate_up_proj.weight"]), 96 * 32)

    def test_targets_the_family_lacks_are_errors(self):
        make_model(self.path("phi3"), **phi3_config())
        make_model(self.path("llama"))
        for model, target, named in (("phi3", "q_proj", "qkv_proj, o_proj, gate_up_proj, down_proj"),
                                     ("phi3", "qkv_proj,up_proj", "gate_up_proj"),
                                     ("llama", "qkv_proj", "q_proj, k_proj, v_proj")):
            with self.assertRaises(SystemExit, msg=(model, target)) as raised:
                self.run_lora(self.path(model), "--targets", target)
            self.assertIn(named, str(raised.exception.code))

    def test_fused_lora_equals_split_loras_sharing_A(self):
        # PEFT adds B (A x) to the fused product before the split, so a
        # qkv_proj LoRA is three q/k/v LoRAs with one A and B cut by rows.
        w = make_model(self.path("phi3"), **phi3_config())
        make_model(self.path("mistral"), model_type="mistral")
        save_weights(self.path("mistral"), split_fused(w))
        g = torch.Generator().manual_seed(3)

        def draw(rows, cols):
            return torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.2

        fused, split = {}, {}
        for layer in range(2):
            p = f"model.layers.{layer}."
            A, B = draw(self.RANK, self.H), draw(self.Q + 2 * self.KV, self.RANK)
            fused[p + "self_attn.qkv_proj"] = (A, B)
            for name, rows in (("q_proj", B[: self.Q]), ("k_proj", B[self.Q : self.Q + self.KV]),
                               ("v_proj", B[self.Q + self.KV :])):
                split[p + "self_attn." + name] = (A, rows)
            A, B = draw(self.RANK, self.H), draw(2 * self.INTER, self.RANK)
            fused[p + "mlp.gate_up_proj"] = (A, B)
            split[p + "mlp.gate_proj"], split[p + "mlp.up_proj"] = (A, B[: self.INTER]), (A, B[self.INTER :])
            A, B = draw(self.RANK, self.INTER), draw(self.H, self.RANK)
            fused[p + "mlp.down_proj"] = split[p + "mlp.down_proj"] = (A, B)

        def leaves(adapters):
            return {k: (A.clone().requires_grad_(), B.clone().requires_grad_()) for k, (A, B) in adapters.items()}

        fused, split = leaves(fused), leaves(split)
        tokens = torch.tensor([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]])
        labels = tokens.clone()
        labels[0, :2] = -100
        losses = []
        for folder, adapters in (("phi3", fused), ("mistral", split)):
            loss = lora.LoraReference(self.path(folder), adapters, 2.0).loss(tokens, labels)
            loss.backward()
            losses.append(float(loss))
        self.assertAlmostEqual(losses[0], losses[1], places=10)
        for layer in range(2):
            p = f"model.layers.{layer}."
            A, B = fused[p + "self_attn.qkv_proj"]
            parts = [split[p + "self_attn." + n] for n in ("q_proj", "k_proj", "v_proj")]
            # The shared A gathers the three gradients; B's rows are the three B gradients stacked.
            torch.testing.assert_close(A.grad, sum(a.grad for a, _ in parts), rtol=0, atol=1e-10)
            torch.testing.assert_close(B.grad, torch.cat([b.grad for _, b in parts]), rtol=0, atol=1e-10)
            A, B = fused[p + "mlp.gate_up_proj"]
            parts = [split[p + "mlp." + n] for n in ("gate_proj", "up_proj")]
            torch.testing.assert_close(A.grad, sum(a.grad for a, _ in parts), rtol=0, atol=1e-10)
            torch.testing.assert_close(B.grad, torch.cat([b.grad for _, b in parts]), rtol=0, atol=1e-10)


if __name__ == "__main__":
    unittest.main()
