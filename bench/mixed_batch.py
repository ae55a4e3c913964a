"""A studio round in one batch versus the same rows one after the other, same model, same process.

A round is one question answered by base, simple prompt, P² prompt, LoRA adapter and NPTI rows (the studio's
five methods). The batched side makes one generate call with per-row adapters and interventions
(`methods.answer_rows`); the sequential side makes five calls of one row each. Greedy decoding, so both sides write
the same answers; each call stops when its longest row ends, as in the studio.

Target: batched <= 0.4 x sequential wall time.

    python bench/mixed_batch.py [--tokens 64] [--repeats 5] [--quantization bf16] [--trait Extraversion]
"""

from __future__ import annotations

import argparse

from _common import QUESTIONS, interleaved

from steering import load_model
from steering.engine.generation import Decoding
from steering.methods.dispatch import METHODS, Request, answer_rows, unavailable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quantization", default=None, help="default: nf4 on CUDA, bf16 on a CPU")
    parser.add_argument("--trait", default="Extraversion")
    parser.add_argument("--pole", default="high")
    args = parser.parse_args()
    lm = load_model("default", quantization=args.quantization)
    for m in METHODS:
        if why := unavailable(lm, m, args.trait, args.pole):
            raise SystemExit(f"{m}: {why}")
    decoding = Decoding(max_new_tokens=args.tokens)
    rows = [(Request(m, args.trait, args.pole, seed=0), QUESTIONS[0]) for m in METHODS]

    def batched():
        return answer_rows(lm, rows, decoding)

    def sequential():
        return [answer_rows(lm, [row], decoding)[0] for row in rows]

    same = [a.text for a, _ in batched()] == [a.text for a, _ in sequential()]
    med = interleaved({"batched": batched, "sequential": sequential}, args.repeats)
    print(f"model {lm.identity.describe()}, {lm.quantization}, {args.trait} {args.pole}, rows "
          f"{', '.join(METHODS)}, up to {args.tokens} new tokens, greedy")
    for name, sec in med.items():
        print(f"{name:>10}: {sec:6.2f} s per round (median of {args.repeats})")
    print(f"identical answers both ways: {same}")
    print(f"batched / sequential wall time: {med['batched'] / med['sequential']:.3f} (target <= 0.4)")


if __name__ == "__main__":
    main()
