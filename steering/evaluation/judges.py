"""The one home of the automatic judges: which judges there are (`KINDS`: "offline" and "llm"), how to make one
(`make_judge`, used by the CLI, the evaluation and the studio), and what their numbers mean (`Scales`: each score's
range, which way is better and what it measures) — a fact each judge carries as its `scales` attribute and that
`scales_for` (in `scales.py`) finds again from the name a judge wrote next to its stored scores.

Importing this module loads no model library: the offline judge imports its encoder and the fluency measure when it
first judges, so the rating statistics can turn stored scores toward the target without torch."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .judge import JudgeItem, JudgeSettings, Judgment, OpenAIJudge
from .scales import OFFLINE_NAME, OFFLINE_SCALES, Scales, scales_for

__all__ = ["KINDS", "OfflineJudge", "OpenAIJudge", "Scales", "available", "check_kind", "make_judge", "scales_for"]

KINDS = ("offline", "llm")
ALIASES = {"openai": "llm"}  # the CLI's earlier word for the LLM judge, still accepted
LLM_ENV = ("PERSONA_STUDIO_JUDGE_BASE_URL", "OPENAI_BASE_URL", "PERSONA_STUDIO_JUDGE_API_KEY", "OPENAI_API_KEY")


@dataclass
class OfflineJudge:
    """A judge that needs no API: the offline trait judge trained on our corpus, and a fluency measure from the
    unsteered model, labelled as such wherever they appear (never ground truth).

    Trait score: P(high pole) in [0, 1] from `steering.evaluation.traitjudge` (0.5 = undecided). Fluency: in (0, 1],
    1 / (perplexity of the answer given the plain question under the model with no steering or adapter x
    (1 + repeated-4-gram share)): the geometric-mean probability the unsteered model gives each token, lowered by
    repetition; higher is better (unsteered answers of the default model score about 0.2-0.3)."""

    lm: object  # a steering.engine.models.LoadedModel
    trait_judge: object | None = None
    name = OFFLINE_NAME
    scales = OFFLINE_SCALES

    def judge(self, items: Sequence[JudgeItem], progress: Callable | None = None) -> list[Judgment]:
        from .fluency import perplexity, repeated_ngram_share
        from .traitjudge import TraitJudge

        if self.trait_judge is None:
            self.trait_judge = TraitJudge.load()
        items = list(items)
        trait_scores: list[float] = [math.nan] * len(items)
        for trait in dict.fromkeys(i.trait for i in items):
            idx = [k for k, i in enumerate(items) if i.trait == trait]
            for k, s in zip(idx, self.trait_judge.p_high(trait, [items[k].answer for k in idx])):
                trait_scores[k] = float(s)
        ppl = perplexity(self.lm, [i.question for i in items], [i.answer for i in items])
        out = []
        for item, t, p in zip(items, trait_scores, ppl):
            rep = repeated_ngram_share(item.answer)
            fluency = 1.0 / (float(p) * (1 + rep)) if math.isfinite(p) else None
            out.append(Judgment(t, fluency, self.name, {"perplexity": float(p), "repeat4": rep}))
        return out


def check_kind(kind: str) -> str:
    """The judge kind in this module's vocabulary ("openai" is read as "llm"); ValueError for anything else."""
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown judge {kind!r}: choose one of {', '.join(KINDS)}")
    return kind


def llm_configured(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment names an LLM judge endpoint or key (else only the offline judge is offered)."""
    return any(env.get(v) for v in LLM_ENV)


def available(env: Mapping[str, str] = os.environ) -> list[str]:
    """The judge kinds this environment can run."""
    return ["offline", "llm"] if llm_configured(env) else ["offline"]


def make_judge(kind: str, lm=None, cache: Path | None = None, env: Mapping[str, str] = os.environ):
    """The judge of `kind`: "offline" (needs the loaded model `lm`, for fluency) or "llm" (an OpenAI-compatible
    endpoint from the environment; `cache` is its JSONL reply cache)."""
    kind = check_kind(kind)
    if kind == "offline":
        if lm is None:
            raise ValueError("the offline judge needs the loaded model (its fluency is the model's perplexity)")
        return OfflineJudge(lm)
    return OpenAIJudge(JudgeSettings.from_env(env, cache=cache))
