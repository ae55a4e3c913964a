"""The storage: schema constraints, the blind rating cycle and the quick vote, refusals that write nothing, the
default location, concurrent submissions on a shared database, and a locked database.

Every test that takes `store` runs twice: on in-memory SQLite and on a fresh database of a throw-away PostgreSQL
server (conftest.postgres_cluster). The concurrency tests run on a SQLite file and on PostgreSQL: the two keep a round
rated once by different means (SQLite's write lock serialises the writers; PostgreSQL lets them run side by side
under READ COMMITTED and the UNIQUE constraints decide), so each backend is tested on its own."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

import db
from db import OutputIn, RatingRefused, Reveal, RoundIn, SchemaTooNew, SlotView, Store, StoreBusy
from db.schema import Base, Output, Pick, Rating, Round, Vote, utcnow
from helpers import all_scores, quick_round, run_together

METHODS = ("base", "simple", "p2", "sft", "npti")
SHUFFLED = (3, 0, 4, 1, 2)  # the slot of METHODS[i]


def blind_round(rater_id: str | None, kind: str = "blind", n: int = 5) -> RoundIn:
    """A round with the five methods at shuffled slots; texts never mention a method name."""
    outputs = [OutputIn(slot=SHUFFLED[i], method=METHODS[i], params={"strength": 1.25, "top_neurons": "all"},
                        seed=100 + i, text=f"Answer text number {i}.", n_tokens=20 + i, latency=0.5 + i)
               for i in range(n)]
    return RoundIn(kind=kind, question="How do you spend a free evening?", custom=False, trait="Extraversion",
                   pole="high", model="tiny-test", seconds=2.5, outputs=outputs, rater_id=rater_id)


COUNT_KEYS = {"raters", "rounds", "outputs", "ratings", "picks", "votes", "blind_rounds", "compare_rounds",
              "rated_rounds"}


def file_url(path: Path) -> str:
    return f"sqlite:///{path}"


STORE_BACKENDS = ["sqlite", "postgresql"] + (["env"] if os.environ.get("PERSONA_STUDIO_TEST_DB") else [])


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh, empty store on each backend: in-memory SQLite, and a PostgreSQL database made for this test and
    dropped after it. Set PERSONA_STUDIO_TEST_DB to another SQLAlchemy URL to run the same tests there too (its
    tables are dropped after each test, as it is not ours to drop)."""
    if request.param == "sqlite":
        url = "sqlite://"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = os.environ["PERSONA_STUDIO_TEST_DB"]
    s = Store(url)
    try:
        yield s
    finally:
        if request.param == "env":
            Base.metadata.drop_all(s._engine)
            with s._engine.begin() as connection:  # or the next store would find the version and no tables
                connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        s.close()


