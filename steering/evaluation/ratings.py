"""Turning blind human ratings into per-method tables and a leaderboard.

Pure analysis of pandas frames the storage layer hands over; it imports neither gradio, sqlalchemy nor torch, so
the studio, the CLI and notebooks can all call it and the tests need no database.

Two views of the same ratings:

* `score_table`: mean 1-5 trait and fluency scores per group with Student-t 95% intervals, because a mean from
  five ratings and a mean from five hundred must not look equally sure.
* `bradley_terry` (in `leaderboard`, re-exported here): the best-output picks of full rounds and the votes of quick
  side-by-side rounds fitted with one Bradley-Terry model, on an Elo-like scale with bootstrap intervals over
  rounds; `leaderboard_view` turns that board into the table a person reads.

Beside them, `judge_agreement` measures how far an automatic judge agrees with the humans, and `plot_scores` draws
a score table.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..traits import POLES, TRAITS
from .leaderboard import bradley_terry, leaderboard_view, wins_from_picks
from .scales import scales_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["bradley_terry", "judge_agreement", "leaderboard_view", "plot_scores", "score_table", "spearman",
           "toward_target", "wins_from_picks"]

_SCORES = ("trait", "fluency")


def score_table(ratings: pd.DataFrame, by: Sequence[str] = ("method", "trait", "pole")) -> pd.DataFrame:
    """Per group of `by`: the number of ratings `n` and, for the trait and fluency scores, the mean and its
    Student-t 95% interval (`*_lo`, `*_hi`). With a single rating there is no spread to estimate, so the bounds
    are NaN rather than a misleading zero-width interval. A missing score (NaN) is left out of that score's mean
    and interval only; `n` counts rows. Groups with a missing key (e.g. no pole for the base model) are kept."""
    by = list(by)
    columns = by + ["n"] + [f"{score}_{part}" for score in _SCORES for part in ("mean", "lo", "hi")]
    if ratings.empty:
        return pd.DataFrame(columns=columns)
    grouped = ratings.groupby(by, dropna=False, sort=False) if by else ratings.groupby(lambda _: 0)
    table = grouped.size().rename("n").to_frame()
    for score in _SCORES:
        values = grouped[f"{score}_score"].agg(["mean", "std", "count"])
        count = values["count"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            half = stats.t.ppf(0.975, count - 1) * values["std"].to_numpy(dtype=float) / np.sqrt(count)
        half = np.where(count > 1, half, np.nan)
        table[f"{score}_mean"] = values["mean"].astype(float)
        table[f"{score}_lo"] = values["mean"].to_numpy(dtype=float) - half
        table[f"{score}_hi"] = values["mean"].to_numpy(dtype=float) + half
    table = table.reset_index(drop=not by)
    if by:
        table = table.sort_values(by, na_position="last", kind="stable")
    return table.reset_index(drop=True)[columns]


def spearman(a: Sequence[float], b: Sequence[float]) -> tuple[float, int]:
    """Rank correlation of paired scores (e.g. human vs LLM-judge) and the number of complete pairs it rests
    on. Pairs with a missing side are dropped; with fewer than 3 pairs, or one side constant, the correlation is
    undefined and NaN is returned rather than a number that would look meaningful."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs paired scores, got {len(x)} and {len(y)}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(len(x))
    if n < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan"), n
    return float(stats.spearmanr(x, y).statistic), n


def toward_target(judge: str, pole: str, trait_score: float, fluency_score: float) -> tuple[float, float]:
    """A stored judge's scores turned the way human ratings point (trait = how well the answer portrays the TARGET
    pole, fluency = higher is better), by what that judge's numbers mean (`scales.scales_for`)."""
    return scales_for(judge).toward_target(pole, trait_score, fluency_score)


