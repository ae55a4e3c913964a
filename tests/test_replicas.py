"""Several replicas, one database: two studio processes on different ports share one PostgreSQL database, as two
machines behind a load balancer would, and a rater's requests land on either.

Eight raters rate for RATE_S seconds; each asks one replica for a round and rates it through the OTHER replica, so
every rating is accepted by a process that did not issue the round and knows of it only through the database. Then:

* no acknowledged rating or vote is lost or stored twice (checked in the database itself, not through a replica);
* a round rated on one replica is rated once: a second submission to either replica is refused (409), and two
  submissions sent to both replicas at the same moment are accepted exactly once;
* both replicas report the same: each rater's rated rounds, and the ratings and votes exports byte for byte, and
  they agree with what a `Store` opened on the database counts.

Each replica is a `python -c` program (REPLICA) that builds the tiny test model and its artefacts in a folder of its
own and serves the studio with uvicorn, its store at `$PERSONA_STUDIO_DB`. The replicas' rate limits count per process
(studio.limits), so they are raised here: the test is about the shared database, not the limits."""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from db import Store

ROOT = Path(__file__).resolve().parents[1]
TRAIT, POLE = "Extraversion", "low"  # every method answers there on the tiny model
RATERS = 8
RATE_S = 10
RACES = 4  # rounds whose rating is sent to both replicas at once
REPLICA_START_S = 120  # imports (torch, transformers, gradio) and the tiny artefacts, two processes on two cores
REQUEST_S = 60

# One replica: the tiny model and its artefacts (NPTI profiles, vector, a LoRA adapter for Extraversion low) under
# argv[1], the studio on 127.0.0.1:argv[2], its store opened from $PERSONA_STUDIO_DB (the shared database).
REPLICA = """
import sys
from pathlib import Path

from helpers import tiny_shipped

root, port = Path(sys.argv[1]), int(sys.argv[2])
lm, shipped = tiny_shipped(root, adapter_pole="low")

import uvicorn

from db import Store
from steering.engine.generation import Decoding
from studio.core import Studio
from studio.limits import Limits
from studio.server import create_app

studio = Studio(lm, Store(), Decoding(max_new_tokens=6, do_sample=True), profiles=shipped,
                limits=Limits(rounds_per_minute=600, unrated_rounds=50, raters_per_hour=600, pending_generations=32))
uvicorn.run(create_app(studio), host="127.0.0.1", port=port, log_level="warning")
"""


# -- the replicas ----------------------------------------------------------------------------------------------------

