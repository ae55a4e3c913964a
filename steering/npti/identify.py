"""Identification: which neurons fire more under a trait's high pole than under its low pole, and vice versa.

For each question, one description of the pole is drawn at random and the persona prompt is answered greedily;
activity over the generated tokens is recorded per pole (see record.py). Then, per pole P with other pole Q,
`diff = p_P - p_Q`, sorted descending: the top `top_k` neurons are kept always, then every further neuron while
`diff >= min_diff`.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..fileio import atomic_writer
from ..engine.generation import Decoding, eos_ids, generate_chats
from ..engine.models import LoadedModel
from ..engine.world import World
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


def select(stats: ActivationStats, other: ActivationStats, selection: Selection = Selection(),
           p95: torch.Tensor | None = None) -> dict:
    """The neurons of `stats`'s pole by the paper's rule, as profile columns (layer, index, diff, prob, p95); pass
    `p95` when `stats.quantile(0.95)` is already at hand."""
    prob, prob_other = stats.firing_probability(), other.firing_probability()
    diff = (prob - prob_other).reshape(-1)
    order = torch.argsort(diff, descending=True, stable=True)
    ranked = diff[order]
    keep = order[(torch.arange(len(order)) < selection.top_k) | (ranked >= selection.min_diff)]
    p95 = (stats.quantile(0.95) if p95 is None else p95).reshape(-1)
    width = stats.width
    return {"layer": (keep // width).numpy(), "index": (keep % width).numpy(), "diff": diff[keep].numpy(),
            "prob": prob.reshape(-1)[keep].numpy(), "p95": p95[keep].numpy()}


def identify(lm: LoadedModel, trait: str, questions: Sequence[str], descriptions: dict[str, Sequence[str]], *,
             decoding: Decoding = Decoding(), batch_size: int = 8, seed: int = 0, bins: Bins = Bins(),
             selection: Selection = Selection(), answers_path: str | Path | None = None,
             progress: Callable | None = None, world: World = World()) -> Identification:
    """Run identification for one trait and return both poles' profiles, the raw stats and every
    persona-prompted answer (also written to `answers_path` as JSONL when given: they are fine-tuning data). The
    answers file is replaced only when identification finishes: a run that fails or is interrupted leaves an
    earlier file there as it was.

    `progress` wraps an iterable (e.g. tqdm) to show progress (on rank 0 only). Under a launcher (`world`), each
    rank answers its share of the batches, the counts are summed over the ranks and every rank returns the same
    result, that of one process; only rank 0 writes the answers file."""
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
    batches = [list(range(i, min(i + batch_size, len(questions)))) for i in range(0, len(questions), batch_size)]
    for pole in POLES:
        chosen = [rng.randrange(len(descriptions[pole])) for _ in questions]  # on every rank, for every question
        mine = world.share(batches)
        made: list[list[dict]] = []
        rows: list[list[int]] = []  # the row_tokens each batch added
        pole_stats = ActivationStats(lm.sites.n_layers, lm.sites.width, bins)
        for batch in progress(mine, desc=f"{trait} {pole}") if progress and world.writer else mine:
            chats = [persona_chat(descriptions[pole][chosen[i]], questions[i]) for i in batch]
            before = len(pole_stats.row_tokens)
            with record_activations(lm, eos, bins, stats=pole_stats):  # one block per batch: its rows are known
                answers_now = generate_chats(lm, chats, decoding)
            rows.append(pole_stats.row_tokens[before:])
            made.append([{"trait": trait, "pole": pole, "question": questions[i], "description": chosen[i],
                          "answer": answer.text, "n_tokens": answer.n_tokens, "finished": answer.finished}
                         for i, answer in zip(batch, answers_now)])
        stats[pole] = world.sum_stats(pole_stats, rows)
        answers.extend(row for chunk in world.interleave(made) for row in chunk)
    if answers_path and world.writer:
        with atomic_writer(answers_path) as out:
            out.writelines(json.dumps(row) + "\n" for row in answers)
    meta = {"source": "generated", "selection": asdict(selection), "bins": asdict(bins), "decoding": asdict(decoding),
            "seed": seed, "questions": len(questions)}
    return _identification(lm, trait, stats, selection, meta, answers)


def _identification(lm: LoadedModel, trait: str, stats: dict[str, ActivationStats], selection: Selection,
                    meta: dict, answers: list[dict]) -> Identification:
    profiles = {}
    for pole in POLES:
        p95 = stats[pole].quantile(0.95)  # once: it reads the whole histogram
        columns = select(stats[pole], stats[opposite(pole)], selection, p95)
        profiles[pole] = NeuronProfile(trait, pole, lm.identity, **columns, meta={
            **meta, "tokens": stats[pole].n_tokens, "tokens_other_pole": stats[opposite(pole)].n_tokens,
            "p95_beyond_bins": int((p95 >= stats[pole].bins.high).sum())})
    return Identification(profiles["high"], profiles["low"], stats, answers)


def identify_corpus(lm: LoadedModel, trait: str, pairs: Sequence[tuple[str, str, str]], *, batch_size: int = 8,
                    bins: Bins = Bins(), selection: Selection = Selection(),
                    progress: Callable | None = None, world: World = World()) -> Identification:
    """Identification from the corpus: record neuron firing while the model READS each pole's answers (teacher
    forcing: the question as the user turn, no system prompt, the answer as the assistant turn; the answer's tokens
    only), then the same selection rule. `pairs` are (question, high answer, low answer). Under a launcher
    (`world`), each rank reads its share of the batches and the counts are summed over the ranks."""
    from .forced import record_forced

    trait = check_trait(trait)
    for pole, k in (("high", 1), ("low", 2)):
        if not [p for p in pairs if p[k].strip()]:
            raise ValueError(f"the corpus has no {pole}-pole answers for {trait}: identification needs both poles")
    stats = {pole: record_forced(lm, [(p[0], p[k]) for p in pairs if p[k].strip()], batch_size=batch_size,
                                 bins=bins, progress=progress, desc=f"{trait} {pole} (reading)", world=world)
             for pole, k in (("high", 1), ("low", 2))}
    meta = {"source": "corpus", "selection": asdict(selection), "bins": asdict(bins), "pairs": len(pairs)}
    return _identification(lm, trait, stats, selection, meta, [])