def judge_agreement(ratings: pd.DataFrame, judgments: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How far an automatic judge agrees with the human ratings of the same outputs.

    `ratings` has one row per human rating (output_id, method, pole, trait_score, fluency_score); `judgments` one
    row per (output_id, judge). Per output the human scores are averaged; judge scores are turned toward the
    target (`toward_target`). Returns (per judge and method: n, human and judge means; per judge: Spearman rank
    correlation of human and judge scores over outputs, for trait and fluency, with n)."""
    per_method_cols = ["judge", "method", "n", "human_trait", "judge_trait", "human_fluency", "judge_fluency"]
    overall_cols = ["judge", "trait_spearman", "trait_n", "fluency_spearman", "fluency_n"]
    if ratings.empty or judgments.empty:
        return pd.DataFrame(columns=per_method_cols), pd.DataFrame(columns=overall_cols)
    human = (ratings.groupby("output_id")
             .agg(method=("method", "first"), pole=("pole", "first"), human_trait=("trait_score", "mean"),
                  human_fluency=("fluency_score", "mean")).reset_index())
    both = human.merge(judgments, on="output_id")
    if both.empty:
        return pd.DataFrame(columns=per_method_cols), pd.DataFrame(columns=overall_cols)
    turned = [toward_target(j, p, t, f) for j, p, t, f in
              zip(both["judge"], both["pole"], both["trait_score"].astype(float), both["fluency_score"].astype(float))]
    both["judge_trait"] = [t for t, _ in turned]
    both["judge_fluency"] = [f for _, f in turned]
    per_method = (both.groupby(["judge", "method"])
                  .agg(n=("output_id", "size"), human_trait=("human_trait", "mean"), judge_trait=("judge_trait", "mean"),
                       human_fluency=("human_fluency", "mean"), judge_fluency=("judge_fluency", "mean"))
                  .reset_index())[per_method_cols]
    rows = []
    for judge, g in both.groupby("judge"):
        rt, nt = spearman(g["human_trait"], g["judge_trait"])
        rf, nf = spearman(g["human_fluency"], g["judge_fluency"])
        rows.append({"judge": judge, "trait_spearman": rt, "trait_n": nt, "fluency_spearman": rf, "fluency_n": nf})
    return per_method, pd.DataFrame(rows, columns=overall_cols)


def plot_scores(table: pd.DataFrame, path: str | os.PathLike[str] | None = None,
                labels: Mapping[str, str] | None = None) -> Figure:
    """Mean trait score per method with its 95% interval, one panel per pole and traits side by side, from a
    `score_table(..., by=("method", "trait", "pole"))`; `labels` maps method names to the display names the legend
    shows. The axis starts at 0, not at the lowest score 1, so a mean of 1 still draws a bar instead of looking
    like a missing one; the number of ratings stands above each bar, since a mean of two ratings and one of two
    hundred must not look alike. Built on a bare Figure, not pyplot, so it holds no global state and is safe in a
    server; saved as PNG when `path` is given. Returns the matplotlib Figure."""
    from matplotlib.figure import Figure  # a bare Figure: no pyplot, no global backend state

    missing = {"method", "trait", "pole", "n", "trait_mean", "trait_lo", "trait_hi"} - set(table.columns)
    if missing:
        raise ValueError(f"plot_scores needs a score_table by method, trait and pole; missing {sorted(missing)}")
    poles = [p for p in POLES if p in set(table["pole"])] + sorted(
        {str(p) for p in table["pole"].dropna()} - set(POLES))
    fig = Figure(figsize=(10, 3.6 * max(len(poles), 1)), layout="constrained")
    if not poles:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no ratings yet", ha="center", va="center")
        ax.set_axis_off()
    else:
        methods = sorted(table["method"].dropna().unique().tolist(), key=str)
        colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
        traits = [t for t in TRAITS if t in set(table["trait"])] + sorted(
            {str(t) for t in table["trait"].dropna()} - set(TRAITS))
        width = 0.8 / max(len(methods), 1)
        axes = fig.subplots(len(poles), 1, squeeze=False)[:, 0]
        for ax, pole in zip(axes, poles):
            rows = table[table["pole"] == pole]
            for i, method in enumerate(methods):
                mine = rows[rows["method"] == method].set_index("trait").reindex(traits)
                x = np.arange(len(traits)) + (i - (len(methods) - 1) / 2) * width
                mean = mine["trait_mean"].to_numpy(dtype=float)
                lo, hi = mine["trait_lo"].to_numpy(dtype=float), mine["trait_hi"].to_numpy(dtype=float)
                ax.bar(x, mean, width, color=colours[method], label=(labels or {}).get(method, str(method)))
                sure = ~np.isnan(lo)
                ax.errorbar(x[sure], mean[sure], yerr=[mean[sure] - lo[sure], hi[sure] - mean[sure]],
                            fmt="none", ecolor="black", capsize=3, linewidth=1)
                for xi, yi, n in zip(x, mean, mine["n"].to_numpy(dtype=float)):
                    if not np.isnan(yi):  # on a white patch, so the whisker through it does not hide it
                        ax.text(xi, yi + 0.05, f"n={n:.0f}", ha="center", va="bottom", fontsize=7,
                                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1, "alpha": 0.8})
            ax.set_xticks(np.arange(len(traits)), traits)
            ax.set_ylim(0, 5.5)  # headroom above 5 for the n labels
            ax.set_yticks(np.arange(6))
            ax.set_ylabel("mean trait score (1\u20135; 0 = none)")
            ax.set_title(f"{pole} pole")
        axes[0].legend(title="method", loc="upper left", bbox_to_anchor=(1.01, 1))
    if path is not None:
        fig.savefig(path, format="png", dpi=100)
    return fig
