"""The one object the rest of the studio talks to about storage: a few verbs, no SQL outside this package.

Why a single `Store` holding the engine and session factory (rather than module globals): tests and tools open
several stores on different files in one process, and a store closes cleanly with its engine.

SQLite is the default backend and the one the concurrency rules are written for; `db.engine` sets its connections
up and spells the rules out. Here they take this shape: every write verb runs in one transaction (`_writing`) that
opens `BEGIN IMMEDIATE`, taking the write lock before it reads, so its checks ("already rated?") and its inserts see
one consistent database; a lock held past the busy timeout raises `StoreBusy`, and because the transaction rolled
back, nothing was half-saved. Every read runs in one read transaction (`_reading`), a consistent snapshot under WAL.

On PostgreSQL (several replicas can share one database) BEGIN takes no lock: write transactions run side by side
under READ COMMITTED, so a check can pass in two of them at once, and the UNIQUE constraints decide. The second
rating or vote of a round waits for the first at its insert and is refused as "already rated" (`_flush_reveal`); a
judgment stored by two judge runs at once is kept once (`record_judgments` tries again). Reads run at REPEATABLE
READ there, so a read of several statements (`counts`) sees one snapshot, as on SQLite.

Opening a store migrates its database to this code's schema (`db.migrate`), so a file made by an older Persona
Studio keeps its rows and gains the new tables and columns.

The rest of the package, one idea a module: `db.checks` (the records that go in and out, and the refusals),
`db.frames` (the read side as pandas frames), `db.engine` (the URL and the SQLite connection rules), `db.schema`
(the tables), `db.migrate` (bringing a database to the schema).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime

import pandas as pd
from sqlalchemy import exists, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from . import frames
from .checks import (MSG_ALREADY, SCORE_RANGE, OutputIn, RatingRefused, Reveal, RoundIn, SlotView, check_best,
                     check_outcome, check_rateable, check_round, check_scores, check_viewer, is_rater_id)
from .engine import (DB_ENV, DB_FILENAME, DEFAULT_BUSY_TIMEOUT_MS, HOME_ENV, StoreBusy, default_url, make_engine,
                     translate_busy)
from .frames import JUDGMENTS_COLUMNS, OUTPUTS_COLUMNS, PICKS_COLUMNS, RATINGS_COLUMNS, VOTES_COLUMNS, Columns
from .migrate import BEGIN_OPTION as _BEGIN_OPTION  # execution option read by the SQLite "begin" listener (db.engine)
from .migrate import upgrade
from .schema import JudgeScore, Output, Pick, Rater, Rating, Round, Vote, new_id, utcnow

# Tries of `record_judgments` when another run stored some of the same judgments meanwhile: a lost race means the
# other run committed, so the next try skips its outputs; a third try covers a third run racing on the same rows.
_JUDGMENT_TRIES = 3

# Names that lived in this module before it was split, re-exported so `from db.store import X` keeps working.
__all__ = ["DB_ENV", "DB_FILENAME", "DEFAULT_BUSY_TIMEOUT_MS", "HOME_ENV", "JUDGMENTS_COLUMNS", "OUTPUTS_COLUMNS",
           "PICKS_COLUMNS", "RATINGS_COLUMNS", "SCORE_RANGE", "VOTES_COLUMNS", "Columns", "OutputIn", "RatingRefused",
           "Reveal", "RoundIn", "SlotView", "Store", "StoreBusy", "default_url"]


class Store:
    """The studio's storage: raters, rounds and their outputs, ratings and picks; read back as pandas frames."""

    def __init__(self, url: str | None = None, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        parsed = make_url(url if url is not None else default_url())
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._engine = make_engine(parsed, self._busy_timeout_ms)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        # PostgreSQL's default, READ COMMITTED, takes a new snapshot for every statement: a read of several statements
        # (`counts`) would mix what was committed between them. REPEATABLE READ keeps one snapshot per transaction, and
        # a transaction that only reads never fails to serialise there. SQLite's read transaction is one snapshot.
        self._read_options = {"isolation_level": "REPEATABLE READ"} if parsed.get_backend_name() == "postgresql" else {}
        with translate_busy(log=False):  # the cause is the exception's; app.py names it in its one line
            upgrade(self._engine)

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
    def _writing(self) -> Iterator[Session]:
        """A session in one write transaction: committed if the block ends normally, rolled back otherwise."""
        with translate_busy(), self._sessions() as session:
            session.connection(execution_options={_BEGIN_OPTION: "IMMEDIATE"})
            yield session
            session.commit()

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        """A session in one read transaction (one consistent snapshot: WAL on SQLite, REPEATABLE READ on
        PostgreSQL), never committed."""
        with translate_busy(), self._sessions() as session:
            if self._read_options:
                session.connection(execution_options=self._read_options)
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
        check_round(round)
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
            check_viewer(session.get(Round, round_id), rater_id)
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
            outputs = _outputs(session, round_id)
            by_slot = {o.slot: o for o in outputs}
            checked = check_scores(scores, by_slot)
            best_slot = check_best(best, by_slot)
            now = utcnow()
            session.add(Pick(round_id=round_id, rater_id=rater_id, output_id=by_slot[best_slot].id,
                             created_at=now))
            session.add_all([Rating(round_id=round_id, output_id=by_slot[slot].id, rater_id=rater_id,
                                    trait_score=trait, fluency_score=fluency, created_at=now)
                             for slot, (trait, fluency) in sorted(checked.items())])
            reveal = _flush_reveal(session, outputs)
        return reveal

    def record_vote(self, round_id: str, rater_id: str, outcome: str) -> list[Reveal]:
        """Record a rater's vote on a quick round ("a": the answer at slot 0 is better, "b": slot 1, "tie", or
        "bad": both are bad) and return the reveal.

        As in `record_rating`, every check runs inside one write transaction and a refusal writes nothing; the
        UNIQUE constraint on `votes.round_id` decides when two votes race."""
        with self._writing() as session:
            self._rateable(session, round_id, rater_id, "quick")
            check_outcome(outcome)
            outputs = _outputs(session, round_id)
            session.add(Vote(round_id=round_id, rater_id=rater_id, outcome=outcome, created_at=utcnow()))
            reveal = _flush_reveal(session, outputs)
        return reveal

    def _rateable(self, session: Session, round_id: str, rater_id: str, mode: str) -> None:
        """Refuse (`RatingRefused`) unless the round exists, is blind, was issued to this rater, is rated in `mode`
        (`check_rateable`) and was not rated yet."""
        check_rateable(session.get(Round, round_id), rater_id, mode)
        if self._already_rated(session, round_id):
            raise RatingRefused(MSG_ALREADY)

    @staticmethod
    def _already_rated(session: Session, round_id: str) -> bool:
        """Whether the round has a pick or a vote (either one rates it)."""
        picked = exists().where(Pick.round_id == round_id)
        voted = exists().where(Vote.round_id == round_id)
        return bool(session.scalar(select(picked | voted)))

    def rater_exists(self, rater_id: object) -> bool:
        """Whether a rater with this id exists. Anything that is not an id `new_rater` could have made (32 lowercase
        hex digits) is False without a query, so a cookie or URL value can be checked as it comes."""
        if not is_rater_id(rater_id):
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

    def record_judgments(self, judge: str, scores: Mapping[int, tuple[float | None, float | None]]) -> int:
        """Store a judge's (trait, fluency) scores per output id; outputs this judge already scored are skipped
        (a judgment, like a rating, is never overwritten). Returns how many rows were written.

        Two runs of one judge may store the same outputs at once (two replicas on one PostgreSQL database, where no
        write lock serialises the check and the insert as SQLite's does): the second to insert meets the first's
        committed rows at the UNIQUE constraint, rolls back and goes again, skipping them now, as if it had come
        second. Any other IntegrityError (an output id that does not exist) fails every try and is raised."""
        tries = 1
        while True:
            try:
                return self._judgments_once(judge, scores)
            except IntegrityError:
                if tries >= _JUDGMENT_TRIES:
                    raise
                tries += 1

    def _judgments_once(self, judge: str, scores: Mapping[int, tuple[float | None, float | None]]) -> int:
        """One try of `record_judgments`: in one write transaction, skip what this judge scored and insert the rest."""
        with self._writing() as session:
            done = set(session.scalars(select(JudgeScore.output_id).where(JudgeScore.judge == judge)))
            new = [JudgeScore(output_id=int(o), judge=judge, created_at=utcnow(),
                              trait_score=None if t is None else float(t),
                              fluency_score=None if f is None else float(f))
                   for o, (t, f) in scores.items() if int(o) not in done]
            session.add_all(new)
        return len(new)

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
        with self._reading() as session:
            return frames.ratings_frame(session)

    def picks_frame(self) -> pd.DataFrame:
        """One row per (picked blind round, output shown in it): the picked method beat every other one shown.

        This is the input of a Bradley-Terry fit."""
        with self._reading() as session:
            return frames.picks_frame(session)

    def votes_frame(self) -> pd.DataFrame:
        """One row per quick vote with its round and the two methods it compared: `method_a` wrote the answer at
        slot 0, `method_b` the one at slot 1, so outcome "a" means method_a won. Input of the arena-style fit
        (which leaves "bad" out)."""
        with self._reading() as session:
            return frames.votes_frame(session)

    def judgments_frame(self) -> pd.DataFrame:
        """One row per judged output: output_id, judge, trait_score, fluency_score (NaN where missing)."""
        with self._reading() as session:
            return frames.judgments_frame(session)

    def outputs_frame(self) -> pd.DataFrame:
        """One row per output with its round's columns (compare history, judge agreement)."""
        with self._reading() as session:
            return frames.outputs_frame(session)


def _outputs(session: Session, round_id: str) -> Sequence[Output]:
    """The round's outputs, by slot."""
    return session.scalars(select(Output).where(Output.round_id == round_id).order_by(Output.slot)).all()


def _flush_reveal(session: Session, outputs: Sequence[Output]) -> list[Reveal]:
    """Flush a rating's (or a vote's) rows and return the reveal: which method wrote each of `outputs`.

    Only uniqueness can fail at this flush (the round, rater and outputs were just read in this transaction):
    another submission of this round committed first, so the rater is told it was already rated."""
    reveal = [Reveal(slot=o.slot, method=o.method, params=dict(o.params), text=o.text) for o in outputs]
    try:
        session.flush()
    except IntegrityError as err:
        raise RatingRefused(MSG_ALREADY) from err
    return reveal
