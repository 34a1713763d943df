#!/usr/bin/env python3
"""Perplexity of a unigram model (token frequencies of the training text,
add-one smoothed) on the held-out text: the baseline a language model must
beat. Reads whitespace-separated token ids, as `slm tokenize` prints them.

Usage: unigram.py TRAIN_IDS EVAL_IDS VOCAB_SIZE
"""
import math
import sys
from collections import Counter


def ids(path):
    with open(path) as f:
        return [int(t) for t in f.read().split()]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    train, held, vocab = ids(sys.argv[1]), ids(sys.argv[2]), int(sys.argv[3])
    counts = Counter(train)
    total = len(train) + vocab
    nll = -sum(math.log((counts[t] + 1) / total) for t in held) / len(held)
    print(f"unigram perplexity {math.exp(nll):.2f} over {len(held)} held-out tokens "
          f"({len(train)} training tokens, vocabulary {vocab})")


if __name__ == "__main__":
    main()
