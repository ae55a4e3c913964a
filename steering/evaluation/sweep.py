"""Choosing each pole's shipped NPTI and vector configuration, by rule, on the bank's development questions.

Every configuration of a grid (NPTI: source x strength; vector: layer set x strength) answers every development
question of the trait at both poles, with the studio's decoding (sampling, 96 tokens), next to the base model;
the offline judge (trained on our corpus) scores every answer. Per pole and configuration:
- `win`: the share of questions whose answer leans further toward the pole than the base model's answer to the
  same question (P(high) above base's for the high pole, below for the low pole; ties count half);
- `toward`: the mean P(pole) (P(high) for high, 1 - P(high) for low);
- fluency next to base's: repeated-4-gram share, distinct-2, median perplexity under the unsteered model.
A pole's default is, per method, the configuration with the best `win` among those within the fluency rule
(`Fluent`: repeated-4-gram share <= base + 0.05, distinct-2 >= base - 0.05, perplexity <= 1.5x base); ties go to
the higher `toward`, then to the weaker strength. NPTI's source is chosen by the same rule (it is part of the
configuration). The answers are evaluate's (one folder, keyed, resumable), so a rerun costs nothing."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd


# Small on purpose: every configuration costs two poles x every development question of five traits on a CPU.
NPTI_STRENGTHS: dict[str, tuple[float, ...]] = {"generated": (1.0, 1.5), "corpus": (0.5, 1.0, 1.5, 2.0)}
NPTI_NOCLAMP_STRENGTHS: tuple[float, ...] = (1.0, 1.5, 2.0)  # corpus source, opposite pole left alone
VECTOR_STRENGTHS: tuple[float, ...] = (0.05, 0.08)


@dataclass(frozen=True)
class Fluent:
    """How close to the unsteered model's fluency a configuration must stay to be a default."""

    max_repeat_increase: float = 0.05  # repeated 4-gram share may rise by at most this
    max_distinct_drop: float = 0.05  # distinct-2 may fall by at most this
    max_perplexity_ratio: float = 1.5  # median perplexity may grow by at most this factor

    def ok(self, row: dict, base: dict) -> bool:
        return (row["repeat4"] <= base["repeat4"] + self.max_repeat_increase
                and row["distinct2"] >= base["distinct2"] - self.max_distinct_drop
                and row["perplexity"] <= base["perplexity"] * self.max_perplexity_ratio)


