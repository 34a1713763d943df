#!/usr/bin/env python3
"""Steady training throughput of one `slm finetune` run, for the training
benchmarks: tokens/s after the first (warm-up) step, from metrics.jsonl's
cumulative figures; the GFLOP/s of the linear layers at FLOP_PER_WEIGHT per
weight per token (4 for LoRA: forward and dx; 6 for full training: also dW);
and peak RSS in MiB from /usr/bin/time -f %M.

Usage: training_rate.py METRICS_JSONL CONFIG_JSON RSS_FILE TOKENS_PER_STEP FLOP_PER_WEIGHT
Prints: RATE GFLOPS RSS_MIB
"""
import json
import sys


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    metrics, config, rss_file = sys.argv[1:4]
    tokens, flop_per_weight = int(sys.argv[4]), float(sys.argv[5])
    rows = [json.loads(line) for line in open(metrics) if '"loss"' in line]
    c = json.load(open(config))
    H, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    hd = c.get("head_dim") or H // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    linear = L * (H * q + 2 * H * kv + q * H + 3 * H * I) + V * H
    elapsed_last = len(rows) * tokens / rows[-1]["tokens_per_s"]
    elapsed_first = tokens / rows[0]["tokens_per_s"]
    rate = (len(rows) - 1) * tokens / (elapsed_last - elapsed_first)
    rss = int(open(rss_file).read().split()[-1]) / 1024
    print("%.0f %.0f %.0f" % (rate, rate * flop_per_weight * linear / 1e9, rss))


if __name__ == "__main__":
    main()
