"""Rating analysis on hand-made frames with answers known in advance: t-intervals, implied pairwise wins, the
Bradley-Terry leaderboard, rank agreement and the score plot."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steering.ratings import bradley_terry, plot_scores, score_table, spearman, wins_from_picks

T_975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2), written out so the test does not reuse the code's call


def _ratings(rows: list[tuple[str, str, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame([dict(round_id=i, rater_id="r1", method=m, trait=t, pole=p, trait_score=ts,
                              fluency_score=fs, best=False, custom=False)
                         for i, (m, t, p, ts, fs) in enumerate(rows)])


def _picks(rounds: list[tuple[list[str], str]]) -> pd.DataFrame:
    """One row per method shown in a round; `best` on the picked one."""
    return pd.DataFrame([dict(round_id=r, method=m, trait="Openness", pole="high", custom=False, best=m == pick)
                         for r, (shown, pick) in enumerate(rounds) for m in shown])


# score_table

def test_score_table_means_and_t_intervals_by_hand():
    table = score_table(_ratings([
        ("npti", "Openness", "high", 3, 5), ("npti", "Openness", "high", 4, 5), ("npti", "Openness", "high", 5, 2),
        ("npti", "Openness", "low", 2, 4),
        ("base", "Openness", "high", 1, 3), ("base", "Openness", "high", 1, 3),
    ]))
    assert list(table.columns) == ["method", "trait", "pole", "n", "trait_mean", "trait_lo", "trait_hi",
                                   "fluency_mean", "fluency_lo", "fluency_hi"]
    assert list(zip(table["method"], table["pole"])) == [("base", "high"), ("npti", "high"), ("npti", "low")]
    npti = table.iloc[1]
    half = T_975_2 * 1.0 / math.sqrt(3)
    assert half == pytest.approx(2.4841, abs=1e-4)
    assert npti["n"] == 3 and npti["trait_mean"] == pytest.approx(4.0)
    assert (npti["trait_lo"], npti["trait_hi"]) == pytest.approx((4 - half, 4 + half))
    # fluency [5, 5, 2]: mean 4, sd sqrt(3)
    f_half = T_975_2 * math.sqrt(3) / math.sqrt(3)
    assert (npti["fluency_mean"], npti["fluency_lo"], npti["fluency_hi"]) == pytest.approx((4, 4 - f_half,
                                                                                              4 + f_half))
    base = table.iloc[0]  # no spread: a zero-width interval, which is right for two identical ratings
    assert (base["trait_lo"], base["trait_hi"]) == pytest.approx((1.0, 1.0))
    single = table.iloc[2]
    assert single["n"] == 1 and single["trait_mean"] == 2.0
    assert all(math.isnan(single[c]) for c in ("trait_lo", "trait_hi", "fluency_lo", "fluency_hi"))


def test_score_table_respects_grouping_and_empty_input():
    ratings = _ratings([("npti", "Openness", "high", 3, 4), ("npti", "Neuroticism", "low", 5, 2),
                        ("prompt", "Openness", "high", 4, 4)])
    by_method = score_table(ratings, by=("method",))
    assert list(by_method.columns[:2]) == ["method", "n"]
    assert by_method.set_index("method")["n"].to_dict() == {"npti": 2, "prompt": 1}
    assert by_method.set_index("method").loc["npti", "trait_mean"] == pytest.approx(4.0)
    assert len(score_table(ratings)) == 3
    empty = score_table(ratings.iloc[:0])
    assert empty.empty and "trait_lo" in empty.columns and "fluency_hi" in empty.columns


# wins_from_picks

def test_a_three_method_round_gives_two_wins():
    wins = wins_from_picks(_picks([(["A", "B", "C"], "B")]))
    assert list(wins.columns) == ["round_id", "winner", "loser"]
    assert sorted(zip(wins["winner"], wins["loser"])) == [("B", "A"), ("B", "C")]


def test_a_round_of_the_picked_method_with_itself_is_ignored():
    picks = _picks([(["A", "A"], "A")])
    picks.loc[1, "best"] = False  # the second copy of A was shown but not picked
    assert wins_from_picks(picks).empty
    doubled = _picks([(["A", "B", "B"], "A")])
    assert list(wins_from_picks(doubled)["loser"]) == ["B"]  # one comparison per (round, loser)
    assert wins_from_picks(_picks([])).empty


def test_two_picks_in_a_round_is_refused():
    picks = _picks([(["A", "B"], "A")])
    picks["best"] = True
    with pytest.raises(ValueError, match="more than one pick"):
        wins_from_picks(picks)


# bradley_terry

def _simulated(strengths: dict[str, float], n_rounds: int, seed: int) -> pd.DataFrame:
    """Every round shows all methods; one is picked with probability softmax(b), the Plackett-Luce first choice,
    whose implied pairwise wins follow Bradley-Terry with the same b."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    b = np.array(list(strengths.values()))
    p = np.exp(b) / np.exp(b).sum()
    return _picks([(names, names[rng.choice(len(names), p=p)]) for _ in range(n_rounds)])


