"""Identification: which neurons fire more under a trait's high pole than under its low pole, and vice versa.

For each question, one description of the pole is drawn at random and the persona prompt is answered greedily;
activity over the generated tokens is recorded per pole (see record.py). Then, per pole P with other pole Q,
`diff = p_P - p_Q`, sorted descending: the top `top_k` neurons are kept always, then every further neuron while
`diff >= min_diff`.
"""

from __future__ import annotations

import json
import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..fileio import atomic_writer
from ..engine.generation import Decoding, eos_ids, generate_chats
from ..engine.models import LoadedModel
from .profile import NeuronProfile
from ..methods.prompts import persona_chat
from .record import ActivationStats, Bins, record_activations
from ..traits import POLES, check_trait, opposite


@dataclass(frozen=True)
class Selection:
    """The paper's selection rule; both numbers are parameters."""

    top_k: int = 2000
    min_diff: float = 0.1


@dataclass
class Identification:
    high: NeuronProfile
    low: NeuronProfile
    stats: dict[str, ActivationStats]
    answers: list[dict]


def select(stats: ActivationStats, other: ActivationStats, selection: Selection = Selection()) -> dict:
    """The neurons of `stats`'s pole by the paper's rule, as profile columns (layer, index, diff, prob, p95)."""
    prob, prob_other = stats.firing_probability(), other.firing_probability()
    diff = (prob - prob_other).reshape(-1)
    order = torch.argsort(diff, descending=True, stable=True)
    ranked = diff[order]
    keep = order[(torch.arange(len(order)) < selection.top_k) | (ranked >= selection.min_diff)]
    p95 = stats.quantile(0.95).reshape(-1)
    width = stats.width
    return {"layer": (keep // width).numpy(), "index": (keep % width).numpy(), "diff": diff[keep].numpy(),
            "prob": prob.reshape(-1)[keep].numpy(), "p95": p95[keep].numpy()}


def identify(lm: LoadedModel, trait: str, questions: Sequence[str], descriptions: dict[str, Sequence[str]], *,
             decoding: Decoding = Decoding(), batch_size: int = 8, seed: int = 0, bins: Bins = Bins(),
             selection: Selection = Selection(), answers_path: str | Path | None = None,
             progress: Callable | None = None) -> Identification:
    """Run identification for one trait and return both poles' profiles, the raw stats and every
    persona-prompted answer (also written to `answers_path` as JSONL when given: they are fine-tuning data). The
    answers file is replaced only when identification finishes: a run that fails or is interrupted leaves an
    earlier file there as it was.

    `progress` wraps an iterable (e.g. tqdm) to show progress."""
    trait = check_trait(trait)
    if not questions:
        raise ValueError("identification needs at least one question")
    for pole in POLES:
        if not descriptions.get(pole):
            raise ValueError(f"identification needs at least one {pole}-pole description of {trait}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rng = random.Random(seed)
    eos = eos_ids(lm)
    stats: dict[str, ActivationStats] = {}
    answers: list[dict] = []
    with atomic_writer(answers_path) if answers_path else nullcontext() as out:
        for pole in POLES:
            batches = [list(range(i, min(i + batch_size, len(questions)))) for i in range(0, len(questions), batch_size)]
            chosen = [rng.randrange(len(descriptions[pole])) for _ in questions]
            it = progress(batches, desc=f"{trait} {pole}") if progress else batches
            with record_activations(lm, eos, bins) as pole_stats:
                for batch in it:
                    chats = [persona_chat(descriptions[pole][chosen[i]], questions[i]) for i in batch]
                    for i, answer in zip(batch, generate_chats(lm, chats, decoding)):
                        row = {"trait": trait, "pole": pole, "question": questions[i], "description": chosen[i],
                               "answer": answer.text, "n_tokens": answer.n_tokens, "finished": answer.finished}
                        answers.append(row)
                        if out:
                            out.write(json.dumps(row) + "\n")
            stats[pole] = pole_stats
    meta = {"source": "generated", "selection": asdict(selection), "bins": asdict(bins), "decoding": asdict(decoding),
            "seed": seed, "questions": len(questions)}
    return _identification(lm, trait, stats, selection, meta, answers)


def _identification(lm: LoadedModel, trait: str, stats: dict[str, ActivationStats], selection: Selection,
                    meta: dict, answers: list[dict]) -> Identification:
    profiles = {}
    for pole in POLES:
        columns = select(stats[pole], stats[opposite(pole)], selection)
        profiles[pole] = NeuronProfile(trait, pole, lm.identity, **columns, meta={
            **meta, "tokens": stats[pole].n_tokens, "tokens_other_pole": stats[opposite(pole)].n_tokens,
            "p95_beyond_bins": int(stats[pole].clipped().sum())})
    return Identification(profiles["high"], profiles["low"], stats, answers)


def identify_corpus(lm: LoadedModel, trait: str, pairs: Sequence[tuple[str, str, str]], *, batch_size: int = 8,
                    bins: Bins = Bins(), selection: Selection = Selection(),
                    progress: Callable | None = None) -> Identification:
    """Identification from the corpus: record neuron firing while the model READS each pole's answers (teacher
    forcing: the question as the user turn, no system prompt, the answer as the assistant turn; the answer's tokens
    only), then the same selection rule. `pairs` are (question, high answer, low answer)."""
    from .forced import record_forced

    trait = check_trait(trait)
    for pole, k in (("high", 1), ("low", 2)):
        if not [p for p in pairs if p[k].strip()]:
            raise ValueError(f"the corpus has no {pole}-pole answers for {trait}: identification needs both poles")
    stats = {pole: record_forced(lm, [(p[0], p[k]) for p in pairs if p[k].strip()], batch_size=batch_size,
                                 bins=bins, progress=progress, desc=f"{trait} {pole} (reading)")
             for pole, k in (("high", 1), ("low", 2))}
    meta = {"source": "corpus", "selection": asdict(selection), "bins": asdict(bins), "pairs": len(pairs)}
    return _identification(lm, trait, stats, selection, meta, [])
