"""Time to first token on the compare page: how long after "Generate" the first words of the answers appear,
against the time the whole batch takes, on the default model with its shipped artefacts, in one process.

Target: the first token of a 5-method compare (base, simple, P², LoRA, NPTI) shows in under 2 s on a CPU; printed
with the 6-method batch beside it. Measured through `Studio.stream`, the path the page uses (its snapshots lag the
chosen token by one decoding step and are sent at most every 0.1 s, both included here); the network is not.

    python bench/compare_ttft.py [--tokens 96] [--repeats 5] [--quantization bf16]
"""

from __future__ import annotations

import statistics
import time

from _common import QUESTIONS, parse_args

from db import Store
from steering import load_model
from steering.engine.generation import Decoding
from steering.methods.dispatch import METHODS
from studio.core import CompareResult, Studio


def timed(studio: Studio, methods: list[str], question: str) -> tuple[float, float]:
    """(seconds to the first snapshot with any text, seconds to the final result)."""
    start = time.perf_counter()
    first = None
    for update in studio.stream(studio.compare, question, "Extraversion", "high", methods, None, 0):
        if isinstance(update, CompareResult):
            return (first if first is not None else time.perf_counter() - start), time.perf_counter() - start
        if first is None and any(update.values()):
            first = time.perf_counter() - start
    raise RuntimeError("the stream ended without a result")


def main() -> None:
    args = parse_args(__doc__, batch=5, tokens=96)
    lm = load_model("default", quantization=args.quantization)
    with Store("sqlite://") as store:
        studio = Studio(lm, store, Decoding(max_new_tokens=args.tokens, do_sample=True))
        sets = {"5 methods": ["base", "simple", "p2", "sft", "npti"], f"{len(METHODS)} methods": list(METHODS)}
        timed(studio, sets["5 methods"], QUESTIONS[0])  # warm-up: loads adapters, profiles and vectors once
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in sets}
        for i in range(args.repeats):
            for name, methods in sets.items():
                results[name].append(timed(studio, methods, QUESTIONS[(i + 1) % len(QUESTIONS)]))
    print(f"model {lm.identity.describe()}, {lm.quantization}, up to {args.tokens} tokens/answer, sampled, "
          f"median of {args.repeats}")
    for name, runs in results.items():
        first = statistics.median(r[0] for r in runs)
        whole = statistics.median(r[1] for r in runs)
        print(f"{name:>10}: first token {first:5.2f} s, whole batch {whole:5.2f} s, "
              f"first / whole {first / whole:.3f}")
    print(f"5-method time to first token: {statistics.median(r[0] for r in results['5 methods']):.2f} s "
          "(target < 2 s)")


if __name__ == "__main__":
    main()
