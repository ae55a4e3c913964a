"""Steered versus unsteered decoding throughput, same model, same batch, in one process.

Target: steered >= 0.97 x unsteered. Every row decodes exactly --tokens tokens (end-of-sequence suppressed), so
both sides do the same work; the runs are interleaved and each side's median is used.

    python bench/steer_throughput.py [--batch 4] [--tokens 64] [--repeats 5] [--quantization nf4]
"""

from __future__ import annotations

import argparse

import torch
from _common import batch, interleaved, synthetic_profiles

from steering import Intervention, load_model, steer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quantization", default="nf4")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    lm = load_model("default", quantization=args.quantization)
    enc = batch(lm, args.batch)
    high, low = synthetic_profiles(lm)
    kw = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False, repetition_penalty=1.1,
              pad_token_id=lm.tokenizer.pad_token_id)
    rows = [Intervention(high, 1.0, low)] * args.batch

    @torch.no_grad()
    def plain():
        lm.model.generate(**enc, **kw)

    @torch.no_grad()
    def steered():
        with steer(lm, rows, seeds=0):
            lm.model.generate(**enc, **kw)

    plain()
    steered()  # warm-up
    med = interleaved({"unsteered": plain, "steered": steered}, args.repeats)
    tokens = args.batch * args.tokens
    print(f"model {lm.identity.describe()}, {args.quantization}, batch {args.batch}, {args.tokens} tokens/row, "
          f"{len(high)}+{len(low)} neurons per row")
    for name, sec in med.items():
        print(f"{name:>10}: {tokens / sec:7.1f} tokens/s (median of {args.repeats})")
    print(f"steered / unsteered throughput: {med['unsteered'] / med['steered']:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
