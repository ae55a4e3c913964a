"""Turning blind human ratings into per-method tables and a leaderboard.

Pure analysis of pandas frames the storage layer hands over; it imports neither gradio, sqlalchemy nor torch, so
the studio, the CLI and notebooks can all call it and the tests need no database.

Two views of the same ratings:

* `score_table`: mean 1-5 trait and fluency scores per group with Student-t 95% intervals, because a mean from
  five ratings and a mean from five hundred must not look equally sure.
* `bradley_terry`: the "which output fits the trait best" picks read as pairwise wins (the picked method beat every
  other method shown in that round) and fitted with a Bradley-Terry model, reported on an Elo-like scale with
  bootstrap intervals over rounds. Rounds, not comparisons, are resampled because the comparisons of one round
  share a single pick and are not independent.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from .traits import POLES, TRAITS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["bradley_terry", "judge_agreement", "plot_scores", "score_table", "spearman", "toward_target",
           "wins_from_picks"]

_SCORES = ("trait", "fluency")
_BOARD_COLUMNS = ("method", "rating", "lo", "hi", "rounds", "picks", "ranked", "rank")
_ELO_SCALE = 400.0 / np.log(10.0)  # a strength gap of 400 points means 10:1 odds, as in chess Elo
_L2_PENALTY = 1e-4  # small enough not to bias real data, large enough to keep an always-winning method finite


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


def wins_from_picks(picks: pd.DataFrame) -> pd.DataFrame:
    """The pairwise comparisons a set of picks implies: one row (`round_id`, `winner`, `loser`) per round and
    each other method shown in it. A method shown twice in one round loses once, and copies of the picked
    method are not comparisons at all, so a round showing only the picked method yields nothing. Rounds without
    a pick yield nothing either; a round with two picks is a storage bug and raises ValueError."""
    empty = pd.DataFrame({"round_id": pd.Series(dtype=object), "winner": pd.Series(dtype=object),
                          "loser": pd.Series(dtype=object)})
    if picks.empty:
        return empty
    best = picks["best"].astype(bool)
    per_round = best.groupby(picks["round_id"]).sum()
    if (per_round > 1).any():
        bad = per_round[per_round > 1].index.tolist()
        raise ValueError(f"rounds with more than one pick: {bad[:5]}")
    winners = picks.loc[best, ["round_id", "method"]].rename(columns={"method": "winner"})
    shown = picks[["round_id", "method"]].rename(columns={"method": "loser"}).drop_duplicates()
    pairs = winners.merge(shown, on="round_id", how="inner")
    pairs = pairs[pairs["winner"] != pairs["loser"]]
    if pairs.empty:
        return empty
    return pairs.sort_values(["round_id", "loser"], kind="stable").reset_index(drop=True)[["round_id", "winner",
                                                                                            "loser"]]


@dataclass(frozen=True)
class _Comparisons:
    """The comparisons as integer arrays, collapsed to distinct (winner, loser) pairs so a fit costs the same
    however many rounds there are; `pair_of` and `round_of` let a bootstrap sample reweight them per round."""

    n_methods: int
    winner: np.ndarray  # [P] method index of each distinct pair's winner
    loser: np.ndarray  # [P]
    pair_of: np.ndarray  # [C] distinct pair of each comparison
    round_of: np.ndarray  # [C] round index (0..R-1) of each comparison
    n_rounds: int

    def weights(self, round_counts: np.ndarray | None = None) -> np.ndarray:
        """How many times each distinct pair occurs, with each round counted `round_counts[r]` times."""
        per_comparison = None if round_counts is None else round_counts[self.round_of].astype(float)
        return np.bincount(self.pair_of, per_comparison, minlength=len(self.winner)).astype(float)


def _comparisons(wins: pd.DataFrame, methods: list[str]) -> _Comparisons:
    index = {m: i for i, m in enumerate(methods)}
    w = wins["winner"].map(index).to_numpy(dtype=np.int64)
    l = wins["loser"].map(index).to_numpy(dtype=np.int64)
    pair_keys, pair_of = np.unique(w * len(methods) + l, return_inverse=True)
    _, round_of = np.unique(wins["round_id"].to_numpy(), return_inverse=True)
    return _Comparisons(len(methods), pair_keys // len(methods), pair_keys % len(methods), pair_of.ravel(),
                        round_of.ravel(), int(round_of.max()) + 1 if len(round_of) else 0)


def _fit(comp: _Comparisons, weights: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Maximum-likelihood Bradley-Terry strengths with P(i beats j) = sigmoid(b_i - b_j). The tiny L2 penalty
    pins down the otherwise free overall level and keeps unbeaten (or never-compared) methods finite. The problem
    is smooth, convex and has a handful of parameters, so an exact-Hessian trust-region Newton method converges in
    a few steps even for a nearly separated (always-winning) method, where quasi-Newton methods crawl."""
    k = comp.n_methods

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        d = b[comp.winner] - b[comp.loser]
        nll = float(weights @ np.logaddexp(0.0, -d)) + _L2_PENALTY * float(b @ b)
        slope = -weights * special.expit(-d)  # d nll / d (b_winner - b_loser)
        grad = np.bincount(comp.winner, slope, k) - np.bincount(comp.loser, slope, k) + 2.0 * _L2_PENALTY * b
        return nll, grad

    def hessian(b: np.ndarray) -> np.ndarray:
        d = b[comp.winner] - b[comp.loser]
        curve = weights * special.expit(d) * special.expit(-d)
        w, l = comp.winner, comp.loser
        flat = np.bincount(np.concatenate([w * k + w, l * k + l, w * k + l, l * k + w]),
                           np.concatenate([curve, curve, -curve, -curve]), k * k)
        return flat.reshape(k, k) + 2.0 * _L2_PENALTY * np.eye(k)

    return optimize.minimize(loss, start, jac=True, hess=hessian, method="trust-exact",
                             options={"gtol": 1e-6, "maxiter": 500}).x


