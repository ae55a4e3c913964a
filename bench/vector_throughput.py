"""Vector-steered and read-out decoding throughput against unsteered, same model, same batch, in one process.

Targets: vector-steered >= 0.98 x unsteered; with the trait read-out >= 0.95 x unsteered. Every row decodes exactly
--tokens tokens (end-of-sequence suppressed), so all sides do the same work; the runs are interleaved and each
side's median is used. The vector is random (timing only: which direction is added does not change the cost).

    python bench/vector_throughput.py [--batch 4] [--tokens 64] [--repeats 5] [--quantization bf16]
"""

from __future__ import annotations

import numpy as np
import torch
from _common import batch, fixed_length, header, interleaved, parse_args, print_rates

from steering import load_model
from steering.methods.vector import TraitVector, VectorPush, middle_layers, read_trait, steer_vectors


def main() -> None:
    args = parse_args(__doc__, batch=4)
    lm = load_model("default", quantization=args.quantization)
    enc = batch(lm, args.batch)
    kw = fixed_length(lm, args.tokens)
    rng = np.random.default_rng(0)
    n, h = lm.sites.n_layers, lm.model.config.hidden_size
    vec = TraitVector("Extraversion", lm.identity, rng.normal(size=(n, h)), rng.uniform(5, 20, n), np.zeros(n),
                      n // 2, middle_layers(n))
    pushes = [VectorPush(vec, "high", 0.05)] * args.batch

    @torch.no_grad()
    def plain():
        lm.model.generate(**enc, **kw)

    @torch.no_grad()
    def steered():
        with steer_vectors(lm, pushes):
            lm.model.generate(**enc, **kw)

    @torch.no_grad()
    def read():
        with read_trait(lm, [vec] * args.batch):
            lm.model.generate(**enc, **kw)

    med = interleaved({"unsteered": plain, "vector": steered, "read-out": read}, args.repeats)
    tokens = args.batch * args.tokens
    print(header(lm, args, f"vector at layers {list(vec.layers)}, read-out at layer {vec.readout_layer}"))
    print_rates(med, tokens, args.repeats)
    print(f"vector / unsteered throughput: {med['unsteered'] / med['vector']:.3f} (target >= 0.98)")
    print(f"read-out / unsteered throughput: {med['unsteered'] / med['read-out']:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
