"""Rating analysis on hand-made frames with answers known in advance: t-intervals, implied pairwise wins, the
Bradley-Terry leaderboard from full-round picks and quick votes, its reading view, rank agreement and the score
plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steering.evaluation.ratings import bradley_terry, leaderboard_view, plot_scores, score_table, spearman, wins_from_picks

T_975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2), written out so the test does not reuse the code's call
BOARD_COLUMNS = ["method", "rating", "lo", "hi", "rounds", "picks", "wins", "ties", "bad", "ranked", "rank"]


def _ratings(rows: list[tuple[str, str, str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame([dict(round_id=i, rater_id="r1", method=m, trait=t, pole=p, trait_score=ts,
                              fluency_score=fs, best=False, custom=False)
                         for i, (m, t, p, ts, fs) in enumerate(rows)])


def _picks(rounds: list[tuple[list[str], str]]) -> pd.DataFrame:
    """One row per method shown in a round; `best` on the picked one."""
    return pd.DataFrame([dict(round_id=r, method=m, trait="Openness", pole="high", custom=False, best=m == pick)
                         for r, (shown, pick) in enumerate(rounds) for m in shown])


def _votes(rows: list[tuple[str, str, str]], first: int = 0) -> pd.DataFrame:
    """One quick round per (method_a, method_b, outcome), with round ids "q<first>", "q<first + 1>", ..."""
    return pd.DataFrame([dict(round_id=f"q{first + i}", rater_id="r1", trait="Openness", pole="high", custom=False,
                              method_a=a, method_b=b, outcome=o, created_at=pd.Timestamp("2024-01-01"))
                         for i, (a, b, o) in enumerate(rows)],
                        columns=["round_id", "rater_id", "trait", "pole", "custom", "method_a", "method_b", "outcome",
                                 "created_at"])


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
    assert list(board.columns) == BOARD_COLUMNS
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
    assert board.empty and list(board.columns) == BOARD_COLUMNS
    assert bradley_terry(_picks([]), _votes([])).empty
    view = leaderboard_view(board, {}, 10)
    assert view.empty and list(view.columns) == ["rank", "method", "rating", "95% interval", "rounds", "best picks",
                                                 "quick wins", "ties", "both bad"]


# bradley_terry with quick votes

def test_votes_none_or_empty_give_the_picks_only_board():
    picks = _simulated({"A": 0.5, "B": 0.0, "C": -0.5}, 80, seed=4)
    alone = bradley_terry(picks, n_boot=50)
    pd.testing.assert_frame_equal(bradley_terry(picks, None, n_boot=50), alone)
    pd.testing.assert_frame_equal(bradley_terry(picks, _votes([]), n_boot=50), alone)
    assert (alone[["wins", "ties", "bad"]] == 0).all().all()


def test_ties_alone_give_equal_ratings():
    board = bradley_terry(_picks([]), _votes([("A", "B", "tie")] * 6), min_votes=1, n_boot=50)
    assert np.allclose(board["rating"], 1000.0, atol=1e-6)
    assert (board["ties"] == 6).all() and (board["wins"] == 0).all() and (board["rounds"] == 6).all()


def test_a_tie_is_half_a_win_each_way_by_hand():
    # A: 3 wins + 2 ties, B: 1 win + 2 ties (both sides of a tie get half a win), so w_A = 4 and w_B = 2. For two
    # methods the Bradley-Terry MLE satisfies sigmoid(b_A - b_B) = w_A / (w_A + w_B), i.e. b_A - b_B = log(w_A / w_B);
    # the 1e-4 L2 penalty moves that by under 0.01 rating points here.
    votes = _votes([("A", "B", "a")] * 3 + [("A", "B", "tie"), ("B", "A", "a"), ("B", "A", "tie")])
    board = bradley_terry(_picks([]), votes, min_votes=1, n_boot=50).set_index("method")
    expected_gap = 400 / math.log(10) * math.log(4 / 2)
    assert expected_gap == pytest.approx(120.412, abs=1e-3)
    assert board.loc["A", "rating"] - board.loc["B", "rating"] == pytest.approx(expected_gap, abs=0.05)
    assert (board.loc["A", "wins"], board.loc["B", "wins"]) == (3, 1)
    assert (board.loc["A", "ties"], board.loc["B", "ties"]) == (2, 2)


def test_both_bad_votes_do_not_move_the_ratings_but_are_counted():
    picks = _simulated({"A": 0.5, "B": 0.0, "C": -0.5}, 40, seed=5)
    votes = _votes([("A", "B", "a"), ("B", "C", "tie"), ("C", "A", "b"), ("B", "A", "b")] * 5)
    bad = _votes([("A", "B", "bad")] * 4 + [("C", "A", "bad"), ("A", "A", "bad")], first=100)
    without = bradley_terry(picks, votes, n_boot=50).set_index("method").sort_index()
    with_bad = bradley_terry(picks, pd.concat([votes, bad]), n_boot=50).set_index("method").sort_index()
    pd.testing.assert_frame_equal(with_bad[["rating", "lo", "hi"]], without[["rating", "lo", "hi"]], check_exact=True)
    assert (with_bad["bad"] - without["bad"]).to_dict() == {"A": 6, "B": 4, "C": 1}
    assert (with_bad["rounds"] - without["rounds"]).to_dict() == {"A": 6, "B": 4, "C": 1}
    assert without["rounds"].to_dict() == {"A": 40 + 15, "B": 40 + 15, "C": 40 + 10}


def test_a_vote_of_a_method_against_itself_is_no_comparison():
    board = bradley_terry(_picks([]), _votes([("A", "A", "a"), ("A", "A", "tie")]), min_votes=1, n_boot=10)
    a = board.set_index("method").loc["A"]
    assert math.isnan(a["rating"]) and not a["ranked"]
    assert (a["rounds"], a["wins"], a["ties"]) == (2, 0, 0)


def test_an_unknown_vote_outcome_is_refused():
    with pytest.raises(ValueError, match="outcomes"):
        bradley_terry(_picks([]), _votes([("A", "B", "left")]))


def _simulated_votes(strengths: dict[str, float], n_votes: int, seed: int) -> pd.DataFrame:
    """Quick votes on random pairs. With p = sigmoid(b_a - b_b): "a" with p - 0.1, "b" with 1 - p - 0.1, "tie" with
    0.2, so a's expected share with ties as halves is exactly p and the half-win fit is unbiased; a further 10% of
    the votes are "both bad", whatever the strengths (they must not matter)."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    rows = []
    for _ in range(n_votes):
        a, b = rng.choice(len(names), 2, replace=False)
        if rng.random() < 0.1:
            rows.append((names[a], names[b], "bad"))
            continue
        p = 1 / (1 + math.exp(strengths[names[b]] - strengths[names[a]]))
        rows.append((names[a], names[b], rng.choice(["a", "b", "tie"], p=[p - 0.1, 1 - p - 0.1, 0.2])))
    return _votes(rows)


