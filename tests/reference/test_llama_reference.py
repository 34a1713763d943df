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
            else:  # blended, strictly between the two
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


if __name__ == "__main__":
    unittest.main()
