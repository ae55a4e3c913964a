"""The default model in nf4 versus bf16 versus fp32: memory and decoding speed, measured in one process.

    python bench/quantization.py [--tokens 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc

import torch
from _common import batch, interleaved

from steering import load_model

PRECISIONS = {"nf4": "nf4", "bf16": "bf16", "fp32": "none"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    models = {name: load_model("default", quantization=q) for name, q in PRECISIONS.items()}
    runs = {}
    for b in (1, 4):
        for name, lm in models.items():
            enc = batch(lm, b)
            kw = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                      pad_token_id=lm.tokenizer.pad_token_id)
            runs[(name, b)] = (lambda lm=lm, enc=enc, kw=kw: lm.model.generate(**enc, **kw))
    with torch.no_grad():
        med = interleaved(runs, args.repeats)
    base = {b: med[("fp32", b)] for b in (1, 4)}
    print(f"{'precision':>9} {'memory MB':>10} {'tok/s b=1':>10} {'tok/s b=4':>10} {'speed vs fp32 (b=1, b=4)':>26}")
    for name, lm in models.items():
        mb = lm.model.get_memory_footprint() / 1e6
        tps = {b: b * args.tokens / med[(name, b)] for b in (1, 4)}
        ratio = ", ".join(f"{base[b] / med[(name, b)]:.2f}" for b in (1, 4))
        print(f"{name:>9} {mb:10.0f} {tps[1]:10.1f} {tps[4]:10.1f} {ratio:>26}")
    del models
    gc.collect()


if __name__ == "__main__":
    main()