@pytest.fixture(params=["sqlite-file", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database that several connections write at once: a SQLite file (WAL, the write lock) or a PostgreSQL
    database of its own (row locks, READ COMMITTED)."""
    if request.param == "sqlite-file":
        return file_url(tmp_path / "shared.sqlite")
    return request.getfixturevalue("postgres_url")


# -- schema ------------------------------------------------------------------------------------------------------


def test_public_names():
    assert set(db.__all__) == {"RatingRefused", "StoreBusy", "RoundIn", "OutputIn", "SlotView", "Reveal", "Store",
                               "SchemaTooNew"}
    assert issubclass(RatingRefused, ValueError) and issubclass(StoreBusy, RuntimeError)
    assert issubclass(SchemaTooNew, RuntimeError)


def test_tables_and_columns(store):
    insp = inspect(store._engine)
    columns = {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}
    assert columns == {
        "raters": {"id", "created_at"},
        "rounds": {"id", "rater_id", "kind", "question", "custom", "trait", "pole", "model", "created_at",
                   "seconds", "mode"},
        "outputs": {"id", "round_id", "slot", "method", "params", "seed", "text", "n_tokens", "latency", "raw_text"},
        "ratings": {"id", "round_id", "output_id", "rater_id", "trait_score", "fluency_score", "created_at"},
        "picks": {"id", "round_id", "rater_id", "output_id", "created_at"},
        "votes": {"id", "round_id", "rater_id", "outcome", "created_at"},
        "judgments": {"id", "output_id", "judge", "trait_score", "fluency_score", "created_at"},
        "alembic_version": {"version_num"},
    }
    uniques = {t: {tuple(u["column_names"]) for u in insp.get_unique_constraints(t)} for t in columns}
    assert ("round_id", "slot") in uniques["outputs"]
    assert ("output_id", "rater_id") in uniques["ratings"]
    assert ("round_id",) in uniques["picks"]
    assert ("round_id",) in uniques["votes"]
    mode = next(c for c in insp.get_columns("rounds") if c["name"] == "mode")
    assert not mode["nullable"] and "full" in str(mode["default"])
    assert next(c for c in insp.get_columns("outputs") if c["name"] == "raw_text")["nullable"]


@pytest.mark.parametrize("kind, mode", [("blind", "fast"), ("compare", "quick")])
def test_round_mode_is_checked_by_the_schema(store, kind, mode):
    """The closed set of modes, and "quick only for blind rounds", hold even for a writer that skips the store."""
    rater = store.new_rater()
    with store._sessions() as session:
        session.add(Round(id="e" * 32, rater_id=rater, kind=kind, question="q", custom=False, trait="t", pole="high",
                          model="m", created_at=utcnow(), seconds=1.0, mode=mode))
        with pytest.raises(IntegrityError, match="(?i)check"):
            session.commit()


def test_vote_outcome_is_checked_and_unique_per_round(store):
    rater = store.new_rater()
    round_id = store.record_round(quick_round(rater))
    with store._sessions() as session:
        session.add(Vote(round_id=round_id, rater_id=rater, outcome="c", created_at=utcnow()))
        with pytest.raises(IntegrityError, match="(?i)check"):
            session.commit()
        session.rollback()
        session.add(Vote(round_id=round_id, rater_id=rater, outcome="tie", created_at=utcnow()))
        session.commit()
        session.add(Vote(round_id=round_id, rater_id=rater, outcome="a", created_at=utcnow()))
        with pytest.raises(IntegrityError, match="(?i)unique"):
            session.commit()


def test_second_pick_for_a_round_violates_unique(store):
    rater = store.new_rater()
    round_id = store.record_round(blind_round(rater))
    with store._sessions() as session:
        output_id = session.scalar(select(Output.id).where(Output.round_id == round_id, Output.slot == 0))
        session.add(Pick(round_id=round_id, rater_id=rater, output_id=output_id, created_at=utcnow()))
        session.commit()
        session.add(Pick(round_id=round_id, rater_id=rater, output_id=output_id, created_at=utcnow()))
        with pytest.raises(IntegrityError):
            session.commit()


@pytest.mark.parametrize("trait, fluency", [(6, 3), (3, 0)])
def test_score_outside_1_to_5_violates_check(store, trait, fluency):
    rater = store.new_rater()
    round_id = store.record_round(blind_round(rater))
    with store._sessions() as session:
        output_id = session.scalar(select(Output.id).where(Output.round_id == round_id, Output.slot == 0))
        session.add(Rating(round_id=round_id, output_id=output_id, rater_id=rater, trait_score=trait,
                           fluency_score=fluency, created_at=utcnow()))
        with pytest.raises(IntegrityError, match="(?i)check"):
            session.commit()


def test_foreign_keys_are_enforced(store):
    with store._sessions() as session:
        session.add(Output(round_id="nope", slot=0, method="base", params={}, seed=0, text="x", n_tokens=1,
                           latency=0.0))
        with pytest.raises(IntegrityError, match="(?i)foreign key"):
            session.commit()


# -- the blind cycle -----------------------------------------------------------------------------------------------


def test_full_blind_cycle(store):
    rater = store.new_rater()
    assert len(rater) == 32
    round_id = store.record_round(blind_round(rater))
    assert len(round_id) == 32 and round_id != rater

    views = store.round_for_rater(round_id, rater)
    assert [v.slot for v in views] == [0, 1, 2, 3, 4]
    assert all(isinstance(v, SlotView) for v in views)
    assert {f.name for f in dataclasses.fields(SlotView)} == {"slot", "text"}
    for view in views:
        assert not hasattr(view, "method")
        assert not any(m in repr(view) for m in METHODS)
    assert views[SHUFFLED[2]].text == "Answer text number 2."

    scores = {slot: (slot + 1, 5 - slot) for slot in range(5)}
    best = SHUFFLED[METHODS.index("npti")]
    reveal = store.record_rating(round_id, rater, scores, best=best)
    assert all(isinstance(r, Reveal) for r in reveal)
    assert [r.slot for r in reveal] == [0, 1, 2, 3, 4]
    assert {r.slot: r.method for r in reveal} == {SHUFFLED[i]: m for i, m in enumerate(METHODS)}
    assert reveal[0].params == {"strength": 1.25, "top_neurons": "all"}
    assert reveal[best].text == "Answer text number 4."

    ratings = store.ratings_frame()
    assert len(ratings) == 5
    assert list(ratings.columns) == ["rating_id", "round_id", "rater_id", "created_at", "custom", "question",
                                     "trait", "pole", "model", "slot", "method", "params", "seed", "text",
                                     "raw_text", "trait_score", "fluency_score", "best", "output_id"]
    assert ratings["raw_text"].isna().all()  # OutputIn.raw_text defaults to None
    by_slot = ratings.set_index("slot")
    for slot, (trait, fluency) in scores.items():
        assert by_slot.loc[slot, "trait_score"] == trait and by_slot.loc[slot, "fluency_score"] == fluency
    assert ratings["best"].sum() == 1
    assert ratings.loc[ratings["best"], "method"].item() == "npti"
    assert (ratings["round_id"] == round_id).all() and (ratings["rater_id"] == rater).all()
    assert ratings["params"].iloc[0] == '{"strength": 1.25, "top_neurons": "all"}'
    assert str(ratings["created_at"].dt.tz) == "UTC"

    picks = store.picks_frame()
    assert list(picks.columns) == ["round_id", "rater_id", "trait", "pole", "custom", "method", "best"]
    assert len(picks) == 5 and picks["best"].sum() == 1
    assert picks.loc[picks["best"], "method"].item() == "npti"
    assert sorted(picks["method"]) == sorted(METHODS)

    outputs = store.outputs_frame()
    assert len(outputs) == 5 and set(outputs["kind"]) == {"blind"} and set(outputs["mode"]) == {"full"}
    assert store.counts() == {"raters": 1, "rounds": 1, "outputs": 5, "ratings": 5, "picks": 1, "votes": 0,
                              "blind_rounds": 1, "compare_rounds": 0, "rated_rounds": 1}


OUTPUTS_FRAME_COLUMNS = ["round_id", "kind", "mode", "rater_id", "created_at", "custom", "question", "trait", "pole",
                         "model", "seconds", "output_id", "slot", "method", "params", "seed", "text", "raw_text",
                         "n_tokens", "latency"]
VOTES_FRAME_COLUMNS = ["round_id", "rater_id", "trait", "pole", "custom", "method_a", "method_b", "outcome",
                       "created_at"]


def test_empty_frames_keep_their_columns(store):
    assert list(store.ratings_frame().columns)[-2:] == ["best", "output_id"] and store.ratings_frame().empty
    assert list(store.picks_frame().columns) == ["round_id", "rater_id", "trait", "pole", "custom", "method",
                                                 "best"]
    assert list(store.outputs_frame().columns) == OUTPUTS_FRAME_COLUMNS and store.outputs_frame().empty
    votes = store.votes_frame()
    assert list(votes.columns) == VOTES_FRAME_COLUMNS and votes.empty
    assert str(votes["created_at"].dtype) == "datetime64[us, UTC]" and votes["custom"].dtype == bool


def test_judgments_are_kept_once_per_output_and_judge(store):
    rater = store.new_rater()
    store.record_round(blind_round(rater))
    ids = store.outputs_frame()["output_id"].tolist()
    assert store.record_judgments("offline-proxy", {ids[0]: (0.02, 4.1), ids[1]: (None, 3.0)}) == 2
    assert store.record_judgments("offline-proxy", {ids[0]: (9.0, 9.0), ids[2]: (0.01, None)}) == 1
    assert store.record_judgments("openai:m", {ids[0]: (4.0, 5.0)}) == 1
    frame = store.judgments_frame()
    assert len(frame) == 4 and list(frame.columns) == ["output_id", "judge", "trait_score", "fluency_score"]
    first = frame[(frame["output_id"] == ids[0]) & (frame["judge"] == "offline-proxy")].iloc[0]
    assert first["trait_score"] == 0.02  # never overwritten
    assert frame["trait_score"].isna().sum() == 1 and frame["fluency_score"].isna().sum() == 1


def test_compare_round_without_rater(store):
    round_id = store.record_round(blind_round(None, kind="compare", n=3))
    outputs = store.outputs_frame()
    assert len(outputs) == 3 and outputs["rater_id"].isna().all() and set(outputs["round_id"]) == {round_id}
    assert store.picks_frame().empty


# -- refusals ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    (dict(kind="duel"), "kind"),
    (dict(pole="middle"), "pole"),
    (dict(rater_id=None), "rater"),
    (dict(rater_id="0" * 32), "no rater"),
    (dict(outputs=[]), "at least one output"),
    (dict(outputs=[OutputIn(0, "base", {}, 0, "a", 1, 0.1), OutputIn(0, "npti", {}, 0, "b", 1, 0.1)]), "unique"),
    (dict(outputs=[OutputIn(-1, "base", {}, 0, "a", 1, 0.1)]), "slots"),
    (dict(outputs=[OutputIn(0, "npti", {"strength": object()}, 0, "a", 1, 0.1)]), "not plain JSON"),
])
def test_malformed_rounds_are_refused_and_write_nothing(store, change, message):
    rater = store.new_rater()
    before = store.counts()
    with pytest.raises(ValueError, match=message):
        store.record_round(dataclasses.replace(blind_round(rater), **change))
    assert store.counts() == before


def test_refusals_write_nothing(store):
    rater, other = store.new_rater(), store.new_rater()
    round_id = store.record_round(blind_round(rater))
    compare_id = store.record_round(blind_round(None, kind="compare"))

    def refused(match: str, *args, **kwargs) -> None:
        before = store.counts()
        with pytest.raises(RatingRefused, match=match):
            store.record_rating(*args, **kwargs)
        assert store.counts() == before

    refused("not issued to you", round_id, other, all_scores(), best=0)
    refused("no such round", "f" * 32, rater, all_scores(), best=0)
    refused("rate every answer", round_id, rater, {**all_scores(), 2: (0, 3)}, best=0)
    refused("rate every answer", round_id, rater, {**all_scores(), 2: (3, 6)}, best=0)
    refused("rate every answer", round_id, rater, {s: v for s, v in all_scores().items() if s != 4}, best=0)
    refused("rate every answer", round_id, rater, {**all_scores(), 5: (3, 3)}, best=0)
    refused("rate every answer", round_id, rater, {**all_scores(), 1: (3.5, 3)}, best=0)
    refused("rate every answer", round_id, rater, {**all_scores(), 1: (3,)}, best=0)
    refused("best portrayal", round_id, rater, all_scores(), best=5)
    refused("best portrayal", round_id, rater, all_scores(), best=None)
    refused("not a blind round", compare_id, rater, all_scores(), best=0)

    store.record_rating(round_id, rater, all_scores(), best=1)
    refused("already rated", round_id, rater, all_scores(), best=2)
    refused("not issued to you", round_id, other, all_scores(), best=2)
    assert store.counts()["picks"] == 1 and store.counts()["ratings"] == 5


def test_round_for_rater_refuses_strangers(store):
    rater, other = store.new_rater(), store.new_rater()
    round_id = store.record_round(blind_round(rater))
    compare_id = store.record_round(blind_round(None, kind="compare"))
    with pytest.raises(RatingRefused, match="not issued to you"):
        store.round_for_rater(round_id, other)
    with pytest.raises(RatingRefused, match="not issued to you"):
        store.round_for_rater(compare_id, rater)
    with pytest.raises(RatingRefused, match="no such round"):
        store.round_for_rater("f" * 32, rater)


def test_unique_constraint_backs_the_already_rated_check(store, monkeypatch):
    """Even if the check were skipped (as when two submissions pass it together), the UNIQUE constraint refuses
    the second rating and the failed transaction leaves nothing."""
    rater = store.new_rater()
    round_id = store.record_round(blind_round(rater))
    store.record_rating(round_id, rater, all_scores(), best=0)
    monkeypatch.setattr(Store, "_already_rated", staticmethod(lambda session, round_id: False))
    before = store.counts()
    with pytest.raises(RatingRefused, match="already rated"):
        store.record_rating(round_id, rater, all_scores(trait=1), best=3)
    assert store.counts() == before
    assert set(store.ratings_frame()["trait_score"]) == {4}


# -- quick rounds --------------------------------------------------------------------------------------------------


def test_quick_vote_cycle(store):
    rater = store.new_rater()
    round_id = store.record_round(quick_round(rater))
    views = store.round_for_rater(round_id, rater)
    assert [(v.slot, v.text) for v in views] == [(0, "Shown answer 0."), (1, "Shown answer 1.")]

    reveal = store.record_vote(round_id, rater, "b")
    assert all(isinstance(r, Reveal) for r in reveal)
    assert [(r.slot, r.method) for r in reveal] == [(0, "npti"), (1, "base")]
    assert reveal[0].params == {"strength": 2.0} and reveal[1].text == "Shown answer 1."

    votes = store.votes_frame()
    assert list(votes.columns) == VOTES_FRAME_COLUMNS and len(votes) == 1
    row = votes.iloc[0]
    assert (row["round_id"], row["rater_id"], row["trait"], row["pole"]) == (round_id, rater, "Extraversion", "low")
    assert bool(row["custom"]) is True and (row["method_a"], row["method_b"], row["outcome"]) == ("npti", "base", "b")
    assert str(votes["created_at"].dt.tz) == "UTC" and votes["custom"].dtype == bool

    outputs = store.outputs_frame()
    assert list(outputs.columns) == OUTPUTS_FRAME_COLUMNS and set(outputs["mode"]) == {"quick"}
    assert store.ratings_frame().empty and store.picks_frame().empty  # a vote is neither a rating nor a pick
    assert store.counts() == {"raters": 1, "rounds": 1, "outputs": 2, "ratings": 0, "picks": 0, "votes": 1,
                              "blind_rounds": 1, "compare_rounds": 0, "rated_rounds": 1}


@pytest.mark.parametrize("outcome", ["a", "b", "tie", "bad"])
def test_every_outcome_is_kept(store, outcome):
    rater = store.new_rater()
    store.record_vote(store.record_round(quick_round(rater)), rater, outcome)
    assert store.votes_frame()["outcome"].tolist() == [outcome]


def test_vote_refusals_write_nothing(store):
    rater, other = store.new_rater(), store.new_rater()
    quick_id = store.record_round(quick_round(rater))
    full_id = store.record_round(blind_round(rater))
    compare_id = store.record_round(blind_round(None, kind="compare"))

    def refused(match: str, verb, *args, **kwargs) -> None:
        before = store.counts()
        with pytest.raises(RatingRefused, match=match):
            verb(*args, **kwargs)
        assert store.counts() == before

    refused("no such round", store.record_vote, "f" * 32, rater, "a")
    refused("not a blind round", store.record_vote, compare_id, rater, "a")
    refused("not issued to you", store.record_vote, quick_id, other, "a")
    refused("rated in full", store.record_vote, full_id, rater, "a")
    for outcome in ("c", "A", "", None, 0, ["a"]):
        refused(r"vote 'a', 'b', 'tie' or 'bad'", store.record_vote, quick_id, rater, outcome)
    refused("quick-vote round: vote A, B, tie or both bad", store.record_rating, quick_id, rater, all_scores(2),
            best=0)

    store.record_vote(quick_id, rater, "tie")
    refused("already rated", store.record_vote, quick_id, rater, "a")
    refused("not issued to you", store.record_vote, quick_id, other, "a")
    refused("quick-vote round", store.record_rating, quick_id, rater, all_scores(2), best=0)
    assert store.votes_frame()["outcome"].tolist() == ["tie"]


def test_a_vote_rates_the_round_for_record_rating_too(store):
    """A round with a vote is rated: even a full rating that passed the mode check is refused as "already rated"."""
    rater = store.new_rater()
    round_id = store.record_round(blind_round(rater))
    with store._sessions() as session:  # a vote on a full round, as only a writer outside the store could make
        session.add(Vote(round_id=round_id, rater_id=rater, outcome="a", created_at=utcnow()))
        session.commit()
    before = store.counts()
    with pytest.raises(RatingRefused, match="already rated"):
        store.record_rating(round_id, rater, all_scores(), best=0)
    assert store.counts() == before


def test_unique_constraint_backs_the_already_voted_check(store, monkeypatch):
    rater = store.new_rater()
    round_id = store.record_round(quick_round(rater))
    store.record_vote(round_id, rater, "a")
    monkeypatch.setattr(Store, "_already_rated", staticmethod(lambda session, round_id: False))
    before = store.counts()
    with pytest.raises(RatingRefused, match="already rated"):
        store.record_vote(round_id, rater, "b")
    assert store.counts() == before and store.votes_frame()["outcome"].tolist() == ["a"]


@pytest.mark.parametrize("change, message", [
    (dict(mode="arena"), "mode is 'full' or 'quick'"),
    (dict(kind="compare"), "quick round is a blind vote"),
    (dict(outputs=[OutputIn(0, "base", {}, 0, "a", 1, 0.1)]), "exactly 2 answers"),
    (dict(outputs=[OutputIn(i, "base", {}, 0, "a", 1, 0.1) for i in range(3)]), "exactly 2 answers"),
    (dict(outputs=[OutputIn(0, "base", {}, 0, "a", 1, 0.1), OutputIn(2, "npti", {}, 0, "b", 1, 0.1)]),
     "slots 0 and 1"),
    (dict(outputs=[OutputIn(0, "base", {}, 0, "a", 1, 0.1), OutputIn(1, "npti", {}, 0, "b", 1, 0.1, raw_text=3)]),
     "raw_text"),
])
def test_malformed_quick_rounds_are_refused_and_write_nothing(store, change, message):
    rater = store.new_rater()
    before = store.counts()
    with pytest.raises(ValueError, match=message):
        store.record_round(quick_round(rater, **change))
    assert store.counts() == before


def test_raw_text_round_trips(store):
    rater = store.new_rater()
    outputs = [OutputIn(slot=i, method=m, params={}, seed=1, text="Trimmed.", n_tokens=5, latency=0.1,
                        raw_text=raw)
               for i, (m, raw) in enumerate([("base", "Trimmed. Then cut"), ("npti", None)])]
    round_id = store.record_round(dataclasses.replace(blind_round(rater), outputs=outputs))
    store.record_rating(round_id, rater, all_scores(2), best=1)

    shown = store.outputs_frame().set_index("method")
    assert shown.loc["base", "raw_text"] == "Trimmed. Then cut" and shown.loc["base", "text"] == "Trimmed."
    assert shown["raw_text"].isna().tolist() == [False, True]
    rated = store.ratings_frame().set_index("method")
    assert rated.loc["base", "raw_text"] == "Trimmed. Then cut" and rated["raw_text"].isna().sum() == 1
    assert list(rated.columns).index("raw_text") == list(rated.columns).index("text") + 1
    assert [v.text for v in store.round_for_rater(round_id, rater)] == ["Trimmed.", "Trimmed."]  # never the raw one


def test_rater_exists(store):
    rater = store.new_rater()
    assert store.rater_exists(rater)
    assert not store.rater_exists("0" * 32)
    for junk in (None, "", rater.upper(), rater[:-1], rater + "0", "g" * 32, f"' OR 1=1 --{'0' * 21}", 12, [rater]):
        assert not store.rater_exists(junk)


def test_rated_and_unrated_rounds_per_rater(store):
    rater, other = store.new_rater(), store.new_rater()
    assert (store.rated_rounds(rater), store.unrated_rounds(rater)) == (0, 0)
    full = [store.record_round(blind_round(rater)) for _ in range(3)]
    quick = [store.record_round(quick_round(rater)) for _ in range(2)]
    store.record_round(quick_round(other))
    store.record_round(blind_round(None, kind="compare"))
    assert (store.rated_rounds(rater), store.unrated_rounds(rater)) == (0, 5)

    store.record_rating(full[0], rater, all_scores(), best=0)
    store.record_vote(quick[1], rater, "bad")
    assert (store.rated_rounds(rater), store.unrated_rounds(rater)) == (2, 3)
    assert (store.rated_rounds(other), store.unrated_rounds(other)) == (0, 1)
    assert (store.rated_rounds("f" * 32), store.unrated_rounds("f" * 32)) == (0, 0)
    counts = store.counts()
    assert set(counts) == COUNT_KEYS
    assert (counts["blind_rounds"], counts["compare_rounds"], counts["rated_rounds"]) == (6, 1, 2)
    assert counts["rounds"] == counts["blind_rounds"] + counts["compare_rounds"]


# -- location ------------------------------------------------------------------------------------------------------


def test_default_location_is_the_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_STUDIO_HOME", str(tmp_path / "nested" / "home"))
    monkeypatch.delenv("PERSONA_STUDIO_DB", raising=False)
    store = Store()
    try:
        path = tmp_path / "nested" / "home" / "studio.sqlite"
        assert path.is_file()
        assert store.url == f"sqlite:///{path}"
        store.new_rater()
    finally:
        store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT count(*) FROM raters").fetchone()[0] == 1


def test_db_url_environment_variable_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_STUDIO_DB", f"sqlite:///{tmp_path}/x.db")
    store = Store()
    try:
        assert (tmp_path / "x.db").is_file()
        assert store.url.endswith("/x.db")
        assert not (tmp_path / "home" / "studio.sqlite").exists()
    finally:
        store.close()


def test_in_memory_url_and_password_hiding(store):
    if store.url.startswith("sqlite"):
        assert store.url == "sqlite://"
        store.new_rater()
        assert store.counts()["raters"] == 1  # every session sees the one in-memory database
        return
    # A server URL carries a password; the store never shows it (the test server trusts any password).
    with Store(store._engine.url.set(password="s3cret").render_as_string(hide_password=False)) as other:
        assert ":***@" in other.url and "s3cret" not in other.url and repr(other) == f"Store({other.url!r})"
        other.new_rater()
    assert store.counts()["raters"] == 1


# -- concurrency ---------------------------------------------------------------------------------------------------


def test_an_in_memory_store_serves_many_threads():
    """The in-memory store (tests, a Space without storage) is one sqlite3 connection; Gradio's workers use it from
    several threads at once. Each thread's transaction must have the connection to itself: interleaved, SQLite
    answers "cannot start a transaction within a transaction" (a CI run failed so)."""
    store = Store("sqlite://")
    try:
        def work(i: int) -> int:
            for _ in range(40):
                rater = store.new_rater()
                store.record_rating(store.record_round(blind_round(rater)), rater, all_scores(), best=i % 5)
                store.counts(), store.rated_rounds(rater), store.ratings_frame()
            return i

        results = run_together(6, work)
        assert results == list(range(6)), [r for r in results if isinstance(r, Exception)][:2]
        assert store.counts()["picks"] == 6 * 40 and store.counts()["raters"] == 6 * 40
    finally:
        store.close()


def test_concurrent_submissions(shared_url):
    """Eight raters submit at once (all accepted), then eight submissions of one round race: exactly one is
    accepted, the other seven are told it was already rated, and the stored rows are the winner's alone."""
    url = shared_url
    writer = Store(url)
    try:
        raters = [writer.new_rater() for _ in range(8)]
        rounds = [writer.record_round(blind_round(r)) for r in raters]

        results = run_together(8, lambda i: writer.record_rating(rounds[i], raters[i], all_scores(), best=i % 5))
        assert all(isinstance(r, list) and len(r) == 5 for r in results), results

        rater = writer.new_rater()
        contested = writer.record_round(blind_round(rater))
        results = run_together(8, lambda i: writer.record_rating(contested, rater, all_scores(trait=1 + i % 5),
                                                                 best=i % 5))
        _one_accepted_the_rest_already_rated(results)
    finally:
        writer.close()

    reader = Store(url)
    try:
        counts = reader.counts()
        assert counts["picks"] == 9 and counts["ratings"] == 9 * 5
        ratings = reader.ratings_frame()
        assert set(ratings["round_id"]) == set(rounds) | {contested}
        assert (ratings.groupby("round_id")["best"].sum() == 1).all()
        assert len(ratings[ratings["round_id"] == contested]["trait_score"].unique()) == 1
    finally:
        reader.close()


def _one_accepted_the_rest_already_rated(results: list) -> None:
    accepted = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, RatingRefused)]
    assert len(accepted) == 1 and len(refused) == len(results) - 1, results
    assert all("already rated" in str(r) for r in refused)


