"""The read side in bulk: the database as pandas frames with fixed columns and dtypes, for the leaderboards, the
judge agreement and the compare history.

Each function here is the query behind the `Store` method of the same name (whose docstring says what a row is)
and runs on the session of that method's read transaction, one consistent snapshot. The column definitions below
are the frames' contract: an empty database gives the same columns and dtypes as a full one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased

from .schema import JudgeScore, Output, Pick, Rating, Round, Vote

# The frames' columns and dtypes ("datetime" = UTC-aware datetime64; None = as pandas infers, e.g. strings).
Columns = tuple[tuple[str, str | None], ...]

RATINGS_COLUMNS: Columns = (
    ("rating_id", "int64"), ("round_id", None), ("rater_id", None), ("created_at", "datetime"), ("custom", "bool"),
    ("question", None), ("trait", None), ("pole", None), ("model", None), ("slot", "int64"), ("method", None),
    ("params", None), ("seed", "int64"), ("text", None), ("raw_text", None), ("trait_score", "int64"),
    ("fluency_score", "int64"), ("best", "bool"), ("output_id", "int64"),
)
PICKS_COLUMNS: Columns = (
    ("round_id", None), ("rater_id", None), ("trait", None), ("pole", None), ("custom", "bool"), ("method", None),
    ("best", "bool"),
)
VOTES_COLUMNS: Columns = (
    ("round_id", None), ("rater_id", None), ("trait", None), ("pole", None), ("custom", "bool"), ("method_a", None),
    ("method_b", None), ("outcome", None), ("created_at", "datetime"),
)
JUDGMENTS_COLUMNS: Columns = (
    ("output_id", "int64"), ("judge", None), ("trait_score", "float64"), ("fluency_score", "float64"),
)
OUTPUTS_COLUMNS: Columns = (
    ("round_id", None), ("kind", None), ("mode", None), ("rater_id", None), ("created_at", "datetime"),
    ("custom", "bool"), ("question", None), ("trait", None), ("pole", None), ("model", None), ("seconds", "float64"),
    ("output_id", "int64"), ("slot", "int64"), ("method", None), ("params", None), ("seed", "int64"),
    ("text", None), ("raw_text", None), ("n_tokens", "int64"), ("latency", "float64"),
)


def ratings_frame(session: Session) -> pd.DataFrame:
    query = (select(Rating.id, Rating.round_id, Rating.rater_id, Rating.created_at, Round.custom,
                    Round.question, Round.trait, Round.pole, Round.model, Output.slot, Output.method,
                    Output.params, Output.seed, Output.text, Output.raw_text, Rating.trait_score,
                    Rating.fluency_score, Pick.output_id, Output.id)
             .join(Round, Rating.round_id == Round.id)
             .join(Output, Rating.output_id == Output.id)
             .outerjoin(Pick, Pick.round_id == Rating.round_id)
             .order_by(Rating.id))
    rows = [(*row[:11], _json(row[11]), *row[12:17], row[17] is not None and row[17] == row[18], row[18])
            for row in session.execute(query)]
    return _frame(rows, RATINGS_COLUMNS)


def picks_frame(session: Session) -> pd.DataFrame:
    query = (select(Pick.round_id, Pick.rater_id, Round.trait, Round.pole, Round.custom, Output.method,
                    Pick.output_id, Output.id)
             .join(Round, Pick.round_id == Round.id)
             .join(Output, Output.round_id == Round.id)
             .where(Round.kind == "blind")
             .order_by(Pick.id, Output.slot))
    rows = [(*row[:6], row[6] == row[7]) for row in session.execute(query)]
    return _frame(rows, PICKS_COLUMNS)


def votes_frame(session: Session) -> pd.DataFrame:
    first, second = aliased(Output), aliased(Output)
    query = (select(Vote.round_id, Vote.rater_id, Round.trait, Round.pole, Round.custom, first.method,
                    second.method, Vote.outcome, Vote.created_at)
             .join(Round, Vote.round_id == Round.id)
             .join(first, and_(first.round_id == Vote.round_id, first.slot == 0))
             .join(second, and_(second.round_id == Vote.round_id, second.slot == 1))
             .order_by(Vote.id))
    rows = [tuple(row) for row in session.execute(query)]
    return _frame(rows, VOTES_COLUMNS)


def judgments_frame(session: Session) -> pd.DataFrame:
    query = select(JudgeScore.output_id, JudgeScore.judge, JudgeScore.trait_score,
                   JudgeScore.fluency_score).order_by(JudgeScore.id)
    rows = [tuple(row) for row in session.execute(query)]
    return _frame(rows, JUDGMENTS_COLUMNS)


def outputs_frame(session: Session) -> pd.DataFrame:
    query = (select(Round.id, Round.kind, Round.mode, Round.rater_id, Round.created_at, Round.custom,
                    Round.question, Round.trait, Round.pole, Round.model, Round.seconds, Output.id, Output.slot,
                    Output.method, Output.params, Output.seed, Output.text, Output.raw_text, Output.n_tokens,
                    Output.latency)
             .join(Output, Output.round_id == Round.id)
             .order_by(Round.created_at, Round.id, Output.slot))
    rows = [(*row[:14], _json(row[14]), *row[15:]) for row in session.execute(query)]
    return _frame(rows, OUTPUTS_COLUMNS)


def _frame(rows: Sequence[Sequence[Any]], columns: Columns) -> pd.DataFrame:
    """A frame with fixed columns and dtypes, so an empty database gives the same shape as a full one."""
    frame = pd.DataFrame.from_records(list(rows), columns=[name for name, _ in columns])
    for name, dtype in columns:
        if dtype == "datetime":
            frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[us, UTC]")
        elif dtype is not None:
            frame[name] = frame[name].astype(dtype)
    return frame


def _json(params: dict[str, Any] | None) -> str:
    return json.dumps(params if params is not None else {}, sort_keys=True)