def test_picks_and_votes_together_recover_known_strengths():
    strengths = {"A": 1.0, "B": 0.0, "C": -1.0}
    picks, votes = _simulated(strengths, 1500, seed=11), _simulated_votes(strengths, 3000, seed=12)
    board = bradley_terry(picks, votes, n_boot=50, seed=0)
    assert list(board["method"]) == ["A", "B", "C"] and list(board["rank"]) == [1, 2, 3]
    b = (board.set_index("method")["rating"] - 1000) * math.log(10) / 400
    assert b["A"] - b["B"] == pytest.approx(1.0, abs=0.12)
    assert b["B"] - b["C"] == pytest.approx(1.0, abs=0.12)
    assert (board["lo"] < board["rating"]).all() and (board["rating"] < board["hi"]).all()
    counts = votes["outcome"].value_counts()
    assert board["picks"].sum() == 1500 and board["wins"].sum() == counts["a"] + counts["b"]
    assert board["ties"].sum() == 2 * counts["tie"] and board["bad"].sum() == 2 * counts["bad"]
    assert board["rounds"].sum() == 3 * 1500 + 2 * 3000


def test_equal_lower_bounds_are_ordered_by_rating_then_evidence():
    # The bug report "NPTI with 1 best pick ranked above P² with 2, both lower bound 686.5": two unbeaten methods
    # whose lower bound comes from the same kind of bootstrap sample (one win over base, the other method absent),
    # equal but for floating-point noise. The one with more evidence, and so the higher rating, must come first.
    picks = _picks([(["base", "npti"], "npti")] + [(["base", "p2"], "p2")] * 2)
    board = bradley_terry(picks, min_votes=1, seed=0)
    assert list(board["method"]) == ["p2", "npti", "base"] and list(board["rank"]) == [1, 2, 3]
    lo = board.set_index("method")["lo"]
    assert round(lo["p2"], 1) == round(lo["npti"], 1)  # the tie of the report, decided by the rating
    # identical ratings and no bootstrap: evidence (picks + quick wins + ties / 2) decides, C 3, B 2, A 1
    picks = _picks([(["A", "C"], "A"), (["A", "C"], "C")])
    votes = _votes([("B", "C", "a"), ("B", "C", "b"), ("C", "B", "tie"), ("B", "C", "tie")])
    board = bradley_terry(picks, votes, min_votes=1, n_boot=0)
    assert np.allclose(board["rating"], 1000.0, atol=1e-9)
    assert list(board["method"]) == ["C", "B", "A"]


