"""The evaluation's tables and plot, from the joined frame of answers and judgments: the paper's method x trait
layout (`paper_table`), separation and paired win rate per variant (`pairs_table`), trait score against NPTI
strength (`plot_strength`), and `write_outputs`, which writes them all."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from ..fileio import write_bytes_atomic, write_text_atomic
from ..methods.dispatch import METHODS
from ..traits import POLES
from .fluency import distinct_n, repeated_ngram_share

__all__ = ["JOINED", "joined", "pairs_table", "paper_table", "plot_strength", "write_outputs"]


JOINED = ["key", "method", "variant", "resolved", "strength", "trait", "pole", "question", "trait_score",
          "fluency_score", "repeat4", "distinct2", "perplexity"]


def joined(answers: list[dict], judgments: list[dict]) -> pd.DataFrame:
    """One row per judged answer: what answered (method, the variant as asked, the resolved variant, the npti
    strength label), trait, pole, question, the judge's two scores, and the answer's repeated-4-gram share,
    distinct-2 and perplexity (where the judge measured it)."""
    by_key = {j["key"]: j for j in judgments}
    rows = []
    for a in answers:
        if a["key"] not in by_key:
            continue
        j = by_key[a["key"]]
        detail = j.get("detail") or {}
        rows.append({"key": a["key"], "method": a["method"], "variant": a.get("variant", a["method"]),
                     "resolved": a.get("resolved", a.get("variant", a["method"])), "strength": a["strength"],
                     "trait": a["trait"], "pole": a["pole"], "question": a["question"],
                     "trait_score": j["trait_score"], "fluency_score": j["fluency_score"],
                     "repeat4": repeated_ngram_share(a["answer"]), "distinct2": distinct_n(a["answer"]),
                     "perplexity": detail.get("perplexity", math.nan) if isinstance(detail, dict) else math.nan})
    frame = pd.DataFrame(rows, columns=JOINED)
    for c in ("trait_score", "fluency_score", "perplexity"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def _paired_win(g: pd.DataFrame, better: str = "high", against: pd.DataFrame | None = None) -> float:
    """Share of questions whose `better`-pole answer scores above the other's (ties count half); with `against`,
    the rows of `g` against those of `against` on the same question and pole instead."""
    if against is None:
        wide = g.pivot_table(index="question", columns="pole", values="trait_score", aggfunc="mean")
        if not set(POLES) <= set(wide.columns):
            return math.nan
        diff = (wide["high"] - wide["low"]).dropna()
    else:
        mine = g.groupby("question")["trait_score"].mean()
        theirs = against.groupby("question")["trait_score"].mean()
        diff = (mine - theirs).dropna()
        if better == "low":
            diff = -diff
    return float(((diff > 0) + 0.5 * (diff == 0)).mean()) if len(diff) else math.nan


def pairs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per variant and trait: the judge's mean trait score of the high-pole and the low-pole answers, their
    separation, the paired win rate (share of questions whose high-pole answer scores above its low-pole answer;
    ties half), and over both poles the mean repeated-4-gram share, distinct-2 and median perplexity."""
    out = []
    for (variant, trait), g in frame.groupby(["variant", "trait"], sort=False):
        high = g.loc[g["pole"] == "high", "trait_score"].mean()
        low = g.loc[g["pole"] == "low", "trait_score"].mean()
        out.append({"method": g["method"].iloc[0], "variant": variant, "trait": trait, "high": high, "low": low,
                    "separation": high - low, "win_rate": _paired_win(g), "repeat4": g["repeat4"].mean(),
                    "distinct2": g["distinct2"].mean(), "perplexity": g["perplexity"].median(), "n": len(g)})
    table = pd.DataFrame(out, columns=["method", "variant", "trait", "high", "low", "separation", "win_rate",
                                       "repeat4", "distinct2", "perplexity", "n"])
    order = {m: i for i, m in enumerate(METHODS)}
    traits = {t: i for i, t in enumerate(dict.fromkeys(frame["trait"]))}
    if len(table):
        table = table.assign(_t=table["trait"].map(traits), _o=table["method"].map(order)).sort_values(
            ["_t", "_o", "variant"], kind="stable").drop(columns=["_t", "_o"]).reset_index(drop=True)
    return table