def vector_layer_sets(n_layers: int) -> list[tuple[int, ...]]:
    """Two sets of three consecutive layers: around one third and around the middle of the model."""
    out = []
    for centre in (n_layers // 3, n_layers // 2):
        start = min(max(0, centre - 1), n_layers - 3)
        out.append(tuple(range(start, start + 3)))
    return list(dict.fromkeys(out))


def grid(n_layers: int, methods: tuple[str, ...] = ("npti", "vector"),
         npti_sources: tuple[str, ...] = ("generated", "corpus")) -> list[str]:
    """The method specs a sweep tries (see evaluate.Variant), base first."""
    specs = ["base"]
    if "npti" in methods:
        specs += [f"npti@{src}:{s:g}" for src in npti_sources for s in NPTI_STRENGTHS[src]]
        if "corpus" in npti_sources:
            specs += [f"npti@corpus:{s:g}/noclamp" for s in NPTI_NOCLAMP_STRENGTHS]
    if "vector" in methods:
        specs += [f"vector:{s:g}/{','.join(map(str, layers))}" for layers in vector_layer_sets(n_layers)
                  for s in VECTOR_STRENGTHS]
    return specs


def pole_rows(frame: pd.DataFrame, rule: Fluent = Fluent()) -> list[dict]:
    """One row per (trait, pole, variant) of a joined evaluate frame (see evaluate.joined), base included."""
    out = []
    for (trait, pole), g in frame.groupby(["trait", "pole"], sort=False):
        base = g[g["variant"] == "base"]
        base_by_q = base.groupby("question")["trait_score"].mean()
        stats = {}
        for variant, v in g.groupby("variant", sort=False):
            p = v["trait_score"]
            diff = (v.groupby("question")["trait_score"].mean() - base_by_q).dropna()
            if pole == "low":
                diff = -diff
            stats[variant] = {
                "trait": trait, "pole": pole, "variant": variant, "method": v["method"].iloc[0], "n": len(v),
                "toward": round(float((p if pole == "high" else 1 - p).mean()), 4),
                "win": round(float(((diff > 0) + 0.5 * (diff == 0)).mean()), 4) if len(diff) else math.nan,
                "repeat4": round(float(v["repeat4"].mean()), 4), "distinct2": round(float(v["distinct2"].mean()), 4),
                "perplexity": round(float(v["perplexity"].median()), 3)}
        if "base" not in stats:
            raise ValueError(f"the sweep of {trait} {pole} has no base answers to compare with")
        for row in stats.values():
            row["fluent"] = bool(rule.ok(row, stats["base"]))
            out.append(row)
    return out


def _strength(variant: str) -> float:
    from .evaluate import Variant

    return Variant.parse(variant).strength or 0.0


def _source(variant: str) -> str | None:
    from .evaluate import Variant

    return Variant.parse(variant).source


def choose(rows: list[dict], method: str, source: str | None = None) -> dict[tuple[str, str], str | None]:
    """Per (trait, pole), the variant of `method` (of `source` only, if given) with the best win rate among the
    fluent ones (ties: higher `toward`, then the weaker strength); None where none is fluent."""
    chosen: dict[tuple[str, str], str | None] = {}
    for r in rows:
        chosen.setdefault((r["trait"], r["pole"]), None)
    for key in chosen:
        fluent = [r for r in rows if (r["trait"], r["pole"]) == key and r["method"] == method and r["fluent"]
                  and not math.isnan(r["win"]) and (source is None or _source(r["variant"]) == source)]
        if fluent:
            best = max(fluent, key=lambda r: (r["win"], r["toward"], -_strength(r["variant"])))
            chosen[key] = best["variant"]
    return chosen


def record_choices(folder: Path, rows: list[dict], settings: dict, rule: Fluent = Fluent()) -> dict:
    """Write the sweep and the chosen defaults: per NPTI source, the best fluent strength of that source (in that
    source's profile, so `npti@corpus` means the corpus profile at its best), and per pole the winning source
    (manifest `npti_default_source`); the vector's per-pole strength and layers (in its card). A pole with no
    fluent configuration keeps what it had. Returns {method: {"<trait> <pole>": variant or None}}."""
    from ..artefacts import NPTI_DEFAULT_SOURCE, SELECTION_SWEEP, ModelArtefacts
    from ..methods.vector import TraitVector
    from ..npti.profile import NeuronProfile
    from .evaluate import Variant

    artefacts = ModelArtefacts(Path(folder))
    manifest = artefacts.read_manifest()
    summary: dict = {}
    sources = {_source(r["variant"]) for r in rows if r["method"] == "npti"}
    for source in sorted(s for s in sources if s):
        for (trait, pole), variant in choose(rows, "npti", source).items():
            if variant is not None:
                path = artefacts.profile(trait, pole, source)
                profile = NeuronProfile.load(path)  # its neuron count (default_top_neurons) is what the sweep ran
                chosen = Variant.parse(variant)
                profile.meta["default_strength"] = chosen.strength
                if chosen.clamp is False:
                    profile.meta["default_clamp"] = False
                else:
                    profile.meta.pop("default_clamp", None)
                profile.save(path)
                entry = manifest["traits"].setdefault(trait, {})
                entry = entry.setdefault("corpus", {}) if source == "corpus" else entry
                entry.setdefault(pole, {}).update(
                    {k: profile.meta[k] for k in ("default_strength", "default_clamp") if k in profile.meta})
                if chosen.clamp is not False:
                    entry[pole].pop("default_clamp", None)
    for method in ("npti", "vector"):
        picks = choose(rows, method)
        summary[method] = {f"{t} {p}": v for (t, p), v in picks.items()}
        for (trait, pole), variant in picks.items():
            if variant is None:
                continue
            v = Variant.parse(variant)
            if method == "npti":
                manifest.setdefault(NPTI_DEFAULT_SOURCE, {}).setdefault(trait, {})[pole] = v.source
            else:
                vec = TraitVector.load(folder, trait)
                vec.meta.setdefault("defaults", {})[pole] = {"strength": v.strength, "layers": list(v.layers)}
                vec.save(folder)
    for trait in dict.fromkeys(r["trait"] for r in rows):
        manifest.setdefault(SELECTION_SWEEP, {})[trait] = {
            "settings": settings, "rule": asdict(rule), "rows": [r for r in rows if r["trait"] == trait],
            "chosen": {m: {k: v for k, v in s.items() if k.startswith(trait + " ")} for m, s in summary.items()}}
    artefacts.write_manifest(manifest)
    return summary

