"""The leaderboard of blind human picks: Bradley-Terry ratings with bootstrap intervals, and the view a person reads.

Pure analysis of pandas frames (numpy, pandas and scipy only), like `ratings`, which re-exports everything here.

`bradley_terry` reads the "which output fits the trait best" picks of full rounds as pairwise wins (the picked
method beat every other method shown in that round), together with the a / b / tie votes of quick side-by-side
rounds, fits them with one Bradley-Terry model and reports the strengths on an Elo-like scale with bootstrap intervals
over rounds. Rounds, not comparisons, are resampled because the comparisons of one round share a single pick and are
not independent. `leaderboard_view` turns that board into the table a person reads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special

__all__ = ["bradley_terry", "leaderboard_view", "wins_from_picks"]

_BOARD_COLUMNS = ("method", "rating", "lo", "hi", "rounds", "picks", "wins", "ties", "bad", "ranked", "rank")
_COUNT_COLUMNS = ("rounds", "picks", "wins", "ties", "bad")
_VOTE_COLUMNS = ("round_id", "method_a", "method_b", "outcome")  # what the fit reads of a quick-votes frame
_OUTCOMES = ("a", "b", "tie", "bad")
_VIEW_COLUMNS = ("rank", "method", "rating", "95% interval", "rounds", "best picks", "quick wins", "ties", "both bad")
_DASH = "\u2014"  # em dash: "no value" in the view
_ELO_SCALE = 400.0 / np.log(10.0)  # a strength gap of 400 points means 10:1 odds, as in chess Elo
_L2_PENALTY = 1e-4  # small enough not to bias real data, large enough to keep an always-winning method finite


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


def _vote_comparisons(votes: pd.DataFrame) -> pd.DataFrame:
    """The weighted pairwise comparisons quick votes imply: one row (`round_id`, `winner`, `loser`, `weight`) for an
    "a" or "b" vote, and for a tie two rows of weight 0.5, one each way (half a win to each side, the usual way to
    put a tie into a Bradley-Terry likelihood). "Both bad" says nothing about which of the two is better, and a
    vote whose two sides are the same method is no comparison, so neither yields a row."""
    real = votes[votes["method_a"] != votes["method_b"]]
    side_a, side_b, outcome = real["method_a"], real["method_b"], real["outcome"]
    parts = [pd.DataFrame({"round_id": real.loc[keep, "round_id"].to_numpy(), "winner": winner[keep].to_numpy(),
                           "loser": loser[keep].to_numpy(), "weight": weight})
             for keep, winner, loser, weight in ((outcome == "a", side_a, side_b, 1.0),
                                                 (outcome == "b", side_b, side_a, 1.0),
                                                 (outcome == "tie", side_a, side_b, 0.5),
                                                 (outcome == "tie", side_b, side_a, 0.5))]
    return pd.concat(parts, ignore_index=True)


def _checked_votes(votes: pd.DataFrame | None) -> pd.DataFrame | None:
    """`votes` if it holds any, after checking it can be read; None for no votes. An outcome outside a / b / tie /
    bad is a storage bug that would otherwise vanish silently from the fit, so it raises ValueError."""
    if votes is None or votes.empty:
        return None
    missing = set(_VOTE_COLUMNS) - set(votes.columns)
    if missing:
        raise ValueError(f"votes need columns {list(_VOTE_COLUMNS)}; missing {sorted(missing)}")
    unknown = sorted({str(o) for o in votes["outcome"]} - set(_OUTCOMES))
    if unknown:
        raise ValueError(f"vote outcomes must be one of {list(_OUTCOMES)}; got {unknown[:5]}")
    return votes


@dataclass(frozen=True)
class _Comparisons:
    """The comparisons as arrays, collapsed to distinct (winner, loser) pairs so a fit costs the same however many
    rounds there are; `pair_of` and `round_of` let a bootstrap sample reweight them per round, and `weight` lets a
    comparison count less than a whole win (each half of a tie is 0.5)."""

    n_methods: int
    winner: np.ndarray  # [P] method index of each distinct pair's winner
    loser: np.ndarray  # [P]
    pair_of: np.ndarray  # [C] distinct pair of each comparison
    round_of: np.ndarray  # [C] round index (0..R-1) of each comparison
    weight: np.ndarray  # [C] how much each comparison counts: 1 for a win, 0.5 for each half of a tie
    n_rounds: int

    def weights(self, round_counts: np.ndarray | None = None) -> np.ndarray:
        """The summed weight of each distinct pair, with each round counted `round_counts[r]` times."""
        per_comparison = self.weight if round_counts is None else self.weight * round_counts[self.round_of]
        return np.bincount(self.pair_of, per_comparison, minlength=len(self.winner)).astype(float)


def _comparisons(parts: Sequence[pd.DataFrame], methods: list[str]) -> _Comparisons:
    """Collapse comparison frames (`round_id`, `winner`, `loser`, optional `weight`, default 1) into arrays. Each
    frame's round ids are their own namespace: full and quick rounds are numbered one frame after the other, so an
    id that happened to occur in both would still be two rounds, and picks alone are numbered exactly as before."""
    index = {m: i for i, m in enumerate(methods)}
    parts = [p for p in parts if not p.empty]
    k = len(methods)
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return _Comparisons(k, empty, empty, empty, empty, np.zeros(0), 0)
    w = np.concatenate([p["winner"].map(index).to_numpy(dtype=np.int64) for p in parts])
    l = np.concatenate([p["loser"].map(index).to_numpy(dtype=np.int64) for p in parts])
    weight = np.concatenate([p["weight"].to_numpy(dtype=float) if "weight" in p.columns else np.ones(len(p))
                             for p in parts])
    rounds, n_rounds = [], 0
    for p in parts:
        _, round_of = np.unique(p["round_id"].to_numpy(), return_inverse=True)
        rounds.append(round_of.ravel() + n_rounds)
        n_rounds += int(round_of.max()) + 1
    pair_keys, pair_of = np.unique(w * k + l, return_inverse=True)
    return _Comparisons(k, pair_keys // k, pair_keys % k, pair_of.ravel(), np.concatenate(rounds), weight, n_rounds)


def _fit(comp: _Comparisons, weights: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Maximum-likelihood Bradley-Terry strengths with P(i beats j) = sigmoid(b_i - b_j), each distinct pair's
    log-likelihood term scaled by its summed weight. The tiny L2 penalty pins down the otherwise free overall level
    and keeps unbeaten (or never-compared) methods finite. The problem is smooth, convex and has a handful of
    parameters, so an exact-Hessian trust-region Newton method converges in a few steps even for a nearly separated
    (always-winning) method, where quasi-Newton methods crawl."""
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