def test_unranked_rows_with_a_rating_come_before_never_compared_ones():
    # D, shown twice, beat A both times: the top rating, yet unranked, so after A and B; solo is never compared
    rounds = [(["A", "B"], "A"), (["A", "B"], "B")] * 6 + [(["solo"], "solo")] * 12 + [(["D", "A"], "D")] * 2
    board = bradley_terry(_picks(rounds), min_votes=10, n_boot=20)
    assert board.set_index("method")["rating"].idxmax() == "D"
    assert set(board["method"].iloc[:2]) == {"A", "B"} and list(board["method"].iloc[2:]) == ["D", "solo"]
    assert list(board["ranked"]) == [True, True, False, False]


# leaderboard_view

def test_leaderboard_view_reads_like_a_table_for_people():
    board = pd.DataFrame({"method": ["npti", "prompt", "new", "solo"], "rating": [1087.4, 1003.6, 980.2, np.nan],
                          "lo": [912.2, 955.0, 700.0, np.nan], "hi": [1240.6, 1050.4, 1300.0, np.nan],
                          "rounds": [40, 30, 3, 12], "picks": [20, 10, 1, 12], "wins": [5, 2, 1, 0],
                          "ties": [2, 2, 0, 0], "bad": [1, 0, 0, 0], "ranked": [True, True, False, False],
                          "rank": pd.array([1, 2, pd.NA, pd.NA], dtype="Int64")})
    view = leaderboard_view(board, {"npti": "NPTI", "new": "P²"}, min_votes=10)
    assert list(view.columns) == ["rank", "method", "rating", "95% interval", "rounds", "best picks", "quick wins",
                                  "ties", "both bad"]
    assert list(view["rank"]) == [1, 2, "—", "—"]
    assert list(view["method"]) == ["NPTI", "prompt", "P²", "solo"]
    assert list(view["rating"]) == [1087, 1004, 980, "—"]
    assert list(view["95% interval"]) == ["912–1241", "955–1050", "not enough rounds yet (3 of 10)",
                                          "never compared"]
    assert list(view["best picks"]) == [20, 10, 1, 12] and list(view["quick wins"]) == [5, 2, 1, 0]
    assert list(view["ties"]) == [2, 2, 0, 0] and list(view["both bad"]) == [1, 0, 0, 0]
    assert list(view["rounds"]) == [40, 30, 3, 12]


def test_leaderboard_view_of_a_fitted_board():
    picks = _simulated({"A": 0.5, "B": 0.0}, 30, seed=6)
    board = bradley_terry(picks, _votes([("A", "C", "a")] * 2), min_votes=10, n_boot=20)
    view = leaderboard_view(board, {"A": "Alpha"}, 10)
    assert list(view["method"]) == ["Alpha", "B", "C"] and list(view["rank"]) == [1, 2, "—"]
    assert view["95% interval"].iloc[2] == "not enough rounds yet (2 of 10)"
    assert all("–" in text for text in view["95% interval"].iloc[:2])


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


def test_plot_scores_starts_at_zero_shows_n_and_display_names():
    table = score_table(_ratings([("npti", "Openness", "high", 1, 4), ("npti", "Openness", "high", 1, 4),
                                  ("prompt", "Openness", "high", 3, 5), ("prompt", "Neuroticism", "high", 5, 5)]))
    fig = plot_scores(table, labels={"npti": "NPTI"})
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0  # a mean of 1 still draws a bar
    assert ax.get_ylabel() == "mean trait score (1–5; 0 = none)"
    heights = sorted(h for h in (patch.get_height() for patch in ax.patches) if not math.isnan(h))
    assert heights == pytest.approx([1.0, 3.0, 5.0])  # npti has no Neuroticism ratings: a NaN bar, not drawn
    assert sorted(text.get_text() for text in ax.texts) == ["n=1", "n=1", "n=2"]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["NPTI", "prompt"]


def test_the_statistics_import_and_run_where_torch_gradio_and_sqlalchemy_cannot_be_imported():
    """A fresh interpreter in which importing torch, transformers, gradio or sqlalchemy fails imports the
    statistics (through the package's lazy __init__) and fits a leaderboard."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import importlib.abc, sys
        BLOCKED = {"torch", "transformers", "gradio", "sqlalchemy"}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"{name} is blocked in this test")
        sys.meta_path.insert(0, Block())
        import pandas as pd
        from steering.evaluation.ratings import bradley_terry, score_table
        import steering
        assert steering.TRAITS[0] == "Openness"  # a lazy public name that needs no torch
        picks = pd.DataFrame({"round_id": [1, 1], "method": ["a", "b"], "best": [True, False]})
        board = bradley_terry(picks, min_votes=1, n_boot=5)
        assert list(board["method"]) == ["a", "b"]
        assert not {m.split(".")[0] for m in sys.modules} & BLOCKED
        assert "matplotlib.pyplot" not in sys.modules  # no global figure state in a server
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_judge_agreement_turns_judges_toward_the_target_and_correlates_by_rank():
    from steering.evaluation.ratings import judge_agreement

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
