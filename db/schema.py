"""The studio's tables, as SQLAlchemy 2 typed declarative models.

Every vote is an immutable row (the arena convention): a rating or a pick is inserted once and never updated or
deleted, so the file is an audit log that any analysis can replay. Invariants that must survive a race between two
browser tabs (one pick per round, one rating per output and rater, scores in 1..5) live in the schema as UNIQUE and
CHECK constraints, not only in Python, because only the database sees both writers.

Method, trait and model names are free strings: the storage does not know the steering methods (it never imports
`steering/`), so adding a method needs no migration. `kind`, `pole`, `mode` and a vote's `outcome` are closed sets and
are checked here.

A change to these models needs a revision in `db/migrations/versions/` too: databases in the field are brought up to
date by `db.migrate.upgrade` when a `Store` opens them, and a test compares the migrated schema with these models.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal, get_args

from sqlalchemy import JSON, CheckConstraint, DateTime, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

Kind = Literal["compare", "blind"]
Pole = Literal["high", "low"]
Mode = Literal["full", "quick"]
Outcome = Literal["a", "b", "tie", "bad"]

KINDS: tuple[str, ...] = get_args(Kind)
POLES: tuple[str, ...] = get_args(Pole)
MODES: tuple[str, ...] = get_args(Mode)
OUTCOMES: tuple[str, ...] = get_args(Outcome)

_ID_LENGTH = 32  # uuid4().hex


def new_id() -> str:
    """A random 128-bit id as 32 hex digits: unguessable, so a round id handed to a page cannot be enumerated."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: raters sit in any timezone, the log must not depend on the server's."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored in UTC and read back timezone-aware.

    SQLite has no timezone type and returns naive datetimes; normalising on the way in and tagging on the way out
    keeps comparisons and pandas conversions unambiguous on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a naive datetime has no timezone; pass a UTC-aware one (db.schema.utcnow())")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Rater(Base):
    """An anonymous browser session: no name, no login, only an id the store made, so ratings can be grouped by
    rater (and a round checked against the rater it was issued to) without collecting personal data."""

    __tablename__ = "raters"

    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Round(Base):
    """One question answered by several methods in one batched generate call.

    A compare round is shown with its method names and may have no rater; a blind round is issued to one rater,
    who sees the answers at shuffled slots and learns the methods only after voting.

    `mode` says how a blind round is rated: "full" scores every answer 1-5 for trait and fluency and picks the best
    (a `Pick` and `Rating`s); "quick" is an arena-style vote between exactly two answers (a `Vote`). A compare round
    is never rated, and is "full" so that "quick" always means a two-answer blind round."""

    __tablename__ = "rounds"
    __table_args__ = (
        CheckConstraint(f"kind IN {KINDS!r}", name="ck_rounds_kind"),
        CheckConstraint(f"pole IN {POLES!r}", name="ck_rounds_pole"),
        CheckConstraint("kind = 'compare' OR rater_id IS NOT NULL", name="ck_rounds_blind_has_rater"),
        CheckConstraint(f"mode IN {MODES!r}", name="ck_rounds_mode"),
        CheckConstraint("kind = 'blind' OR mode = 'full'", name="ck_rounds_quick_is_blind"),
    )

    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True, default=new_id)
    rater_id: Mapped[str | None] = mapped_column(ForeignKey("raters.id"), index=True)
    kind: Mapped[Kind] = mapped_column(String(8))
    question: Mapped[str] = mapped_column(Text)
    custom: Mapped[bool]
    trait: Mapped[str] = mapped_column(String(32))
    pole: Mapped[Pole] = mapped_column(String(4))
    model: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    seconds: Mapped[float]
    mode: Mapped[Mode] = mapped_column(String(8), default="full", server_default="full")

    outputs: Mapped[list[Output]] = relationship(back_populates="round", order_by="Output.slot")


class Output(Base):
    """One method's answer in a round, at the slot the page showed it (for blind rounds, the shuffled position).

    `text` is what the page showed (the studio trims an answer to its last complete sentence); `raw_text` is the
    model's untrimmed answer, kept so an analysis can tell the trimming from the model. It is NULL for rows written
    before it existed."""

    __tablename__ = "outputs"
    __table_args__ = (
        UniqueConstraint("round_id", "slot", name="uq_outputs_round_slot"),
        CheckConstraint("slot >= 0", name="ck_outputs_slot"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id"), index=True)
    slot: Mapped[int]
    method: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    seed: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    n_tokens: Mapped[int]
    latency: Mapped[float]
    raw_text: Mapped[str | None] = mapped_column(Text)

    round: Mapped[Round] = relationship(back_populates="outputs")


class Rating(Base):
    """A rater's two 1-5 scores for one answer: how strongly it shows the trait pole, and how fluent it reads."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("output_id", "rater_id", name="uq_ratings_output_rater"),
        CheckConstraint("trait_score BETWEEN 1 AND 5", name="ck_ratings_trait_score"),
        CheckConstraint("fluency_score BETWEEN 1 AND 5", name="ck_ratings_fluency_score"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id"), index=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id"))
    rater_id: Mapped[str] = mapped_column(ForeignKey("raters.id"), index=True)
    trait_score: Mapped[int]
    fluency_score: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pick(Base):
    """The "best portrayal" vote of a blind round. `round_id` is UNIQUE: a round is rated once, and this constraint
    is what makes that true when two submissions race."""

    __tablename__ = "picks"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id"), unique=True)
    rater_id: Mapped[str] = mapped_column(ForeignKey("raters.id"), index=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Vote(Base):
    """The vote of a quick round: which of its two answers is better ("a" = the answer at slot 0, "b" = slot 1),
    "tie", or "bad" (both bad). `round_id` is UNIQUE, like `Pick.round_id`: that constraint is what decides when two
    submissions race. A "bad" vote is kept (it says something about both answers) but the leaderboard leaves it out
    of the fit, which has no outcome for "neither"."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("round_id", name="uq_votes_round"),
        CheckConstraint(f"outcome IN {OUTCOMES!r}", name="ck_votes_outcome"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id"))
    rater_id: Mapped[str] = mapped_column(ForeignKey("raters.id"), index=True)
    outcome: Mapped[Outcome] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JudgeScore(Base):
    """An automatic judge's scores for one output (the LLM judge, or the offline proxy), kept beside the human
    ratings so the results can show how far the two agree. One row per (output, judge); a missing score is NULL."""

    __tablename__ = "judgments"
    __table_args__ = (UniqueConstraint("output_id", "judge", name="uq_judgments_output_judge"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id"), index=True)
    judge: Mapped[str] = mapped_column(String(200))
    trait_score: Mapped[float | None]
    fluency_score: Mapped[float | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