def paper_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: one row per method (npti: per strength), per trait the mean trait score of the high-pole
    answers, of the low-pole answers, and the mean fluency over both; missing judgments are left out of the means
    (and counted in `missing`)."""
    order = {m: i for i, m in enumerate(METHODS)}
    out = []
    for (method, variant, strength), g in frame.groupby(["method", "variant", "strength"], sort=False):
        row: dict = {"method": method, "variant": variant, "strength": strength}
        for trait, t in g.groupby("trait", sort=False):
            for pole in POLES:
                row[f"{trait} {pole}"] = t.loc[t["pole"] == pole, "trait_score"].mean()
            row[f"{trait} fluency"] = t["fluency_score"].mean()
        row["n"] = len(g)
        row["missing"] = int(g["trait_score"].isna().sum() + g["fluency_score"].isna().sum())
        out.append(row)
    table = pd.DataFrame(out)
    if len(table):
        table["_o"] = table["method"].map(order)
        table["_s"] = table["strength"].map(lambda s: -1.0 if s in ("-", "default") else float(s))
        table = table.sort_values(["_o", "variant", "_s"]).drop(columns=["_o", "_s"]).reset_index(drop=True)
    return table


def _markdown(table: pd.DataFrame, judge: str, scales: dict) -> str:
    cols = list(table.columns)
    lines = [f"Judge: {judge}. Trait score: {scales['trait']}. Fluency: {scales['fluency']}.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append("" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_strength(frame: pd.DataFrame, path: Path, judge: str, scales: dict) -> None:
    """Trait score against NPTI strength, one line per trait pole; the other methods as dotted reference levels
    (base) where present. No pyplot: a bare Figure, so nothing global changes."""
    from matplotlib.figure import Figure

    traits = list(dict.fromkeys(frame["trait"]))
    fig = Figure(figsize=(4.2 * max(1, len(traits)), 3.6), layout="constrained")
    axes = fig.subplots(1, max(1, len(traits)), squeeze=False)[0]
    npti = frame[(frame["method"] == "npti") & (frame["strength"] != "default")]
    for ax, trait in zip(axes, traits):
        for pole, colour in (("high", "tab:red"), ("low", "tab:blue")):
            sub = npti[(npti["trait"] == trait) & (npti["pole"] == pole)]
            if len(sub):
                means = sub.groupby(sub["strength"].astype(float))["trait_score"].mean().sort_index()
                ax.plot(means.index, means.values, marker="o", color=colour, label=f"NPTI {pole}")
            base = frame[(frame["method"] == "base") & (frame["trait"] == trait) & (frame["pole"] == pole)]
            if len(base) and pole == "high":
                ax.axhline(base["trait_score"].mean(), color="grey", linestyle=":", label="base")
        ax.set_title(trait)
        ax.set_xlabel("NPTI strength")
        ax.set_ylabel(f"trait score ({scales['trait']})", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"Trait score vs strength — judge: {judge}", fontsize=9)
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    write_bytes_atomic(path, image.getvalue())


def write_outputs(frame: pd.DataFrame, out: Path, judge: str, scales: dict) -> pd.DataFrame:
    """table.csv/.md (the paper's layout), pairs.csv/.md (separation, paired win rate and fluency per variant and
    trait) and strength.png, from the joined frame."""
    table = paper_table(frame)
    write_text_atomic(out / "table.csv", table.to_csv(index=False))
    write_text_atomic(out / "table.md", _markdown(table, judge, scales))
    pairs = pairs_table(frame)
    write_text_atomic(out / "pairs.csv", pairs.to_csv(index=False))
    write_text_atomic(out / "pairs.md", _markdown(pairs, judge, scales))
    plot_strength(frame, out / "strength.png", judge, scales)
    return table
