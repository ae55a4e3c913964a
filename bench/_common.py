"""Shared set-up for the benchmarks: the default model, a batch of chat prompts, synthetic profiles."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steering import NeuronProfile  # noqa: E402
from steering.engine.generation import encode_chats  # noqa: E402
from steering.methods.prompts import plain_chat  # noqa: E402

QUESTIONS = [
    "Your neighbour invites you to a street party where you will know almost no one. How do you spend the evening?",
    "A colleague takes credit for your idea in a meeting. What do you do?",
    "You have a free weekend with no plans. What do you do with it?",
    "Describe how you prepare for an important trip.",
    "A friend cancels dinner plans at the last minute. How do you react?",
    "What do you think about trying a cuisine you have never eaten before?",
    "How do you handle a deadline that suddenly moves a week earlier?",
    "Someone you just met asks you for a personal favour. What do you say?",
]


def batch(lm, size: int) -> dict:
    return encode_chats(lm, [plain_chat(QUESTIONS[i % len(QUESTIONS)]) for i in range(size)])


def synthetic_profiles(lm, n: int = 2500, seed: int = 0) -> tuple[NeuronProfile, NeuronProfile]:
    """Two disjoint random neuron sets of the size identification keeps on this model (timing only: which
    neurons are shifted does not change the cost)."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(lm.sites.n_layers * lm.sites.width, 2 * n, replace=False)
    make = lambda pole, ids: NeuronProfile(  # noqa: E731
        "Extraversion", pole, lm.identity, ids // lm.sites.width, ids % lm.sites.width,
        rng.uniform(0.1, 0.4, n), rng.uniform(0.3, 0.9, n), rng.uniform(0.3, 2.0, n))
    return make("high", flat[:n]), make("low", flat[n:])


def interleaved(runs: dict, repeats: int) -> dict:
    """Run each named callable once to warm up, then `repeats` times interleaved (A B A B ...); return each one's
    median seconds."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def parse_args(doc: str, batch: int, tokens: int = 64, repeats: int = 5) -> argparse.Namespace:
    """The options every generation benchmark takes; the script's docstring is its help."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--tokens", type=int, default=tokens)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--quantization", default=None, help="default: nf4 on CUDA, bf16 on a CPU")
    return parser.parse_args()


def fixed_length(lm, tokens: int) -> dict:
    """generate() arguments for exactly `tokens` greedy tokens per row (end-of-sequence suppressed)."""
    return dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, repetition_penalty=1.1,
                pad_token_id=lm.tokenizer.pad_token_id)


def header(lm, args, what: str) -> str:
    return (f"model {lm.identity.describe()}, {lm.quantization}, batch {args.batch}, {args.tokens} tokens/row, "
            f"{what}")


def print_rates(med: dict, tokens: int, repeats: int) -> None:
    """One line per run: tokens per second at its median time."""
    for name, sec in med.items():
        print(f"{name:>10}: {tokens / sec:7.1f} tokens/s (median of {repeats})")