def test_concurrent_votes(shared_url):
    """Eight votes on one quick round race: exactly one is stored."""
    url = shared_url
    writer = Store(url)
    try:
        rater = writer.new_rater()
        contested = writer.record_round(quick_round(rater))
        outcomes = ("a", "b", "tie", "bad")
        results = run_together(8, lambda i: writer.record_vote(contested, rater, outcomes[i % 4]))
        _one_accepted_the_rest_already_rated(results)
    finally:
        writer.close()

    reader = Store(url)
    try:
        assert reader.counts()["votes"] == 1 and len(reader.votes_frame()) == 1
    finally:
        reader.close()


def test_concurrent_judge_runs_store_each_judgment_once(shared_url):
    """Judge runs that store the same outputs at once, each through a Store of its own (as two replicas sharing one
    database would): no run fails, and every output ends with exactly one judgment per judge. SQLite's write lock
    serialises the runs; on PostgreSQL nothing does, and a run meets the other's rows at the UNIQUE constraint."""
    stores = [Store(shared_url) for _ in range(6)]
    try:
        rater = stores[0].new_rater()
        for _ in range(4):
            stores[0].record_round(blind_round(rater))
        ids = stores[0].outputs_frame()["output_id"].tolist()
        for judge in ("offline-proxy", "openai:m", "openai:n"):  # three races: one alone may not overlap
            results = run_together(6, lambda i: stores[i].record_judgments(judge, {o: (float(i), 3.0) for o in ids}))
            assert all(isinstance(r, int) for r in results), results
            assert sum(results) == len(ids), results
        frame = stores[0].judgments_frame()
        assert len(frame) == 3 * len(ids)
        assert (frame.groupby("judge")["output_id"].apply(sorted) == pd.Series({j: sorted(ids) for j in (
            "offline-proxy", "openai:m", "openai:n")})).all()
    finally:
        for s in stores:
            s.close()