def test_bradley_terry_recovers_known_strengths():
    board = bradley_terry(_simulated({"A": 1.0, "B": 0.0, "C": -1.0}, 3000, seed=1), n_boot=100, seed=0)
    assert list(board.columns) == ["method", "rating", "lo", "hi", "rounds", "picks", "ranked", "rank"]
    assert list(board["method"]) == ["A", "B", "C"] and list(board["rank"]) == [1, 2, 3]
    rating = board.set_index("method")["rating"]
    b = (rating - 1000) * math.log(10) / 400
    assert b["A"] - b["B"] == pytest.approx(1.0, abs=0.15)
    assert b["B"] - b["C"] == pytest.approx(1.0, abs=0.15)
    assert rating.mean() == pytest.approx(1000.0)
    assert (board["lo"] < board["rating"]).all() and (board["rating"] < board["hi"]).all()
    assert (board["rounds"] == 3000).all() and board["picks"].sum() == 3000 and board["ranked"].all()


def test_bootstrap_is_reproducible_from_the_seed():
    picks = _simulated({"A": 0.5, "B": 0.0}, 200, seed=2)
    first, again = bradley_terry(picks, n_boot=50, seed=7), bradley_terry(picks, n_boot=50, seed=7)
    pd.testing.assert_frame_equal(first, again)


def test_min_votes_leaves_a_rarely_shown_method_unranked_and_last():
    picks = pd.concat([_simulated({"A": 0.5, "B": 0.0, "C": -0.5}, 60, seed=3),
                       _picks([(["D", "C"], "D")] * 3).assign(round_id=lambda f: f["round_id"] + 1000)])
    board = bradley_terry(picks, min_votes=10, n_boot=100)
    assert list(board["ranked"]) == [True, True, True, False]
    d = board.iloc[-1]
    assert d["method"] == "D" and d["rounds"] == 3 and d["picks"] == 3 and pd.isna(d["rank"])
    assert list(board["rank"].iloc[:3]) == [1, 2, 3]
    ranked = board[board["ranked"]]
    assert ranked["lo"].is_monotonic_decreasing


def test_symmetric_picks_give_equal_ratings():
    orders = [["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"]]
    picks = _picks([(shown, m) for shown in orders for m in "ABC" for _ in range(4)])  # 36 balanced rounds
    board = bradley_terry(picks, n_boot=100)
    assert np.allclose(board["rating"], 1000.0, atol=2.0)
    assert (board["picks"] == 12).all() and (board["lo"] < 1000).all() and (board["hi"] > 1000).all()


def test_an_unbeaten_method_stays_finite_and_ranks_first():
    picks = _picks([(["A", "B", "C"], "A")] * 20 + [(["B", "C"], "B")] * 5 + [(["B", "C"], "C")] * 5)
    board = bradley_terry(picks, min_votes=5, n_boot=100)
    assert board.iloc[0]["method"] == "A" and board.iloc[0]["rank"] == 1
    assert np.isfinite(board[["rating", "lo", "hi"]].to_numpy(dtype=float)).all()
    assert board.iloc[0]["rating"] > board.iloc[1]["rating"] + 400


