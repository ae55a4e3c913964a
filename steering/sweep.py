"""Choosing each pole's default NPTI strength: sweep strengths on the bank's development questions and keep the
strongest one whose text stays about as fluent as the unsteered model's.

Every (configuration, question) pair is one row; a batch mixes rows of different poles and strengths (per-row
interventions), and the unsteered base rows are the reference. Per configuration we report the offline trait
PROXY (see proxy.py), repeated 4-gram share, distinct-2 and the median perplexity of the answers under the
unsteered model.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Callable, Sequence

from .generation import Decoding, generate_chats
from .induce import Intervention, steer
from .fluency import distinct_n, perplexity, repeated_ngram_share
from .methods import load_pole
from .models import LoadedModel
from .prompts import plain_chat
from .proxy import TraitProxy
from .traits import POLES, check_trait

STRENGTHS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


@dataclass(frozen=True)
class Fluent:
    """How close to the unsteered model's fluency a strength must stay to be a default."""

    max_repeat_increase: float = 0.05  # repeated 4-gram share may rise by at most this
    max_distinct_drop: float = 0.05  # distinct-2 may fall by at most this
    max_perplexity_ratio: float = 1.5  # median perplexity may grow by at most this factor

    def ok(self, row: dict, base: dict) -> bool:
        return (row["repeat4"] <= base["repeat4"] + self.max_repeat_increase
                and row["distinct2"] >= base["distinct2"] - self.max_distinct_drop
                and row["perplexity"] <= base["perplexity"] * self.max_perplexity_ratio)


def sweep_trait(lm: LoadedModel, proxy: TraitProxy, trait: str, questions: Sequence[str], *,
                strengths: Sequence[float] = STRENGTHS, decoding: Decoding = Decoding(max_new_tokens=96),
                batch_size: int = 16, seed: int = 0, profiles: Path | None = None, top: int | None = None,
                progress: Callable | None = None) -> list[dict]:
    """One row per configuration (base, then each pole x strength) with the mean proxy score and fluency.
    With `top`, the fewer-neurons variant: only each pole's `top` neurons of largest diff."""
    trait = check_trait(trait)
    pairs = {pole: load_pole(lm, trait, pole, profiles, top) for pole in POLES}
    configs = [("base", 0.0)] + [(pole, float(s)) for pole in POLES for s in strengths]
    rows = list(product(configs, questions))
    texts: list[str] = []
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    for batch in (progress(batches, desc=f"sweep {trait}") if progress else batches):
        ivs = [None if pole == "base" else Intervention(pairs[pole][0], s, pairs[pole][1]) for (pole, s), _ in batch]
        with steer(lm, ivs, seeds=[seed] * len(batch)):
            answers = generate_chats(lm, [plain_chat(q) for _, q in batch], decoding, seed)
        texts.extend(a.text for a in answers)
    scores = proxy.score(trait, texts)
    ppl = perplexity(lm, [q for _, q in rows], texts)
    table = []
    for config in configs:
        idx = [i for i, (cfg, _) in enumerate(rows) if cfg == config]
        table.append({
            "pole": config[0], "strength": config[1], "n": len(idx),
            "proxy": round(statistics.fmean(float(scores[i]) for i in idx), 4),
            "repeat4": round(statistics.fmean(repeated_ngram_share(texts[i]) for i in idx), 4),
            "distinct2": round(statistics.fmean(distinct_n(texts[i]) for i in idx), 4),
            "perplexity": round(statistics.median(ppl[i] for i in idx if ppl[i] == ppl[i]), 3),
            "example": texts[idx[0]][:300],
        })
    return table


def choose_defaults(table: list[dict], rule: Fluent = Fluent()) -> dict[str, float | None]:
    """Per pole, the strongest strength such that it and every weaker strength stay close to base's fluency
    (None if the weakest does not). Requiring the whole prefix keeps one lucky sample at a high strength, on a
    dozen questions, from becoming the default."""
    base = next(r for r in table if r["pole"] == "base")
    chosen: dict[str, float | None] = {}
    for pole in POLES:
        chosen[pole] = None
        for row in sorted((r for r in table if r["pole"] == pole), key=lambda r: r["strength"]):
            if not rule.ok(row, base):
                break
            chosen[pole] = row["strength"]
    return chosen


def rule_dict(rule: Fluent = Fluent()) -> dict:
    return asdict(rule)