def _elo(b: np.ndarray, compared: np.ndarray) -> np.ndarray:
    """Centre over the methods that took part in a comparison and map to the Elo-like scale; others are NaN."""
    out = np.full(len(b), np.nan)
    if compared.any():
        out[compared] = 1000.0 + _ELO_SCALE * (b[compared] - b[compared].mean())
    return out


def bradley_terry(picks: pd.DataFrame, min_votes: int = 10, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """The leaderboard: one row per method shown in `picks` with its Bradley-Terry `rating` (1000 = average of
    the compared methods, +400 = 10:1 odds), a 95% percentile bootstrap interval `lo`..`hi` over resampled rounds,
    the `rounds` it was shown in and the `picks` it won. Only methods shown in at least `min_votes` rounds are
    `ranked`; they are ranked by `lo` (the pessimistic end), so a method needs both a high rating and enough
    evidence to rank high. A method never compared with another has NaN rating and is never ranked.

    All rows of `picks` are pooled; filter by trait, pole or `custom` beforehand for a narrower board."""
    if picks.empty:
        return _empty_board()
    methods = sorted(picks["method"].unique().tolist(), key=str)
    rounds = picks.groupby("method")["round_id"].nunique().reindex(methods).fillna(0).astype(int)
    won = picks["best"].astype(bool).groupby(picks["method"]).sum().reindex(methods).fillna(0).astype(int)

    wins = wins_from_picks(picks)
    rating = np.full(len(methods), np.nan)
    lo = hi = rating.copy()
    if not wins.empty:
        comp = _comparisons(wins, methods)
        full = comp.weights()
        b = _fit(comp, full, np.zeros(len(methods)))
        rating = _elo(b, _compared(comp, full))
        if n_boot > 0:
            rng = np.random.default_rng(seed)
            samples = np.empty((n_boot, len(methods)))
            for k in range(n_boot):
                counts = np.bincount(rng.integers(0, comp.n_rounds, comp.n_rounds), minlength=comp.n_rounds)
                weights = comp.weights(counts)
                samples[k] = _elo(_fit(comp, weights, b), _compared(comp, weights))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: a method never compared
                lo, hi = np.nanpercentile(samples, [2.5, 97.5], axis=0)

    board = pd.DataFrame({"method": methods, "rating": rating, "lo": lo, "hi": hi,
                          "rounds": rounds.to_numpy(), "picks": won.to_numpy()})
    board["ranked"] = (board["rounds"] >= min_votes) & board["rating"].notna()
    board = board.sort_values(["ranked", "lo", "rating", "method"], ascending=[False, False, False, True],
                              na_position="last", kind="stable").reset_index(drop=True)
    board["rank"] = pd.array([i + 1 if r else pd.NA for i, r in enumerate(board["ranked"])], dtype="Int64")
    return board[list(_BOARD_COLUMNS)]


def _compared(comp: _Comparisons, weights: np.ndarray) -> np.ndarray:
    present = weights > 0
    return np.bincount(comp.winner[present], minlength=comp.n_methods) + np.bincount(
        comp.loser[present], minlength=comp.n_methods) > 0


def _empty_board() -> pd.DataFrame:
    return pd.DataFrame({"method": pd.Series(dtype=object), "rating": pd.Series(dtype=float),
                         "lo": pd.Series(dtype=float), "hi": pd.Series(dtype=float),
                         "rounds": pd.Series(dtype=int), "picks": pd.Series(dtype=int),
                         "ranked": pd.Series(dtype=bool), "rank": pd.Series(dtype="Int64")})


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
    """A judge's scores turned the way human ratings point: trait = how well the answer portrays the TARGET pole,
    fluency = higher is better. An LLM judge rates the trait's level 1-5 (a low-pole answer should score low), so a
    low pole's score becomes 6 - s; the offline judge gives P(high) in 0-1, so a low pole's score becomes 1 - p,
    and its fluency is already higher-is-better. (Scores stored by the earlier embedding proxy, "offline-proxy", were
    signed and its fluency a perplexity: both flip sign.)"""
    if judge == "offline-proxy":
        return (-trait_score if pole == "low" else trait_score), -fluency_score
    if judge.startswith("offline"):
        return (1 - trait_score if pole == "low" else trait_score), fluency_score
    return (6 - trait_score if pole == "low" else trait_score), fluency_score


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


def plot_scores(table: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> Figure:
    """Mean trait score per method with its 95% interval, one panel per pole and traits side by side, from a
    `score_table(..., by=("method", "trait", "pole"))`. Built on a bare Figure, not pyplot, so it holds no global
    state and is safe in a server; saved as PNG when `path` is given. Returns the matplotlib Figure."""
    from matplotlib.figure import Figure  # a bare Figure: no pyplot, no global backend state

    missing = {"method", "trait", "pole", "trait_mean", "trait_lo", "trait_hi"} - set(table.columns)
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
                ax.bar(x, mean, width, color=colours[method], label=method)
                sure = ~np.isnan(mine["trait_lo"].to_numpy(dtype=float))
                ax.errorbar(x[sure], mean[sure],
                            yerr=[mean[sure] - mine["trait_lo"].to_numpy(dtype=float)[sure],
                                  mine["trait_hi"].to_numpy(dtype=float)[sure] - mean[sure]],
                            fmt="none", ecolor="black", capsize=3, linewidth=1)
            ax.set_xticks(np.arange(len(traits)), traits)
            ax.set_ylim(1, 5)
            ax.set_ylabel("trait score (1-5)")
            ax.set_title(f"{pole} pole")
        axes[0].legend(title="method", loc="upper left", bbox_to_anchor=(1.01, 1))
    if path is not None:
        fig.savefig(path, format="png", dpi=100)
    return fig
