"""Steered versus unsteered decoding throughput, same model, same batch, in one process.

Target: steered >= 0.97 x unsteered. Every row decodes exactly --tokens tokens (end-of-sequence suppressed), so
both sides do the same work; the runs are interleaved and each side's median is used.

    python bench/steer_throughput.py [--batch 4] [--tokens 64] [--repeats 5] [--quantization bf16]
"""

from __future__ import annotations

import torch
from _common import batch, fixed_length, header, interleaved, parse_args, print_rates, synthetic_profiles

from steering import Intervention, load_model, steer


def main() -> None:
    args = parse_args(__doc__, batch=4)
    lm = load_model("default", quantization=args.quantization)
    enc = batch(lm, args.batch)
    high, low = synthetic_profiles(lm)
    kw = fixed_length(lm, args.tokens)
    rows = [Intervention(high, 1.0, low)] * args.batch

    @torch.no_grad()
    def plain():
        lm.model.generate(**enc, **kw)

    @torch.no_grad()
    def steered():
        with steer(lm, rows, seeds=0):
            lm.model.generate(**enc, **kw)

    med = interleaved({"unsteered": plain, "steered": steered}, args.repeats)
    tokens = args.batch * args.tokens
    print(header(lm, args, f"{len(high)}+{len(low)} neurons per row"))
    print_rates(med, tokens, args.repeats)
    print(f"steered / unsteered throughput: {med['unsteered'] / med['steered']:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
