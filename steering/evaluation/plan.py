"""What an evaluation runs: method specs (`Variant`), the plan over traits, poles and strengths (`Plan`), and the
rows it expands to, each with the stable key that resumes a run and joins its answers to their judgments."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..engine.generation import Decoding
from ..engine.models import LoadedModel
from ..methods.dispatch import METHODS, Request
from ..traits import POLES, check_trait

__all__ = ["Plan", "Variant", "plan_rows", "resolve", "strength_label"]


@dataclass(frozen=True)
class Variant:
    """One way of answering, written `method[@source][:strength][/layers]`: `npti@corpus:1.5`, `vector:0.05/14,15,16`,
    `sft@persona`, `base`; for NPTI `/noclamp` leaves the opposite pole's neurons alone (`npti@corpus:1/noclamp`).
    What a spec leaves out is the shipped default, filled in by `resolve` before anything is generated, so `npti` and
    the `npti@corpus:1.5` it resolves to are the same answers (one key)."""

    method: str
    source: str | None = None
    strength: float | None = None
    layers: tuple[int, ...] | None = None
    clamp: bool | None = None

    def __post_init__(self) -> None:
        Request(self.method, "Openness", "high", self.strength, source=self.source, layers=self.layers,
                clamp=self.clamp)  # checks
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted(int(x) for x in self.layers)))

    @classmethod
    def parse(cls, spec: str) -> "Variant":
        text = str(spec).strip()
        rest, _, tail = text.partition("/")
        rest, _, strength = rest.partition(":")
        method, _, source = rest.partition("@")
        try:
            clamp = False if tail == "noclamp" else None
            layers = tuple(int(x) for x in tail.replace("-", ",").split(",")) if tail and clamp is None else None
            return cls(method, source or None, float(strength) if strength else None, layers, clamp)
        except ValueError as exc:
            raise ValueError(f"method spec {spec!r}: {exc} (write method[@source][:strength][/layers], e.g. "
                             "npti@corpus:1.5, npti@corpus:1/noclamp or vector:0.05/14,15,16)") from exc

    def label(self) -> str:
        out = self.method + (f"@{self.source}" if self.source else "")
        out += f":{self.strength:g}" if self.strength is not None else ""
        out += "/noclamp" if self.clamp is False else ""
        return out + ("/" + ",".join(str(x) for x in self.layers) if self.layers else "")

    def request(self, trait: str, pole: str, seed: int) -> Request:
        return Request(self.method, trait, pole, self.strength, seed, source=self.source, layers=self.layers,
                       clamp=self.clamp)


def resolve(lm: LoadedModel, variant: Variant, trait: str, pole: str, profiles: Path | None = None) -> Variant:
    """The variant with every shipped default filled in for this trait pole (what would actually run)."""
    from ..methods.dispatch import DEFAULT_VECTOR_STRENGTH, load_pole, load_vector, npti_source

    if variant.method == "sft":
        return replace(variant, source=variant.source or "corpus")
    if variant.method == "npti":
        source = variant.source or npti_source(lm, trait, pole, profiles)
        strength, clamp = variant.strength, variant.clamp
        if strength is None or clamp is None:
            target, _ = load_pole(lm, trait, pole, profiles, source=source)
            strength = float(target.meta.get("default_strength", 1.0)) if strength is None else strength
            clamp = bool(target.meta.get("default_clamp", True)) if clamp is None else clamp
        return replace(variant, source=source, strength=strength, clamp=None if clamp else False)
    if variant.method == "vector":
        vec = load_vector(lm, trait, profiles)
        shipped = vec.meta.get("defaults", {}).get(pole, {})
        strength = variant.strength if variant.strength is not None else float(
            shipped.get("strength", DEFAULT_VECTOR_STRENGTH))
        return replace(variant, strength=strength, layers=variant.layers or tuple(shipped.get("layers") or vec.layers))
    return variant


@dataclass(frozen=True)
class Plan:
    """What to evaluate: method specs (see `Variant`), traits, and for plain `npti` specs the strengths to try
    (None = each pole's shipped default); other specs run once per pole. `sample` decodes as the studio does
    (temperature 0.7, top-p 0.9), each row seeded by its question."""

    methods: tuple[str, ...] = METHODS
    traits: tuple[str, ...] = ()
    strengths: tuple[float | None, ...] = (None,)
    seed: int = 0
    max_new_tokens: int = 128
    sample: bool = False

    def __post_init__(self) -> None:
        for spec in self.methods:
            if Variant.parse(spec).method not in METHODS:  # pragma: no cover - Request refuses it first
                raise ValueError(f"unknown method {spec!r}")
        object.__setattr__(self, "traits", tuple(check_trait(t) for t in self.traits))
        for s in self.strengths:
            if s is not None:
                Request("npti", "Openness", "high", s)  # range check with the engine's message

    def variants(self) -> list[Variant]:
        out = []
        for spec in self.methods:
            v = Variant.parse(spec)
            if v.method == "npti" and v.strength is None and spec == "npti":
                out.extend(replace(v, strength=s) for s in self.strengths)
            else:
                out.append(v)
        return list(dict.fromkeys(out))

    def decoding(self) -> Decoding:
        return Decoding(max_new_tokens=self.max_new_tokens, do_sample=self.sample)


def _key(*parts) -> str:
    return hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]


def strength_label(strength: float | None) -> str:
    return "default" if strength is None else f"{strength:g}"


def plan_rows(plan: Plan, questions: dict[str, list[str]], model: str = "",
              resolver: Callable | None = None) -> list[dict]:
    """One row per answer to produce, with a stable key (the resume and join key) from what actually runs (the
    resolved variant), the model, the token limit and the decoding, so a rerun with other settings into the same
    folder never reuses old answers, and two specs that resolve alike share their answers. `resolver(variant,
    trait, pole)` fills in shipped defaults (none: the variants as written)."""
    rows: dict[tuple, dict] = {}
    for trait in plan.traits:
        for pole in POLES:
            for variant in plan.variants():
                done = resolver(variant, trait, pole) if resolver else variant
                label = strength_label(variant.strength) if variant.method == "npti" else "-"
                for qi, question in enumerate(questions[trait]):
                    key = _key(model, plan.max_new_tokens, done.label(), trait, pole, plan.seed, question,
                               "sample" if plan.sample else "greedy")
                    rows.setdefault((variant.label(), trait, pole, question), {
                        "key": key, "method": variant.method, "variant": variant.label(), "resolved": done.label(),
                        "strength": label, "trait": trait, "pole": pole, "question": question, "seed": plan.seed + qi})
    return list(rows.values())
