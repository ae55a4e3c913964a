"""The one object the rest of the studio talks to about storage: a few verbs, no SQL outside this package.

Why a single `Store` holding the engine and session factory (rather than module globals): tests and tools open
several stores on different files in one process, and a store closes cleanly with its engine.

SQLite is the default backend and the one the concurrency rules are written for:

* WAL journal, so the page's reads never wait for a writer and a writer never waits for readers;
* `busy_timeout`, so a writer waits for another writer instead of failing at once; past it the store raises
  `StoreBusy` and, because the transaction rolled back, nothing was half-saved;
* foreign keys on (SQLite leaves them off per connection);
* SQLAlchemy emits BEGIN itself (the sqlite3 driver's legacy mode would run SELECTs outside the transaction):
  every write verb opens `BEGIN IMMEDIATE`, taking the write lock before it reads, so its checks ("already rated?")
  and its inserts see one consistent database and a lock wait goes through the busy handler instead of failing
  with a stale snapshot. The UNIQUE constraints stay the last word for any other backend.

Opening a store migrates its database to this code's schema (`db.migrate`), so a file made by an older Persona
Studio keeps its rows and gains the new tables and columns.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from numbers import Integral
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, create_engine, event, exists, func, select
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased, sessionmaker
from sqlalchemy.pool import StaticPool

from .migrate import BEGIN_OPTION as _BEGIN_OPTION  # execution option read by the SQLite "begin" listener below
from .migrate import upgrade
from .schema import (KINDS, MODES, OUTCOMES, POLES, JudgeScore, Kind, Mode, Output, Pick, Pole, Rater, Rating, Round,
                     Vote, new_id, utcnow)

HOME_ENV = "PERSONA_STUDIO_HOME"
DB_ENV = "PERSONA_STUDIO_DB"
DB_FILENAME = "studio.sqlite"
DEFAULT_BUSY_TIMEOUT_MS = 15_000
SCORE_RANGE = (1, 5)

_RATER_ID = re.compile(r"[0-9a-f]{32}")  # what new_id() makes

_MSG_NO_ROUND = "no such round"
_MSG_NOT_YOURS = "this round was not issued to you"
_MSG_NOT_BLIND = "this is not a blind round; only blind rounds are rated"
_MSG_ALREADY = "this round was already rated"
_MSG_SCORES = "rate every answer (1–5) for trait and fluency before submitting"
_MSG_BEST = "pick the best portrayal among the answers before submitting"
_MSG_QUICK = "this is a quick-vote round: vote A, B, tie or both bad"
_MSG_FULL = "this round is rated in full: score every answer and pick the best portrayal"
_MSG_OUTCOME = "vote 'a', 'b', 'tie' or 'bad'"
_MSG_BUSY = "the database is busy (another writer holds it); nothing was saved — submit again"


class RatingRefused(ValueError):
    """A rating (or a view of a blind round) the store will not accept; the message is meant for the rater."""


class StoreBusy(RuntimeError):
    """SQLite stayed locked past the busy timeout. The transaction rolled back, so nothing was saved: retry."""


@dataclass(frozen=True)
class OutputIn:
    """One method's answer to record: `slot` is where the page shows it (for a blind round, after shuffling)."""

    slot: int
    method: str
    params: dict[str, Any]
    seed: int
    text: str
    n_tokens: int
    latency: float
    raw_text: str | None = None  # the model's untrimmed answer, when the page shows a trimmed `text`


@dataclass(frozen=True)
class RoundIn:
    """A round to record. `rater_id` is required for blind rounds (the round is issued to that rater).

    `mode` is how a blind round is rated: "full" (scores and a best pick, `record_rating`) or "quick" (a vote
    between the answers at slots 0 and 1, `record_vote`). A compare round is "full"."""

    kind: Kind
    question: str
    custom: bool
    trait: str
    pole: Pole
    model: str
    seconds: float
    outputs: list[OutputIn]
    rater_id: str | None = None
    mode: Mode = "full"


