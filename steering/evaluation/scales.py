"""What an automatic judge's numbers mean: each score's range, which way is better and what it measures. A judge
carries its `Scales` as an attribute; `scales_for` finds them again from the name a judge stored next to its
scores. Pure Python, so the rating statistics use it without any model library."""

from __future__ import annotations

import math
from dataclasses import dataclass

@dataclass(frozen=True)
class Scale:
    """One score's range and direction. For a trait score `low`..`high` is the trait's level (the high pole at
    `high`); for fluency `higher_is_better` says which way is good."""

    low: float
    high: float
    meaning: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class Scales:
    trait: Scale
    fluency: Scale

    def toward_target(self, pole: str, trait: float, fluency: float) -> tuple[float, float]:
        """The scores turned the way human ratings point: trait = how well the answer portrays the TARGET pole
        (a low-pole target mirrors the trait level within its range), fluency = higher is better."""
        if pole == "low":
            trait = self.trait.low + self.trait.high - trait
        return trait, (fluency if self.fluency.higher_is_better else -fluency)

    def describe(self) -> dict[str, str]:
        return {"trait": self.trait.meaning, "fluency": self.fluency.meaning}


OFFLINE_SCALES = Scales(
    Scale(0.0, 1.0, "P(high pole), 0-1, offline judge (trained on our corpus); 0.5 = undecided"),
    Scale(0.0, 1.0, "0-1, 1 / (perplexity under the unsteered model x (1 + repeated 4-gram share)); higher is better"))
LLM_SCALES = Scales(Scale(1.0, 5.0, "1-5, how much of the trait (LLM judge)"),
                    Scale(1.0, 5.0, "1-5 (LLM judge), higher is better"))
# scores stored by the first studio's embedding proxy: a signed trait score and a perplexity (lower is better)
LEGACY_PROXY_SCALES = Scales(Scale(-1.0, 1.0, "signed similarity (the earlier embedding proxy)"),
                             Scale(0.0, math.inf, "perplexity (the earlier embedding proxy)", higher_is_better=False))


OFFLINE_NAME = "offline-judge"


def scales_for(judge_name: str) -> Scales:
    """What a stored judge name's scores mean: the offline judge's and the earlier proxy's by name, an LLM judge's
    ("openai:<model>") otherwise."""
    return {OFFLINE_NAME: OFFLINE_SCALES, "offline-proxy": LEGACY_PROXY_SCALES}.get(judge_name, LLM_SCALES)