def test_counts_are_one_snapshot_while_raters_write(shared_url):
    """`counts` reads every table in one read transaction, so its numbers agree with each other even while ratings
    are committed between its statements: every rated round here has one pick and five ratings. (PostgreSQL's default
    READ COMMITTED would count the picks and the ratings in different snapshots.)"""
    store = Store(shared_url)
    try:
        raters = [store.new_rater() for _ in range(4)]
        rounds = [[store.record_round(blind_round(r)) for _ in range(12)] for r in raters]
        writers = [threading.Thread(target=lambda i=i: [store.record_rating(round_id, raters[i], all_scores(), best=0)
                                                        for round_id in rounds[i]])
                   for i in range(4)]
        for t in writers:
            t.start()
        seen = []
        while any(t.is_alive() for t in writers) or not seen:
            seen.append(store.counts())
        for t in writers:
            t.join(60)
        torn = [c for c in seen if c["ratings"] != 5 * c["picks"] or c["rated_rounds"] != c["picks"]]
        assert not torn, f"{len(torn)} of {len(seen)} reads mixed two moments: {torn[:3]}"
        assert store.counts()["picks"] == 48
    finally:
        store.close()


def test_locked_database_raises_store_busy_and_saves_nothing(tmp_path):
    path = tmp_path / "locked.sqlite"
    store = Store(file_url(path))
    rater = store.new_rater()
    round_id = store.record_round(blind_round(rater))
    impatient = Store(file_url(path), busy_timeout_ms=100)
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreBusy, match="nothing was saved"):
            impatient.record_rating(round_id, rater, all_scores(), best=0)
        with pytest.raises(StoreBusy):
            impatient.new_rater()
        raw.execute("ROLLBACK")
        assert impatient.counts() == {"raters": 1, "rounds": 1, "outputs": 5, "ratings": 0, "picks": 0, "votes": 0,
                                      "blind_rounds": 1, "compare_rounds": 0, "rated_rounds": 0}
        impatient.record_rating(round_id, rater, all_scores(), best=0)  # submitting again works
        assert store.counts()["picks"] == 1
    finally:
        raw.close()
        impatient.close()
        store.close()


def test_a_permanent_fault_stays_the_drivers_error_not_a_busy_database(tmp_path):
    """Only a passing condition (a lock past the busy timeout, a server that cannot be reached) is StoreBusy, which
    the studio answers with 503 "try again"; a fault that retrying cannot mend (here a table gone) is not."""
    from sqlalchemy.exc import OperationalError

    path = tmp_path / "s.sqlite"
    with Store(f"sqlite:///{path}") as store:
        with sqlite3.connect(path) as raw:
            raw.execute("DROP TABLE votes")
        with pytest.raises(OperationalError, match="no such table: votes") as caught:
            store.votes_frame()
        assert not isinstance(caught.value, StoreBusy)