def test_a_method_never_compared_does_not_break_the_fit():
    picks = pd.concat([_picks([(["A", "B"], "A"), (["A", "B"], "B")] * 6),
                       _picks([(["solo"], "solo")] * 12).assign(round_id=lambda f: f["round_id"] + 100)])
    board = bradley_terry(picks, min_votes=1, n_boot=50)
    solo = board.set_index("method").loc["solo"]
    assert math.isnan(solo["rating"]) and not solo["ranked"] and solo["rounds"] == 12
    assert board.iloc[-1]["method"] == "solo"
    assert np.allclose(board.set_index("method").loc[["A", "B"], "rating"], 1000.0, atol=1.0)


def test_empty_picks_give_an_empty_board():
    board = bradley_terry(_picks([]))
    assert board.empty and list(board.columns) == ["method", "rating", "lo", "hi", "rounds", "picks", "ranked",
                                                   "rank"]


# spearman

def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == (pytest.approx(1.0), 4)
    assert spearman([1, 2, 3], [3, 2, 1])[0] == pytest.approx(-1.0)
    rho, n = spearman([1, 2], [1, 2])
    assert math.isnan(rho) and n == 2
    rho, n = spearman([1, 2, 3, 4], [2, 2, 2, 2])
    assert math.isnan(rho) and n == 4
    assert spearman([1, 2, float("nan"), 3, 4], [1, 2, 5, 3, 4]) == (pytest.approx(1.0), 4)


# plot_scores and module hygiene

def test_plot_scores_returns_a_figure_and_writes_a_png(tmp_path):
    from matplotlib.figure import Figure

    table = score_table(_ratings([
        ("npti", "Openness", "high", 4, 4), ("npti", "Openness", "high", 5, 4), ("prompt", "Openness", "high", 3, 5),
        ("npti", "Neuroticism", "low", 2, 3), ("prompt", "Neuroticism", "low", 1, 4),
        ("prompt", "Neuroticism", "low", 2, 4),
    ]))
    fig = plot_scores(table)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    out = tmp_path / "scores.png"
    assert isinstance(plot_scores(table, out), Figure)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(plot_scores(score_table(_ratings([]))), Figure)


def test_the_module_imports_no_ui_database_or_torch():
    source = (Path(__file__).parents[1] / "steering" / "ratings.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
    roots = {name.split(".")[0] for name in imported}
    assert not roots & {"gradio", "sqlalchemy", "torch", "transformers"}
    assert "matplotlib.pyplot" not in imported  # no global figure state in a server


def test_judge_agreement_turns_judges_toward_the_target_and_correlates_by_rank():
    from steering.ratings import judge_agreement

    # four outputs, two humans each; the LLM judge rates trait LEVEL (a good low-pole answer scores 1)
    ratings = pd.DataFrame({
        "output_id": [1, 1, 2, 2, 3, 3, 4, 4], "method": ["npti"] * 4 + ["base"] * 4,
        "pole": ["low"] * 8, "trait_score": [5, 5, 4, 4, 2, 2, 1, 1], "fluency_score": [1, 1, 2, 2, 4, 4, 5, 5]})
    judgments = pd.DataFrame({
        "output_id": [1, 2, 3, 4, 1, 2, 3, 4], "judge": ["openai:m"] * 4 + ["offline-proxy"] * 4,
        "trait_score": [1.0, 2.0, 4.0, 5.0, -0.05, -0.01, 0.02, 0.04],
        "fluency_score": [1.0, 2.0, 4.0, 5.0, 9.0, 7.0, 4.0, 3.0]})
    per_method, overall = judge_agreement(ratings, judgments)
    llm = overall[overall["judge"] == "openai:m"].iloc[0]
    proxy = overall[overall["judge"] == "offline-proxy"].iloc[0]
    assert llm["trait_spearman"] == pytest.approx(1.0) and llm["trait_n"] == 4
    assert llm["fluency_spearman"] == pytest.approx(1.0)
    assert proxy["trait_spearman"] == pytest.approx(1.0) and proxy["fluency_spearman"] == pytest.approx(1.0)
    row = per_method[(per_method["judge"] == "openai:m") & (per_method["method"] == "npti")].iloc[0]
    assert row["n"] == 2 and row["human_trait"] == 4.5 and row["judge_trait"] == pytest.approx(6 - 1.5)
    empty_method, empty_overall = judge_agreement(ratings.iloc[:0], judgments)
    assert empty_method.empty and list(empty_overall.columns)[0] == "judge"
