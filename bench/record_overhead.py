"""Recording during identification versus plain generation, same model, same batch, in one process.

Target: recording <= 1.10 x plain generation time. Every row decodes exactly --tokens tokens; runs are
interleaved and each side's median is used. As in identification (one record block per pole over all its
batches), the statistics tables are allocated once and reused across calls.

    python bench/record_overhead.py [--batch 8] [--tokens 64] [--repeats 5] [--quantization bf16]
"""

from __future__ import annotations

import torch
from _common import batch, fixed_length, header, interleaved, parse_args

from steering import ActivationStats, load_model, record_activations
from steering.engine.generation import eos_ids


def main() -> None:
    args = parse_args(__doc__, batch=8)
    lm = load_model("default", quantization=args.quantization)
    enc = batch(lm, args.batch)
    kw = fixed_length(lm, args.tokens)
    eos = eos_ids(lm)
    counted = []
    stats = ActivationStats(lm.sites.n_layers, lm.sites.width)

    @torch.no_grad()
    def plain():
        lm.model.generate(**enc, **kw)

    @torch.no_grad()
    def recorded():
        before = stats.n_tokens
        with record_activations(lm, eos, stats=stats):
            lm.model.generate(**enc, **kw)
        counted.append(stats.n_tokens - before)

    med = interleaved({"plain": plain, "recording": recorded}, args.repeats)
    print(header(lm, args, f"{counted[-1]} positions counted per run"))
    for name, sec in med.items():
        print(f"{name:>10}: {sec:6.2f} s (median of {args.repeats})")
    print(f"recording / plain time: {med['recording'] / med['plain']:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