@dataclass
class Replica:
    proc: subprocess.Popen
    port: int
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tmp: Path, url: str, index: int) -> Replica:
    port = _free_port()
    log = tmp / f"replica-{index}.log"
    scratch = tmp / f"tmp-{index}"  # TMPDIR: the studio's download folder, which a SIGTERM leaves behind
    scratch.mkdir()
    env = {**os.environ, "PERSONA_STUDIO_DB": url, "PERSONA_STUDIO_HOME": str(tmp / f"home-{index}"),
           "TMPDIR": str(scratch),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", REPLICA, str(tmp / f"artefacts-{index}"), str(port)],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return Replica(proc, port, log)


def _wait_until_serving(replicas: list[Replica]) -> None:
    """Return once every replica answers its API (an unknown rater: 403), or fail with the log of one that died."""
    deadline = time.monotonic() + REPLICA_START_S
    waiting = list(replicas)
    while waiting:
        for replica in list(waiting):
            if replica.proc.poll() is not None:
                raise AssertionError(f"replica on port {replica.port} exited with {replica.proc.returncode}:\n"
                                     f"{replica.tail()}")
            try:
                if call(replica, "GET", "/api/raters/" + "0" * 32, timeout=5).status == 403:
                    waiting.remove(replica)
            except (OSError, http.client.HTTPException):
                pass
        if waiting and time.monotonic() > deadline:
            raise AssertionError(f"replica did not answer within {REPLICA_START_S} s:\n{waiting[0].tail()}")
        time.sleep(0.1)


def _stop(replicas: list[Replica]) -> None:
    for replica in replicas:
        if replica.proc.poll() is None:
            replica.proc.terminate()
    for replica in replicas:
        try:
            replica.proc.wait(15)
        except subprocess.TimeoutExpired:
            replica.proc.kill()
            replica.proc.wait(15)


# -- HTTP ------------------------------------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    retry_after: str | None
    data: bytes

    def json(self) -> dict:
        return json.loads(self.data)


def call(replica: Replica, method: str, path: str, body: dict | None = None, timeout: float = REQUEST_S) -> Reply:
    """One request on a connection of its own (no keep-alive connection that the server could close under it)."""
    conn = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(method, path, payload, {"Content-Type": "application/json"})
        r = conn.getresponse()
        return Reply(r.status, r.getheader("Retry-After"), r.read())
    finally:
        conn.close()


def answered(replica: Replica, method: str, path: str, body: dict | None, give_up: float) -> Reply:
    """The first answer that is neither 429 nor 503, waiting what Retry-After says between tries (both promise that
    nothing was done, so asking again cannot store anything twice)."""
    while True:
        reply = call(replica, method, path, body)
        if reply.status not in (429, 503) or time.monotonic() > give_up:
            return reply
        assert reply.retry_after is not None and reply.retry_after.isdigit(), \
            f"{reply.status} without a Retry-After from {path}: {reply.data[:200]!r}"
        time.sleep(min(int(reply.retry_after), max(give_up - time.monotonic(), 0.1)))


# -- raters ------------------------------------------------------------------------------------------------------------

@dataclass
class Ledger:
    """What one rater was issued and what the replicas acknowledged, to be checked against the database."""

    rater: str
    issued: dict[str, int] = field(default_factory=dict)  # round -> the replica that issued it
    full: dict[str, tuple[dict[int, tuple[int, int]], int]] = field(default_factory=dict)  # round -> (scores, best)
    votes: dict[str, str] = field(default_factory=dict)  # round -> outcome
    rated_on: dict[str, list[int]] = field(default_factory=dict)  # round -> the replicas that answered 200
    again: Counter = field(default_factory=Counter)  # (replica, status) of the second submissions
    problems: list[str] = field(default_factory=list)

    @property
    def acknowledged(self) -> int:
        return len(self.full) + len(self.votes)


def new_rater(replica: Replica) -> str:
    reply = answered(replica, "POST", "/api/raters", {}, time.monotonic() + REQUEST_S)
    assert reply.status == 200, f"POST /api/raters: {reply.status} {reply.data[:300]!r}"
    return reply.json()["rater"]


def ask_round(replicas: list[Replica], ledger: Ledger, issuer: int, mode: str) -> tuple[str, str, dict] | None:
    """A round from replica `issuer`, and the rating or vote for it: (round, path, body); None if it was refused."""
    reply = answered(replicas[issuer], "POST", "/api/blind/rounds",
                     {"rater": ledger.rater, "trait": TRAIT, "pole": POLE, "mode": mode}, time.monotonic() + REQUEST_S)
    if reply.status != 200:
        ledger.problems.append(f"round refused by replica {issuer}: {reply.status} {reply.data[:200]!r}")
        return None
    issued = reply.json()
    round_id, slots, n = issued["round"], [a["slot"] for a in issued["answers"]], len(ledger.issued)
    ledger.issued[round_id] = issuer
    if mode == "quick":
        return round_id, f"/api/blind/rounds/{round_id}/vote", {"rater": ledger.rater,
                                                                "outcome": ("a", "b", "tie", "bad")[n % 4]}
    scores = {s: (1 + (n + s) % 5, 5 - (n + 2 * s) % 5) for s in slots}
    return round_id, f"/api/blind/rounds/{round_id}/rating", {
        "rater": ledger.rater, "best": slots[n % len(slots)],
        "scores": {str(s): {"trait": t, "fluency": f} for s, (t, f) in scores.items()}}


def acknowledge(ledger: Ledger, round_id: str, body: dict, replica: int) -> None:
    """Note an accepted rating or vote as the replica acknowledged it (what was sent is what must be stored)."""
    ledger.rated_on.setdefault(round_id, []).append(replica)
    if "outcome" in body:
        ledger.votes[round_id] = body["outcome"]
    else:
        ledger.full[round_id] = ({int(s): (v["trait"], v["fluency"]) for s, v in body["scores"].items()}, body["best"])


def rate_across(replicas: list[Replica], ledger: Ledger, first: int, until: float) -> None:
    """`_rate_across`, with anything it raises (no answer, a 503 without Retry-After) kept as a problem: a rater
    thread that died would otherwise only show as fewer ratings."""
    try:
        _rate_across(replicas, ledger, first, until)
    except (AssertionError, OSError, http.client.HTTPException) as exc:
        ledger.problems.append(f"rater stopped: {type(exc).__name__}: {exc}")


def _rate_across(replicas: list[Replica], ledger: Ledger, first: int, until: float) -> None:
    """Until `until`: a round from one replica (taking turns, full and quick in turn), rated through the other, then
    submitted again to one of the two (taking turns), which must refuse it."""
    n = first
    while time.monotonic() < until:
        # every combination of issuing replica, mode and replica asked a second time comes up in eight rounds
        issuer, mode, twice = n % 2, ("full", "quick")[(n // 2) % 2], (n // 4) % 2
        n += 1
        asked = ask_round(replicas, ledger, issuer, mode)
        if asked is None:
            time.sleep(0.2)
            continue
        round_id, path, body = asked
        rater = 1 - issuer
        reply = answered(replicas[rater], "POST", path, body, time.monotonic() + REQUEST_S)
        if reply.status != 200:
            ledger.problems.append(f"rating of a round from replica {issuer} refused by replica {rater}: "
                                   f"{reply.status} {reply.data[:200]!r}")
            continue
        acknowledge(ledger, round_id, body, rater)
        ledger.again[(twice, answered(replicas[twice], "POST", path, body, time.monotonic() + REQUEST_S).status)] += 1


def race_both(replicas: list[Replica], ledger: Ledger, races: int) -> list[list[int]]:
    """Rounds whose rating is sent to both replicas at the same moment; each round's statuses, replica 0's first."""
    statuses = []
    for n in range(races):
        asked = ask_round(replicas, ledger, n % 2, ("full", "quick")[n % 2])
        assert asked is not None, ledger.problems
        round_id, path, body = asked
        barrier, got = threading.Barrier(2), [0, 0]

        def submit(i: int) -> None:
            barrier.wait()
            got[i] = answered(replicas[i], "POST", path, body, time.monotonic() + REQUEST_S).status

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(REQUEST_S + 10)
        statuses.append(got)
        for i, status in enumerate(got):
            if status == 200:
                acknowledge(ledger, round_id, body, i)
    return statuses


# -- the run -----------------------------------------------------------------------------------------------------------

@dataclass
class Run:
    url: str
    ledgers: list[Ledger]
    races: list[list[int]]
    reported: list[dict[str, int]]  # per replica: rater -> rated rounds
    exports: list[dict[str, bytes]]  # per replica: "ratings"/"votes" -> CSV
    seconds: float


@pytest.fixture(scope="module")
def replica_run(postgres_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Two replicas on one fresh PostgreSQL database: RATERS raters across both for RATE_S seconds, then the races,
    then what each replica reports; the replicas are stopped before the tests look at the database."""
    tmp = tmp_path_factory.mktemp("replicas")
    url = postgres_cluster.create_database()
    Store(url).close()  # made here, so the replicas open a database at the head, as in production after a deploy
    replicas: list[Replica] = []
    started = time.monotonic()
    try:
        replicas = [_spawn(tmp, url, i) for i in range(2)]
        _wait_until_serving(replicas)
        # A fresh server loads the LoRA adapter on its first round, outside the model lock, and concurrent first
        # rounds race on it (see test_load): each replica answers one round of each mode before the raters start.
        warm = Ledger(new_rater(replicas[0]))
        for n in range(4):
            asked = ask_round(replicas, warm, n % 2, ("full", "quick")[n // 2])
            assert asked is not None, warm.problems
            round_id, path, body = asked
            reply = answered(replicas[1 - n % 2], "POST", path, body, time.monotonic() + REQUEST_S)
            assert reply.status == 200, f"warm-up rating: {reply.status} {reply.data[:300]!r}"
            acknowledge(warm, round_id, body, 1 - n % 2)

        ledgers = [Ledger(new_rater(replicas[i % 2])) for i in range(RATERS)]
        until = time.monotonic() + RATE_S
        threads = [threading.Thread(target=rate_across, args=(replicas, ledger, i, until), daemon=True)
                   for i, ledger in enumerate(ledgers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(RATE_S + 2 * REQUEST_S)
        assert not any(t.is_alive() for t in threads), "a rater thread hung"

        racer = Ledger(new_rater(replicas[1]))
        races = race_both(replicas, racer, RACES)
        everyone = [warm, *ledgers, racer]

        give_up = time.monotonic() + REQUEST_S
        reported = [{ledger.rater: answered(replica, "GET", f"/api/raters/{ledger.rater}", None, give_up).json()[
            "rated_rounds"] for ledger in everyone} for replica in replicas]
        exports = [{what: answered(replica, "GET", f"/api/{what}.csv", None, give_up).data
                    for what in ("ratings", "votes")} for replica in replicas]
        for replica in replicas:
            assert replica.proc.poll() is None, f"replica on port {replica.port} died:\n{replica.tail()}"
    finally:
        _stop(replicas)
    run = Run(url, everyone, races, reported, exports, time.monotonic() - started)
    acknowledged = sum(ledger.acknowledged for ledger in everyone)
    again = sum((ledger.again for ledger in everyone), Counter())
    print(f"\n[replicas] {len(everyone)} raters, {acknowledged} ratings and votes acknowledged across 2 replicas in "
          f"{RATE_S} s; second submissions (replica, status): {dict(again)}; races (replica 0, replica 1): {races}; "
          f"{run.seconds:.1f} s with start-up")
    yield run
    postgres_cluster.drop_database(url)


# -- the checks --------------------------------------------------------------------------------------------------------


def stored(url: str) -> tuple[dict[str, dict[int, tuple[int, int, str]]], dict[str, list[tuple[int, str]]],
                              dict[str, list[tuple[str, str]]], dict[str, str]]:
    """Straight from the database: per round its ratings (slot -> trait, fluency, rater), picks (slot, rater),
    votes (outcome, rater) and the rater it was issued to."""
    engine = create_engine(url)
    ratings: dict[str, dict[int, tuple[int, int, str]]] = {}
    picks: dict[str, list[tuple[int, str]]] = {}
    votes: dict[str, list[tuple[str, str]]] = {}
    try:
        with engine.connect() as db:
            for round_id, slot, trait, fluency, rater in db.execute(text(
                    "SELECT r.round_id, o.slot, r.trait_score, r.fluency_score, r.rater_id FROM ratings r "
                    "JOIN outputs o ON o.id = r.output_id")):
                assert slot not in ratings.setdefault(round_id, {}), f"round {round_id}: slot {slot} rated twice"
                ratings[round_id][slot] = (trait, fluency, rater)
            for round_id, slot, rater in db.execute(text(
                    "SELECT p.round_id, o.slot, p.rater_id FROM picks p JOIN outputs o ON o.id = p.output_id")):
                picks.setdefault(round_id, []).append((slot, rater))
            for round_id, outcome, rater in db.execute(text("SELECT round_id, outcome, rater_id FROM votes")):
                votes.setdefault(round_id, []).append((outcome, rater))
            issued = dict(db.execute(text("SELECT id, rater_id FROM rounds")).tuples().all())
    finally:
        engine.dispose()
    return ratings, picks, votes, issued


def test_no_acknowledged_rating_is_lost_or_stored_twice(replica_run):
    ratings, picks, votes, issued = stored(replica_run.url)
    problems = [p for ledger in replica_run.ledgers for p in ledger.problems]
    assert not problems, f"raters were refused: {problems[:10]}"
    acknowledged: set[str] = set()
    for ledger in replica_run.ledgers:
        for round_id, issuer in ledger.issued.items():
            assert issued.get(round_id) == ledger.rater, f"round {round_id} from replica {issuer} not stored as issued"
        for round_id, (scores, best) in ledger.full.items():
            assert ratings.get(round_id) == {s: (t, f, ledger.rater) for s, (t, f) in scores.items()}, round_id
            assert picks.get(round_id) == [(best, ledger.rater)] and round_id not in votes, round_id
        for round_id, outcome in ledger.votes.items():
            assert votes.get(round_id) == [(outcome, ledger.rater)], round_id
            assert round_id not in ratings and round_id not in picks, round_id
        acknowledged |= set(ledger.full) | set(ledger.votes)
    stray = (set(ratings) | set(picks) | set(votes)) - acknowledged
    assert not stray, f"{len(stray)} rounds rated in the database that no replica acknowledged: {sorted(stray)[:5]}"
    assert len(acknowledged) >= 2 * RATERS, f"only {len(acknowledged)} ratings in {RATE_S} s"


def test_each_round_is_accepted_once_on_either_replica(replica_run):
    for ledger in replica_run.ledgers:
        for round_id in ledger.issued:
            assert len(ledger.rated_on.get(round_id, [])) <= 1, f"round {round_id} accepted {ledger.rated_on}"
        assert set(ledger.again) <= {(0, 409), (1, 409)}, f"a second submission was not refused: {ledger.again}"
    again = sum((ledger.again for ledger in replica_run.ledgers), Counter())
    assert again[(0, 409)] > 0 and again[(1, 409)] > 0, f"second submissions did not reach both replicas: {again}"
    assert all(sorted(statuses) == [200, 409] for statuses in replica_run.races), \
        f"ratings sent to both replicas at once (statuses from replica 0, 1): {replica_run.races}"


def test_both_replicas_report_the_same_counts(replica_run):
    first, second = replica_run.reported
    assert first == second, "the replicas disagree on rated rounds"
    assert first == {ledger.rater: ledger.acknowledged for ledger in replica_run.ledgers}
    assert replica_run.exports[0] == replica_run.exports[1], "the replicas export different ratings or votes"
    with Store(replica_run.url) as store:
        counts = store.counts()
    ledgers = replica_run.ledgers
    assert counts["rated_rounds"] == sum(ledger.acknowledged for ledger in ledgers) == sum(first.values())
    assert counts["votes"] == sum(len(ledger.votes) for ledger in ledgers)
    assert counts["picks"] == sum(len(ledger.full) for ledger in ledgers)
    assert counts["ratings"] == sum(len(scores) for ledger in ledgers for scores, _ in ledger.full.values())
    assert counts["blind_rounds"] == sum(len(ledger.issued) for ledger in ledgers)
    assert counts["raters"] == len(ledgers)
    for what in ("ratings", "votes"):
        exported = list(csv.reader(io.StringIO(replica_run.exports[0][what].decode())))
        assert len(exported) == 1 + counts[what], what