def _counts(picks: pd.DataFrame, votes: pd.DataFrame | None, methods: list[str]) -> pd.DataFrame:
    """Per method the evidence behind its rating: blind `rounds` it was shown in (full and quick; a method shown
    twice in one round counts once), best `picks` won in full rounds, quick votes `wins` won and `ties` tied against
    another method, and quick "both `bad`" votes it was in. Full and quick rounds are counted apart, as in the fit."""

    def per_method(counts: pd.Series) -> np.ndarray:
        return counts.reindex(methods).fillna(0).to_numpy(dtype=int)

    out = pd.DataFrame({c: np.zeros(len(methods), dtype=int) for c in _COUNT_COLUMNS})
    if not picks.empty:
        out["rounds"] += per_method(picks.groupby("method")["round_id"].nunique())
        out["picks"] += per_method(picks["best"].astype(bool).groupby(picks["method"]).sum())
    if votes is not None:
        sides = pd.concat([votes[["round_id", side, "outcome"]].rename(columns={side: "method"})
                           for side in ("method_a", "method_b")])
        sides["vote"] = np.tile(np.arange(len(votes)), 2)
        shown = sides.drop_duplicates(["vote", "method"])  # a method against itself is in that vote once
        out["rounds"] += per_method(shown.groupby("method")["round_id"].nunique())
        out["bad"] += per_method((shown["outcome"] == "bad").groupby(shown["method"]).sum())
        real = votes[votes["method_a"] != votes["method_b"]]
        out["wins"] += per_method(pd.concat([real.loc[real["outcome"] == "a", "method_a"],
                                             real.loc[real["outcome"] == "b", "method_b"]]).value_counts())
        tied = real[real["outcome"] == "tie"]
        out["ties"] += per_method(pd.concat([tied["method_a"], tied["method_b"]]).value_counts())
    return out


def bradley_terry(picks: pd.DataFrame, votes: pd.DataFrame | None = None, min_votes: int = 10, n_boot: int = 200,
                  seed: int = 0) -> pd.DataFrame:
    """The leaderboard: one row per method shown in `picks` (full rounds) or `votes` (quick rounds) with its
    Bradley-Terry `rating` (1000 = average of the compared methods, +400 = 10:1 odds) and a 95% percentile bootstrap
    interval `lo`..`hi` over resampled rounds, beside the evidence: `rounds` shown in, best `picks` won, quick
    `wins`, `ties` and "both `bad`" votes (see `_counts`). A pick is a win over every other method of its round; a
    quick vote "a" or "b" is one win, a tie half a win each way, and "both bad" is left out of the fit, since it says
    nothing about which answer is better. `votes=None` (or an empty frame) gives exactly the picks-only board.

    Only methods shown in at least `min_votes` rounds are `ranked`, so a method needs both a high rating and
    enough evidence to rank high: ranked by `lo` (the pessimistic end), then `rating`, both compared at the 0.1
    the board is shown at, so that floating-point noise between two methods with the same evidence does not
    decide; then by evidence (picks + wins + ties / 2, then rounds), then name. Unranked methods follow, those with a
    rating first. A method never compared with another has NaN rating and is never ranked.

    All rows are pooled; filter by trait, pole or `custom` beforehand for a narrower board."""
    votes = _checked_votes(votes)
    shown = set() if picks.empty else set(picks["method"].dropna())
    if votes is not None:
        shown |= set(votes["method_a"].dropna()) | set(votes["method_b"].dropna())
    if not shown:
        return _empty_board()
    methods = sorted(shown, key=str)

    parts = [] if picks.empty else [wins_from_picks(picks)]
    if votes is not None:
        parts.append(_vote_comparisons(votes))
    rating, lo, hi = _rated(_comparisons(parts, methods), n_boot, seed)
    board = pd.concat([pd.DataFrame({"method": methods, "rating": rating, "lo": lo, "hi": hi}),
                       _counts(picks, votes, methods)], axis=1)
    board["ranked"] = (board["rounds"] >= min_votes) & board["rating"].notna()
    board = _in_rank_order(board)
    board["rank"] = pd.array([i + 1 if r else pd.NA for i, r in enumerate(board["ranked"])], dtype="Int64")
    return board[list(_BOARD_COLUMNS)]