@dataclass(frozen=True)
class SlotView:
    """What a blind page may know before the vote: where an answer sits and what it says. Deliberately no method:
    anything on this object can reach the browser."""

    slot: int
    text: str


@dataclass(frozen=True)
class Reveal:
    """What a rater learns after voting: which method (and parameters) wrote the answer at each slot."""

    slot: int
    method: str
    params: dict[str, Any]
    text: str


def default_url() -> str:
    """`$PERSONA_STUDIO_DB` if set, else SQLite at `<data home>/studio.sqlite`.

    The data home matches `steering.settings.data_home` (`$PERSONA_STUDIO_HOME`, else `$XDG_CACHE_HOME` or
    `~/.cache`, then `persona-studio`); it is computed here rather than imported because `db/` must not import
    `steering/`. Read at call time so tests can point it elsewhere."""
    if os.environ.get(DB_ENV):
        return os.environ[DB_ENV]
    if os.environ.get(HOME_ENV):
        home = Path(os.environ[HOME_ENV]).expanduser()
    else:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "persona-studio"
    return URL.create("sqlite", database=str(home / DB_FILENAME)).render_as_string()


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or (database.startswith("file:") and "mode=memory" in database)


class Store:
    """The studio's storage: raters, rounds and their outputs, ratings and picks; read back as pandas frames."""

    def __init__(self, url: str | None = None, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        parsed = make_url(url if url is not None else default_url())
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._engine = self._make_engine(parsed)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        with self._translate_busy():
            upgrade(self._engine)

    def _make_engine(self, url: URL) -> Engine:
        if url.get_backend_name() != "sqlite":
            return create_engine(url)
        memory = _is_memory(url)
        if memory:
            # One shared connection, or each session would see its own empty database.
            engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            database = url.database or ""
            if not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # Pooled connections move between threads (Gradio workers), one user at a time.
            engine = create_engine(url, connect_args={"check_same_thread": False,
                                                      "timeout": self._busy_timeout_ms / 1000})
        busy_timeout_ms = self._busy_timeout_ms

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (below), not the driver
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
                if not memory:
                    _enable_wal(cursor, busy_timeout_ms / 1000)
                cursor.execute("PRAGMA foreign_keys = ON")
            finally:
                cursor.close()

        def on_begin(connection: Connection) -> None:
            mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
            connection.exec_driver_sql(f"BEGIN {mode}")

        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", on_begin)
        return engine

    @property
    def url(self) -> str:
        """The database URL, password hidden (safe to show in the UI footer or a log)."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Close every pooled connection (an in-memory database is gone after this)."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- transactions ------------------------------------------------------------------------------------------

    @contextmanager
    def _translate_busy(self) -> Iterator[None]:
        """Turn SQLite's "database is locked" (after the busy timeout) into `StoreBusy`; the caller's transaction
        has already rolled back when this runs, which is why the message can promise nothing was saved."""
        try:
            yield
        except OperationalError as err:
            text = str(err.orig).lower()
            if "locked" in text or "busy" in text:
                raise StoreBusy(_MSG_BUSY) from err
            raise

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A session in one write transaction: committed if the block ends normally, rolled back otherwise."""
        with self._translate_busy(), self._sessions() as session:
            session.connection(execution_options={_BEGIN_OPTION: "IMMEDIATE"})
            yield session
            session.commit()

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        """A session in one read transaction (a consistent snapshot under WAL), never committed."""
        with self._translate_busy(), self._sessions() as session:
            yield session

    # -- verbs ---------------------------------------------------------------------------------------------------

    def new_rater(self) -> str:
        """Create an anonymous rater and return its id (kept by the browser session, never shown)."""
        with self._writing() as session:
            rater = Rater(id=new_id(), created_at=utcnow())
            session.add(rater)
        return rater.id

    def record_round(self, round: RoundIn) -> str:
        """Insert a round and all its outputs in one transaction; return the round id (unguessable).

        Raises `ValueError` for a malformed round, and writes nothing then."""
        _check_round(round)
        round_id = new_id()
        with self._writing() as session:
            if round.rater_id is not None and session.get(Rater, round.rater_id) is None:
                raise ValueError(f"no rater with id {round.rater_id!r}: create one with new_rater()")
            session.add(Round(
                id=round_id, rater_id=round.rater_id, kind=round.kind, question=round.question,
                custom=bool(round.custom), trait=round.trait, pole=round.pole, model=round.model,
                created_at=utcnow(), seconds=float(round.seconds), mode=round.mode,
                outputs=[Output(slot=int(o.slot), method=o.method, params=dict(o.params), seed=int(o.seed),
                                text=o.text, n_tokens=int(o.n_tokens), latency=float(o.latency),
                                raw_text=o.raw_text)
                         for o in round.outputs],
            ))
        return round_id

    def round_for_rater(self, round_id: str, rater_id: str) -> list[SlotView]:
        """The answers of a blind round as its rater may see them before voting: slot and text, sorted by slot.

        Raises `RatingRefused` if the round does not exist or was not issued to this rater."""
        with self._reading() as session:
            found = session.get(Round, round_id)
            if found is None:
                raise RatingRefused(_MSG_NO_ROUND)
            if found.rater_id is None or found.rater_id != rater_id:
                raise RatingRefused(_MSG_NOT_YOURS)
            rows = session.execute(select(Output.slot, Output.text)
                                   .where(Output.round_id == round_id).order_by(Output.slot)).all()
        return [SlotView(slot=slot, text=text) for slot, text in rows]

    def record_rating(self, round_id: str, rater_id: str, scores: Mapping[int, tuple[int, int]],
                      best: int) -> list[Reveal]:
        """Record a rater's scores (slot -> (trait, fluency)) and best pick for a blind round; return the reveal.

        All or nothing: every check runs inside the write transaction and any refusal rolls it back, so a refused
        submission leaves no row. "Already rated" is checked first for a readable message, and the UNIQUE
        constraint on `picks.round_id` decides when two submissions race. A quick round is refused: it takes a
        vote (`record_vote`)."""
        with self._writing() as session:
            self._rateable(session, round_id, rater_id, "full")
            outputs = session.scalars(select(Output).where(Output.round_id == round_id)
                                      .order_by(Output.slot)).all()
            by_slot = {o.slot: o for o in outputs}
            checked = _check_scores(scores, by_slot)
            if not _is_int(best) or int(best) not in by_slot:
                raise RatingRefused(_MSG_BEST)
            now = utcnow()
            session.add(Pick(round_id=round_id, rater_id=rater_id, output_id=by_slot[int(best)].id,
                             created_at=now))
            session.add_all([Rating(round_id=round_id, output_id=by_slot[slot].id, rater_id=rater_id,
                                    trait_score=trait, fluency_score=fluency, created_at=now)
                             for slot, (trait, fluency) in sorted(checked.items())])
            reveal = [Reveal(slot=o.slot, method=o.method, params=dict(o.params), text=o.text) for o in outputs]
            try:
                session.flush()
            except IntegrityError as err:
                # Only uniqueness can fail here (the round, rater and outputs were just read): another submission
                # of this round committed first.
                raise RatingRefused(_MSG_ALREADY) from err
        return reveal

    def record_vote(self, round_id: str, rater_id: str, outcome: str) -> list[Reveal]:
        """Record a rater's vote on a quick round ("a": the answer at slot 0 is better, "b": slot 1, "tie", or
        "bad": both are bad) and return the reveal.

        As in `record_rating`, every check runs inside one write transaction and a refusal writes nothing; the
        UNIQUE constraint on `votes.round_id` decides when two votes race."""
        with self._writing() as session:
            self._rateable(session, round_id, rater_id, "quick")
            if not isinstance(outcome, str) or outcome not in OUTCOMES:
                raise RatingRefused(_MSG_OUTCOME)
            outputs = session.scalars(select(Output).where(Output.round_id == round_id)
                                      .order_by(Output.slot)).all()
            session.add(Vote(round_id=round_id, rater_id=rater_id, outcome=outcome, created_at=utcnow()))
            reveal = [Reveal(slot=o.slot, method=o.method, params=dict(o.params), text=o.text) for o in outputs]
            try:
                session.flush()
            except IntegrityError as err:  # another vote on this round committed first
                raise RatingRefused(_MSG_ALREADY) from err
        return reveal

    def _rateable(self, session: Session, round_id: str, rater_id: str, mode: str) -> None:
        """Refuse (`RatingRefused`) unless the round exists, is blind, was issued to this rater, is rated in `mode`
        and was not rated yet. Ownership is checked before the mode so a stranger learns nothing about the round."""
        found = session.get(Round, round_id)
        if found is None:
            raise RatingRefused(_MSG_NO_ROUND)
        if found.kind != "blind":
            raise RatingRefused(_MSG_NOT_BLIND)
        if found.rater_id != rater_id:
            raise RatingRefused(_MSG_NOT_YOURS)
        if found.mode != mode:
            raise RatingRefused(_MSG_QUICK if found.mode == "quick" else _MSG_FULL)
        if self._already_rated(session, round_id):
            raise RatingRefused(_MSG_ALREADY)

    @staticmethod
    def _already_rated(session: Session, round_id: str) -> bool:
        """Whether the round has a pick or a vote (either one rates it)."""
        picked = exists().where(Pick.round_id == round_id)
        voted = exists().where(Vote.round_id == round_id)
        return bool(session.scalar(select(picked | voted)))

    def rater_exists(self, rater_id: object) -> bool:
        """Whether a rater with this id exists. Anything that is not an id `new_rater` could have made (32 lowercase
        hex digits) is False without a query, so a cookie or URL value can be checked as it comes."""
        if not isinstance(rater_id, str) or not _RATER_ID.fullmatch(rater_id):
            return False
        with self._reading() as session:
            return session.get(Rater, rater_id) is not None

    def rated_rounds(self, rater_id: str) -> int:
        """How many blind rounds this rater has rated: full ratings (one pick each) plus quick votes."""
        picks = select(func.count()).select_from(Pick).where(Pick.rater_id == rater_id).scalar_subquery()
        votes = select(func.count()).select_from(Vote).where(Vote.rater_id == rater_id).scalar_subquery()
        with self._reading() as session:
            return int(session.scalar(select(picks + votes)) or 0)

    def unrated_rounds(self, rater_id: str, since: datetime | None = None) -> int:
        """How many blind rounds were issued to this rater (after `since`, if given) and are still waiting for a
        pick or a vote (rounds a rater asked for and left; a cap on recent ones keeps one session from generating
        without rating, and lets an abandoned round stop counting after a while)."""
        query = (select(func.count()).select_from(Round)
                 .where(Round.kind == "blind", Round.rater_id == rater_id,
                        ~exists().where(Pick.round_id == Round.id), ~exists().where(Vote.round_id == Round.id)))
        if since is not None:
            query = query.where(Round.created_at >= since)
        with self._reading() as session:
            return int(session.scalar(query) or 0)

    # -- reading -------------------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Row counts per table (raters, rounds, outputs, ratings, picks, votes) and per kind of round:
        blind_rounds, compare_rounds, rated_rounds (blind rounds with a pick or a vote), for the UI footer and tests.
        One read transaction, so the numbers agree with each other."""
        tables = {"raters": Rater, "rounds": Round, "outputs": Output, "ratings": Rating, "picks": Pick, "votes": Vote}
        with self._reading() as session:
            counts = {name: int(session.scalar(select(func.count()).select_from(model)) or 0)
                      for name, model in tables.items()}
            by_kind = dict(session.execute(select(Round.kind, func.count()).group_by(Round.kind)).tuples().all())
        counts["blind_rounds"] = int(by_kind.get("blind", 0))
        counts["compare_rounds"] = int(by_kind.get("compare", 0))
        counts["rated_rounds"] = counts["picks"] + counts["votes"]
        return counts

    def ratings_frame(self) -> pd.DataFrame:
        """One row per rating, with its round, its output and whether that output was the round's pick."""
        query = (select(Rating.id, Rating.round_id, Rating.rater_id, Rating.created_at, Round.custom,
                        Round.question, Round.trait, Round.pole, Round.model, Output.slot, Output.method,
                        Output.params, Output.seed, Output.text, Output.raw_text, Rating.trait_score,
                        Rating.fluency_score, Pick.output_id, Output.id)
                 .join(Round, Rating.round_id == Round.id)
                 .join(Output, Rating.output_id == Output.id)
                 .outerjoin(Pick, Pick.round_id == Rating.round_id)
                 .order_by(Rating.id))
        with self._reading() as session:
            rows = [(*row[:11], _json(row[11]), *row[12:17], row[17] is not None and row[17] == row[18], row[18])
                    for row in session.execute(query)]
        return _frame(rows, RATINGS_COLUMNS)

    def picks_frame(self) -> pd.DataFrame:
        """One row per (picked blind round, output shown in it): the picked method beat every other one shown.

        This is the input of a Bradley-Terry fit."""
        query = (select(Pick.round_id, Pick.rater_id, Round.trait, Round.pole, Round.custom, Output.method,
                        Pick.output_id, Output.id)
                 .join(Round, Pick.round_id == Round.id)
                 .join(Output, Output.round_id == Round.id)
                 .where(Round.kind == "blind")
                 .order_by(Pick.id, Output.slot))
        with self._reading() as session:
            rows = [(*row[:6], row[6] == row[7]) for row in session.execute(query)]
        return _frame(rows, PICKS_COLUMNS)

    def votes_frame(self) -> pd.DataFrame:
        """One row per quick vote with its round and the two methods it compared: `method_a` wrote the answer at
        slot 0, `method_b` the one at slot 1, so outcome "a" means method_a won. Input of the arena-style fit
        (which leaves "bad" out)."""
        first, second = aliased(Output), aliased(Output)
        query = (select(Vote.round_id, Vote.rater_id, Round.trait, Round.pole, Round.custom, first.method,
                        second.method, Vote.outcome, Vote.created_at)
                 .join(Round, Vote.round_id == Round.id)
                 .join(first, and_(first.round_id == Vote.round_id, first.slot == 0))
                 .join(second, and_(second.round_id == Vote.round_id, second.slot == 1))
                 .order_by(Vote.id))
        with self._reading() as session:
            rows = [tuple(row) for row in session.execute(query)]
        return _frame(rows, VOTES_COLUMNS)

    def record_judgments(self, judge: str, scores: Mapping[int, tuple[float | None, float | None]]) -> int:
        """Store a judge's (trait, fluency) scores per output id; outputs this judge already scored are skipped
        (a judgment, like a rating, is never overwritten). Returns how many rows were written."""
        with self._writing() as session:
            done = set(session.scalars(select(JudgeScore.output_id).where(JudgeScore.judge == judge)))
            new = [JudgeScore(output_id=int(o), judge=judge, created_at=utcnow(),
                              trait_score=None if t is None else float(t), fluency_score=None if f is None else float(f))
                   for o, (t, f) in scores.items() if int(o) not in done]
            session.add_all(new)
        return len(new)

    def judgments_frame(self) -> pd.DataFrame:
        """One row per judged output: output_id, judge, trait_score, fluency_score (NaN where missing)."""
        query = select(JudgeScore.output_id, JudgeScore.judge, JudgeScore.trait_score,
                       JudgeScore.fluency_score).order_by(JudgeScore.id)
        with self._reading() as session:
            rows = [tuple(row) for row in session.execute(query)]
        return _frame(rows, JUDGMENTS_COLUMNS)

    def outputs_frame(self) -> pd.DataFrame:
        """One row per output with its round's columns (compare history, judge agreement)."""
        query = (select(Round.id, Round.kind, Round.mode, Round.rater_id, Round.created_at, Round.custom,
                        Round.question, Round.trait, Round.pole, Round.model, Round.seconds, Output.id, Output.slot,
                        Output.method, Output.params, Output.seed, Output.text, Output.raw_text, Output.n_tokens,
                        Output.latency)
                 .join(Output, Output.round_id == Round.id)
                 .order_by(Round.created_at, Round.id, Output.slot))
        with self._reading() as session:
            rows = [(*row[:14], _json(row[14]), *row[15:]) for row in session.execute(query)]
        return _frame(rows, OUTPUTS_COLUMNS)


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


def _frame(rows: Sequence[Sequence[Any]], columns: Columns) -> pd.DataFrame:
    """A frame with fixed columns and dtypes, so an empty database gives the same shape as a full one."""
    frame = pd.DataFrame.from_records(list(rows), columns=[name for name, _ in columns])
    for name, dtype in columns:
        if dtype == "datetime":
            frame[name] = pd.to_datetime(frame[name], utc=True).astype("datetime64[us, UTC]")
        elif dtype is not None:
            frame[name] = frame[name].astype(dtype)
    return frame


def _enable_wal(cursor: sqlite3.Cursor, timeout_s: float) -> None:
    """Switch a new connection's file to WAL, waiting out another connection that holds the file meanwhile.

    Switching needs an exclusive lock, and SQLite can answer "database is locked" at once, without the busy wait,
    when another process is switching the same fresh file or writing it; two studio processes that create the
    file at the same moment hit exactly that. Retried with a short backoff up to the busy timeout, then raised
    (the store turns it into `StoreBusy`)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err).lower() or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _json(params: dict[str, Any] | None) -> str:
    return json.dumps(params if params is not None else {}, sort_keys=True)


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_round(round: RoundIn) -> None:
    """Refuse a malformed round before touching the database (existence of the rater is checked inside it)."""
    if round.kind not in KINDS:
        raise ValueError(f"a round's kind is 'compare' or 'blind', not {round.kind!r}")
    if round.pole not in POLES:
        raise ValueError(f"a round's pole is 'high' or 'low', not {round.pole!r}")
    if round.mode not in MODES:
        raise ValueError(f"a round's mode is 'full' or 'quick', not {round.mode!r}")
    if round.mode == "quick" and round.kind != "blind":
        raise ValueError("a quick round is a blind vote between two answers: its kind must be 'blind'")
    if round.kind == "blind" and not round.rater_id:
        raise ValueError("a blind round is issued to a rater: give its rater_id")
    if not round.outputs:
        raise ValueError("a round needs at least one output")
    slots = [o.slot for o in round.outputs]
    if not all(_is_int(s) and s >= 0 for s in slots):
        raise ValueError(f"output slots are integers from 0, got {slots}")
    if len(set(slots)) != len(slots):
        raise ValueError(f"output slots must be unique within a round, got {slots}")
    if round.mode == "quick" and sorted(slots) != [0, 1]:
        raise ValueError(f"a quick round shows exactly 2 answers, at slots 0 and 1 (A and B), got slots {slots}")
    for output in round.outputs:
        try:
            json.dumps(output.params, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"the params of slot {output.slot} ({output.method}) are not plain JSON: {err}") from err
        if not isinstance(output.params, dict):
            raise ValueError(f"the params of slot {output.slot} ({output.method}) must be a dict")
        if output.raw_text is not None and not isinstance(output.raw_text, str):
            raise ValueError(f"the raw_text of slot {output.slot} ({output.method}) is a string or None")


def _check_scores(scores: Mapping[int, tuple[int, int]], by_slot: Mapping[int, Output]) -> dict[int, tuple[int, int]]:
    """The scores as {slot: (trait, fluency)} ints, or `RatingRefused` unless they cover exactly the round's slots
    with two integers in 1..5 each."""
    low, high = SCORE_RANGE
    if not isinstance(scores, Mapping) or not all(_is_int(k) for k in scores) or set(scores) != set(by_slot):
        raise RatingRefused(_MSG_SCORES)
    checked: dict[int, tuple[int, int]] = {}
    for slot, pair in scores.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise RatingRefused(_MSG_SCORES)
        if not all(_is_int(v) and low <= v <= high for v in pair):
            raise RatingRefused(_MSG_SCORES)
        checked[int(slot)] = (int(pair[0]), int(pair[1]))
    return checked
