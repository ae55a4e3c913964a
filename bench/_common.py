"""Shared set-up for the benchmarks: the default model, a batch of chat prompts, synthetic profiles."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steering import NeuronProfile  # noqa: E402
from steering.generation import encode_chats  # noqa: E402
from steering.prompts import plain_chat  # noqa: E402

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
    """Run each named callable `repeats` times, interleaved (A B A B ...), and return each one's median seconds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