def _rated(comp: _Comparisons, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each method's Elo-like rating and the 2.5 and 97.5 percentiles of `n_boot` refits on rounds resampled with
    replacement (each refit starts from the full fit's strengths); NaN where there is nothing to fit, without a
    bootstrap, or for a method never compared."""
    k = comp.n_methods
    rating = np.full(k, np.nan)
    lo = hi = rating.copy()
    if not comp.n_rounds:
        return rating, lo, hi
    full = comp.weights()
    b = _fit(comp, full, np.zeros(k))
    rating = _elo(b, _compared(comp, full))
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        samples = np.empty((n_boot, k))
        for i in range(n_boot):
            counts = np.bincount(rng.integers(0, comp.n_rounds, comp.n_rounds), minlength=comp.n_rounds)
            weights = comp.weights(counts)
            samples[i] = _elo(_fit(comp, weights, b), _compared(comp, weights))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: a method never compared
            lo, hi = np.nanpercentile(samples, [2.5, 97.5], axis=0)
    return rating, lo, hi


def _in_rank_order(board: pd.DataFrame) -> pd.DataFrame:
    """The board sorted for `bradley_terry`'s ranking; see there for the order and why."""
    keys = pd.DataFrame({"ranked": board["ranked"], "rated": board["rating"].notna(),
                         "lo": board["lo"].round(1), "rating": board["rating"].round(1),
                         "evidence": board["picks"] + board["wins"] + 0.5 * board["ties"],
                         "rounds": board["rounds"], "name": board["method"].map(str)})
    order = keys.sort_values(list(keys.columns), ascending=[False] * 6 + [True], na_position="last",
                             kind="stable").index
    return board.loc[order].reset_index(drop=True)


def _compared(comp: _Comparisons, weights: np.ndarray) -> np.ndarray:
    present = weights > 0
    return np.bincount(comp.winner[present], minlength=comp.n_methods) + np.bincount(
        comp.loser[present], minlength=comp.n_methods) > 0


def _empty_board() -> pd.DataFrame:
    columns = {"method": pd.Series(dtype=object), "rating": pd.Series(dtype=float), "lo": pd.Series(dtype=float),
               "hi": pd.Series(dtype=float)}
    columns.update({c: pd.Series(dtype=int) for c in _COUNT_COLUMNS})
    columns.update({"ranked": pd.Series(dtype=bool), "rank": pd.Series(dtype="Int64")})
    return pd.DataFrame(columns)


def leaderboard_view(board: pd.DataFrame, labels: Mapping[str, str], min_votes: int) -> pd.DataFrame:
    """A `bradley_terry` board as a person reads it, in the board's order: display names from `labels` (the raw
    method name where it has none), whole-number ratings and the interval as "912–1087", since decimals of an Elo
    scale are noise, and the counts under plain names. An unranked row has rank "—", and its interval says why it
    is unranked instead of showing numbers that would invite a comparison: "never compared" (only ever shown on its
    own) or "not enough rounds yet (n of min_votes)". A missing number is "—"."""
    labels = labels or {}
    rows = []
    for row in board.itertuples(index=False):
        if pd.isna(row.rating):
            interval = "never compared"
        elif not row.ranked and row.rounds < min_votes:
            interval = f"not enough rounds yet ({row.rounds} of {min_votes})"
        else:  # ranked (or ranked under another min_votes than this one): the numbers mean something
            interval = _DASH if pd.isna(row.lo) or pd.isna(row.hi) else f"{row.lo:.0f}\u2013{row.hi:.0f}"
        rows.append((int(row.rank) if row.ranked and not pd.isna(row.rank) else _DASH,
                     labels.get(row.method, str(row.method)),
                     _DASH if pd.isna(row.rating) else int(round(row.rating)), interval,
                     int(row.rounds), int(row.picks), int(row.wins), int(row.ties), int(row.bad)))
    return pd.DataFrame(rows, columns=list(_VIEW_COLUMNS))
