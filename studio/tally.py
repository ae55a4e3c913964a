"""The ratings added up and handed out: the Results tab's summary, leaderboard and mean scores, the human-rated
answers a judge has yet to score and how the judges agree with the raters, and the CSV exports. Compare runs are
never counted; the store holds the rows, the statistics live in steering.evaluation.ratings."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from db import Store

from .answers import LABELS


@dataclass(frozen=True)
class Results:
    summary: str  # Markdown: rounds, votes, raters
    board: object  # pandas DataFrame (ratings.leaderboard_view)
    scores: object  # pandas DataFrame, readable
    figure: object | None  # matplotlib Figure, None without ratings


def results(store: Store, min_votes: int = 10, include_custom: bool = True) -> Results:
    """What the Results tab shows: a summary line, the leaderboard (Bradley–Terry on best picks and quick votes),
    the mean ratings per method, trait and pole, and their plot. Compare runs are never counted."""
    from steering.evaluation.ratings import bradley_terry, leaderboard_view, plot_scores, score_table

    ratings, picks, votes = store.ratings_frame(), store.picks_frame(), store.votes_frame()
    if not include_custom:
        ratings, picks, votes = ratings[~ratings["custom"]], picks[~picks["custom"]], votes[~votes["custom"]]
    min_votes = max(int(min_votes or 1), 1)
    board = leaderboard_view(bradley_terry(picks, votes, min_votes=min_votes), LABELS, min_votes)
    full, quick = picks["round_id"].nunique(), len(votes)
    raters = len(set(picks["rater_id"]) | set(votes["rater_id"]))
    summary = (f"**{_n(full + quick, 'blind round')} rated** ({_n(full, 'full round')} with "
               f"{_n(len(ratings), 'answer rating')}, {_n(quick, 'quick vote')}) by {_n(raters, 'rater')}. "
               f"Compare runs are not counted. A method is ranked once it was shown in "
               f"{_n(min_votes, 'rated round')}.")
    table = score_table(ratings)
    figure = plot_scores(table, None, labels=LABELS) if len(ratings) else None
    return Results(summary, board, _readable_scores(table), figure)


def unjudged(store: Store, judge_name: str) -> tuple[list[int], list]:
    """The human-rated outputs the judge `judge_name` has not scored yet: their output ids and the JudgeItems to
    score them by."""
    from steering.evaluation.judge import JudgeItem

    ratings = store.ratings_frame().drop_duplicates("output_id")
    done = store.judgments_frame()
    done = set(done.loc[done["judge"] == judge_name, "output_id"])
    todo = ratings[~ratings["output_id"].isin(done)]
    items = [JudgeItem(q, t, tr, p) for q, t, tr, p in zip(todo["question"], todo["text"], todo["trait"],
                                                             todo["pole"])]
    return [int(o) for o in todo["output_id"]], items


def judge_agreement(store: Store) -> tuple[object, object]:
    """Human and judge means per method and each judge's rank agreement with the raters
    (ratings.judge_agreement on every stored rating and judgment)."""
    from steering.evaluation.ratings import judge_agreement as agreement

    return agreement(store.ratings_frame(), store.judgments_frame())


def export_csv(store: Store, what: str = "ratings") -> bytes:
    """All ratings ("ratings": one row per answer rated in a full round, with its shown and raw text) or all quick
    votes ("votes") as CSV, built in memory (concurrent downloads share nothing). Rater ids are replaced by a hash (a
    rater id is what authorises rating, so it is never published), and a text cell that a spreadsheet would run as a
    formula (= + - @ first) is prefixed with an apostrophe."""
    import hashlib

    import pandas as pd

    frames = {"ratings": store.ratings_frame, "votes": store.votes_frame}
    if what not in frames:
        raise ValueError(f"export 'ratings' or 'votes', not {what!r}")
    frame = frames[what]()
    frame["rater_id"] = [hashlib.sha256(r.encode()).hexdigest()[:12] for r in frame["rater_id"]]
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = [_inert(v) for v in frame[column]]
    return frame.to_csv(index=False).encode("utf-8")


def csv_file(folder: Path, what: str, data: bytes) -> Path:
    """`data` written to a file of its own in `folder` (a download button needs a path), after removing the files
    there older than a minute."""
    for old in folder.glob("*.csv"):  # the page has fetched (copied) anything older than a minute
        try:
            if time.time() - old.stat().st_mtime > 60:
                old.unlink()
        except FileNotFoundError:  # another download removed it first
            pass
    handle, name = tempfile.mkstemp(prefix=f"persona-studio-{what}-", suffix=".csv", dir=folder)
    with open(handle, "wb") as out:
        out.write(data)
    return Path(name)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _inert(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: strings starting with = + - @ (or a tab or carriage return, which
    some spreadsheets skip before reading a formula) get a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _readable_scores(table):
    """The mean-ratings table as a person reads it: display names, "mean [95% interval]" per score."""
    import pandas as pd

    if table.empty:
        return pd.DataFrame(columns=["method", "trait", "pole", "ratings", "portrays the target (1–5)",
                                     "fluency (1–5)"])

    def cell(mean, lo, hi):
        return f"{mean:.2f}" if pd.isna(lo) else f"{mean:.2f} [{lo:.2f}–{hi:.2f}]"

    return pd.DataFrame({
        "method": [LABELS.get(m, m) for m in table["method"]], "trait": table["trait"], "pole": table["pole"],
        "ratings": table["n"],
        "portrays the target (1–5)": [cell(*r) for r in zip(table["trait_mean"], table["trait_lo"],
                                                               table["trait_hi"])],
        "fluency (1–5)": [cell(*r) for r in zip(table["fluency_mean"], table["fluency_lo"], table["fluency_hi"])],
    })
