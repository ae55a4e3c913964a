"""The studio under load, on a tiny model, a real SQLite file and a real HTTP server (uvicorn on 127.0.0.1):

* sixteen honest raters keep rating while one client floods the raters, rounds and compare endpoints: no
  acknowledged rating or vote is lost or stored twice, the flooder is refused with 429 + Retry-After on each
  endpoint, nothing answers 5xx but 503 (which the honest clients wait out and retry), and the honest raters'
  median round latency stays within 3x of theirs without the flooder (a separate test: a known failure, below);
* a server process SIGKILLed three times while raters rate leaves a sound database holding every acknowledged
  rating exactly once, and a rating cut off by the kill whole or not at all;
* 160 concurrent CSV downloads all succeed with identical content, and the export refuses a request without the
  admin token.

Every honest client is a thread with its own keep-alive connection; X-Forwarded-For (trust_proxy on) makes each a
distinct client address. The flooder is a process of its own, as it would be another machine.

Two things shape these tests:
* the model answers one batch at a time, so sixteen raters at once wait for each other: the "unloaded" latency the
  flood is held to is the sixteen's without the flooder (each rater's latency alone is printed too);
* a fresh server loads the LoRA adapter on its first round, in `Studio.availability` (methods.dispatch.unavailable
  -> load_adapter -> engine.adapters.attach_adapter) outside the model lock: concurrent first rounds race on it and
  fail now and then (500 or 422), so each server here answers one round before its raters start at once."""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import serve, tiny_shipped

from db import Store
from steering.engine.generation import Decoding
from studio.core import Studio
from studio.limits import Limits
from studio.server import create_app

ROOT = Path(__file__).resolve().parents[1]
TRAIT, POLE = "Extraversion", "low"  # every method answers there on the tiny model
QUESTION = "how was your weekend?"
ALL_METHODS = ["base", "simple", "p2", "sft", "npti", "vector"]
TOKEN = "load-test-admin-token"
MAX_503_WAIT_S = 10  # an honest client waits what Retry-After says, capped (the test must end)
IDLE_S = 2  # a client reconnects after this long idle (uvicorn closes keep-alive connections idle for 5 s)


# -- an HTTP client: one keep-alive connection per thread --------------------------------------------------------

class Transport(Exception):
    """No HTTP answer came back (refused, reset, closed, timed out): the request may or may not have been served."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    data: bytes
    seconds: float

    def json(self) -> dict:
        return json.loads(self.data)


class Client:
    """One client thread's connection to the server, sending its own X-Forwarded-For (and admin token, if any)."""

    def __init__(self, base: str, address: str | None = None, token: str | None = None, timeout: float = 60) -> None:
        url = urllib.parse.urlsplit(base)
        self.host, self.port, self.timeout = url.hostname, url.port, timeout
        self.headers = {"Content-Type": "application/json"}
        if address:
            self.headers["X-Forwarded-For"] = address
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn: http.client.HTTPConnection | None = None
        self.used = 0.0  # when the connection last answered

    def call(self, method: str, path: str, body: dict | None = None) -> Reply:
        if self.conn is not None and time.monotonic() - self.used > IDLE_S:
            self.close()  # the server may be closing it right now: a request on it could be lost in between
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        payload = None if body is None else json.dumps(body).encode()
        started = time.perf_counter()
        try:
            self.conn.request(method, path, payload, self.headers)
            r = self.conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as exc:  # reset, refused, remote closed, timeout
            self.close()
            raise Transport(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        reply = Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data, time.perf_counter() - started)
        self.used = time.monotonic()
        if reply.headers.get("connection", "").lower() == "close":
            self.close()
        return reply

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- an honest rater: start a round, rate it, keep a ledger of what the server acknowledged ---------------------

@dataclass
class Ledger:
    """What one honest rater sent and what the server answered, to be checked against the database."""

    rater: str
    rounds: dict[str, str] = field(default_factory=dict)  # round id -> mode, every round the server issued
    full: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)  # acknowledged: slot -> scores
    best: dict[str, int] = field(default_factory=dict)  # acknowledged full round -> picked slot
    votes: dict[str, str] = field(default_factory=dict)  # acknowledged quick round -> outcome
    refused: dict[str, int] = field(default_factory=dict)  # round -> status of a rating answered with a refusal
    unknown: set[str] = field(default_factory=set)  # rating sent, no answer (server killed): 0 or 1 stored
    latency: list[float] = field(default_factory=list)  # seconds of each round request answered 200
    statuses: Counter = field(default_factory=Counter)  # every status this rater received
    retried_503: int = 0  # 503s this rater waited out (Retry-After) and asked again
    problems: list[str] = field(default_factory=list)  # anything an honest rater should never see
    transport: list[str] = field(default_factory=list)  # requests with no answer


def _answered(client: Client, ledger: Ledger, method: str, path: str, body: dict, give_up: float) -> Reply:
    """The first answer that is not a 503; after a 503 wait its Retry-After and ask again (a 503 promises that
    nothing was written, so asking again cannot store anything twice)."""
    while True:
        reply = client.call(method, path, body)
        ledger.statuses[reply.status] += 1
        if reply.status != 503:
            return reply
        ledger.retried_503 += 1
        wait = reply.headers.get("retry-after")
        if wait is None or not wait.isdigit():
            ledger.problems.append(f"503 without a Retry-After from {path}: {reply.data[:200]!r}")
            return reply
        if time.monotonic() + int(wait) > give_up:
            ledger.problems.append(f"{path} still answered 503 at the end")
            return reply
        time.sleep(min(int(wait), MAX_503_WAIT_S))


def rate_rounds(client: Client, ledger: Ledger, until, rounds: int | None = None, stop_on_transport: bool = False,
                first_mode: int = 0, before_rating=None) -> None:
    """Rounds (full and quick in turn), each rated at once, until `until()` is true or `rounds` were asked.
    Times each round request; records every acknowledged rating or vote in the ledger. `before_rating()` runs
    just before each rating or vote is sent."""
    i = first_mode
    asked = 0
    while not until() and (rounds is None or asked < rounds):
        mode = ("full", "quick")[i % 2]
        i, asked = i + 1, asked + 1
        give_up = time.monotonic() + 120  # for 503s
        try:
            reply = _answered(client, ledger, "POST", "/api/blind/rounds",
                              {"rater": ledger.rater, "trait": TRAIT, "pole": POLE, "mode": mode}, give_up)
        except Transport as exc:
            ledger.transport.append(str(exc))
            if stop_on_transport:
                return
            continue
        if reply.status != 200:
            ledger.problems.append(f"round refused: {reply.status} {reply.data[:200]!r}")
            time.sleep(0.2)
            continue
        ledger.latency.append(reply.seconds)
        issued = reply.json()
        round_id, slots = issued["round"], [a["slot"] for a in issued["answers"]]
        ledger.rounds[round_id] = mode
        if mode == "full":
            scores = {s: (1 + (i + s) % 5, 5 - (i + 2 * s) % 5) for s in slots}
            best = slots[i % len(slots)]
            path = f"/api/blind/rounds/{round_id}/rating"
            body = {"rater": ledger.rater, "best": best,
                    "scores": {str(s): {"trait": t, "fluency": f} for s, (t, f) in scores.items()}}
        else:
            outcome = ("a", "b", "tie", "bad")[(i // 2) % 4]
            path = f"/api/blind/rounds/{round_id}/vote"
            body = {"rater": ledger.rater, "outcome": outcome}
        if before_rating is not None:
            before_rating()
        try:
            answer = _answered(client, ledger, "POST", path, body, give_up)
        except Transport as exc:
            ledger.transport.append(str(exc))
            ledger.unknown.add(round_id)
            if stop_on_transport:
                return
            continue
        if answer.status == 200:
            if mode == "full":
                ledger.full[round_id], ledger.best[round_id] = scores, best
            else:
                ledger.votes[round_id] = outcome
        else:
            ledger.refused[round_id] = answer.status
            ledger.problems.append(f"rating refused: {answer.status} {answer.data[:200]!r}")


def new_rater(client: Client) -> str:
    reply = client.call("POST", "/api/raters", {})
    assert reply.status == 200, f"POST /api/raters: {reply.status} {reply.data[:300]!r}"
    return reply.json()["rater"]


def run_threads(targets: list, join_s: float) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + join_s
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0.1))
    hung = sum(t.is_alive() for t in threads)
    assert hung == 0, f"{hung} of {len(threads)} client threads still running after {join_s} s"


def ledger_problems(db_path: Path, ledgers: list[Ledger]) -> tuple[list[str], dict[str, int]]:
    """What breaks these rules, and the rows counted: every acknowledged rating and vote is in the file exactly
    once, with what was sent; a refused one left no row; a rating whose answer never came (server killed) is stored
    completely or not at all; and no other rating, pick or vote exists."""
    problems: list[str] = []
    expected = Counter()
    with closing(sqlite3.connect(db_path)) as db:
        for ledger in ledgers:
            for round_id in ledger.rounds:
                ratings = db.execute("select o.slot, r.trait_score, r.fluency_score, r.rater_id from ratings r "
                                     "join outputs o on o.id = r.output_id where r.round_id = ? order by o.slot",
                                     (round_id,)).fetchall()
                picks = db.execute("select o.slot, p.rater_id from picks p join outputs o on o.id = p.output_id "
                                   "where p.round_id = ?", (round_id,)).fetchall()
                votes = db.execute("select outcome, rater_id from votes where round_id = ?", (round_id,)).fetchall()
                raters = {r[-1] for r in ratings + picks + votes}
                if raters - {ledger.rater}:
                    problems.append(f"round {round_id}: rows by another rater {raters}")
                if round_id in ledger.full:
                    sent = sorted((s, t, f) for s, (t, f) in ledger.full[round_id].items())
                    if [r[:3] for r in ratings] != sent or [p[0] for p in picks] != [ledger.best[round_id]] or votes:
                        problems.append(f"acknowledged full rating {round_id}: sent {sent} best "
                                        f"{ledger.best[round_id]}, stored {ratings} picks {picks} votes {votes}")
                    expected["ratings"] += len(sent)
                    expected["picks"] += 1
                elif round_id in ledger.votes:
                    if [v[0] for v in votes] != [ledger.votes[round_id]] or ratings or picks:
                        problems.append(f"acknowledged vote {round_id}: sent {ledger.votes[round_id]}, stored "
                                        f"{votes} (ratings {ratings}, picks {picks})")
                    expected["votes"] += 1
                elif round_id in ledger.unknown:  # all or nothing
                    n = len(db.execute("select id from outputs where round_id = ?", (round_id,)).fetchall())
                    whole = (len(ratings) == n and len(picks) == 1 and not votes) or \
                            (len(votes) == 1 and not ratings and not picks)
                    if ratings or picks or votes:
                        if not whole:
                            problems.append(f"unanswered rating {round_id} half stored: ratings {ratings} picks "
                                            f"{picks} votes {votes}")
                        expected["ratings"] += len(ratings)
                        expected["picks"] += len(picks)
                        expected["votes"] += len(votes)
                        expected["unanswered_but_stored"] += 1
                elif ratings or picks or votes:  # refused or never rated: nothing stored
                    problems.append(f"round {round_id} (rating {ledger.refused.get(round_id, 'not sent')}) has rows: "
                                    f"ratings {ratings} picks {picks} votes {votes}")
        stored = {t: db.execute(f"select count(*) from {t}").fetchone()[0] for t in ("ratings", "picks", "votes")}
    for table in ("ratings", "picks", "votes"):
        if stored[table] != expected[table]:
            problems.append(f"{table}: {stored[table]} rows in the file, {expected[table]} acknowledged")
    return problems, {**stored, "unanswered_but_stored": expected["unanswered_but_stored"]}


def lost_or_duplicated(problems: list[str]) -> str:
    return f"{len(problems)} lost, duplicated or stray rows:\n" + "\n".join(problems[:20])


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


@pytest.fixture(scope="module")
def shipped_model(tmp_path_factory):
    """The tiny model and its artefacts (NPTI profiles, vector, a LoRA adapter for Extraversion low), shared by this
    module's in-process servers (each with a database of its own): (model, profiles folder)."""
    return tiny_shipped(tmp_path_factory.mktemp("tiny"), adapter_pole="low")


# -- 1. honest raters beside a flooder -----------------------------------------------------------------------

HONEST = 16
LOAD_S = 20
BASELINE_S = 5
FLOOD_ADDRESS = "10.66.6.6"
UNRATED_ROUNDS = Limits().unrated_rounds  # the default, in force in this test
FLOOD_THREADS = {"/api/raters": 2, "/api/blind/rounds": 2, "/api/compare": 12}  # 12 > 10 compares a minute at once

# The flooding client: a process of its own (a flooder is another machine: its own parsing of thousands of
# replies must not take the server's interpreter lock), several threads on keep-alive connections, one address.
# Prints "ready" once its threads run, then, after `seconds`, what each thread saw as JSON.
FLOODER = """
import http.client, json, sys, threading, time
port, address, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
threads, bodies = json.loads(sys.argv[4]), json.loads(sys.argv[5])  # {path: threads}, {path: body}
headers = {"Content-Type": "application/json", "X-Forwarded-For": address}
seen = []
end = time.monotonic() + seconds

def flood(path):
    mine = {"path": path, "statuses": {}, "retry_after": [], "errors": []}
    seen.append(mine)
    conn = None
    while time.monotonic() < end:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=240)
            conn.request("POST", path, json.dumps(bodies[path]), headers)
            r = conn.getresponse()
            r.read()
        except (OSError, http.client.HTTPException) as exc:
            mine["errors"].append(f"{type(exc).__name__}: {exc}")
            conn = None
            time.sleep(0.05)
            continue
        mine["statuses"][r.status] = mine["statuses"].get(r.status, 0) + 1
        if r.status in (429, 503):
            mine["retry_after"].append(r.getheader("Retry-After"))

workers = [threading.Thread(target=flood, args=(p,)) for p, n in threads.items() for _ in range(n)]
for w in workers:
    w.start()
print("ready", flush=True)
for w in workers:
    w.join(seconds + 270)
print(json.dumps({"alive": sum(w.is_alive() for w in workers), "seen": seen}), flush=True)
"""


@pytest.fixture(scope="module")
def flood_run(tmp_path_factory, shipped_model):
    """One run of the scenario, checked by the two tests below: sixteen honest raters (one address each) measured
    alone, together without the flooder (the baseline) and together beside the flooder for LOAD_S seconds."""
    tmp = tmp_path_factory.mktemp("flood")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSONA_STUDIO_HOME", str(tmp / "home"))
        lm, shipped = shipped_model
        db_path = tmp / "studio.sqlite"
        store = Store(f"sqlite:///{db_path}")
        studio = Studio(lm, store, Decoding(max_new_tokens=6, do_sample=True), profiles=shipped,
                        limits=Limits(trust_proxy=True, rounds_per_minute=600, pending_generations=32))
        try:
            with serve(create_app(studio)) as base:
                run = _flood_scenario(base, tmp)
        finally:
            store.close()
    run["problems"], run["counts"] = ledger_problems(db_path, run["ledgers"])
    with closing(sqlite3.connect(db_path)) as db:
        run["flood_rounds"] = db.execute("select count(*) from rounds where rater_id = ?",
                                         (run["flood_rater"],)).fetchone()[0]
        run["compares"] = db.execute("select count(*) from rounds where kind = 'compare'").fetchone()[0]
    run["limits"] = studio.limits
    _report(run)
    return run


def _flood_scenario(base: str, tmp: Path) -> dict:
    # generous timeouts: under the flood a round can wait for many others (the latency test judges that)
    clients = [Client(base, f"10.0.{i // 250}.{i % 250 + 1}", timeout=240) for i in range(HONEST)]
    ledgers = [Ledger(new_rater(c)) for c in clients]
    # warm up (the first generation of each kind is slower), on a rater of its own
    warm_client = Client(base, "10.9.9.9")
    warm = Ledger(new_rater(warm_client))
    rate_rounds(warm_client, warm, lambda: False, rounds=4)
    assert not warm.problems and len(warm.rounds) == 4, warm

    def together(seconds: float) -> list[float]:
        """The sixteen raters at once for `seconds`; the round latencies they measured meanwhile."""
        end = time.monotonic() + seconds
        before = [len(ledger.latency) for ledger in ledgers]
        run_threads([lambda c=c, ledger=ledger: rate_rounds(c, ledger, lambda: time.monotonic() > end)
                     for c, ledger in zip(clients, ledgers)], seconds + 300)
        return [s for ledger, n in zip(ledgers, before) for s in ledger.latency[n:]]

    # unloaded: each rater alone (one full and one quick round each, one rater after the other) ...
    for c, ledger in zip(clients, ledgers):
        rate_rounds(c, ledger, lambda: False, rounds=2)
    solo = [s for ledger in ledgers for s in ledger.latency]
    # ... and the sixteen at once with no other traffic: the baseline the loaded latency is held to
    baseline = together(BASELINE_S)

    # loaded: the sixteen again, beside one client hammering three endpoints from one address
    flooder = Client(base, FLOOD_ADDRESS)
    flood_rater = new_rater(flooder)
    # its first rounds, one at a time: from now on it holds as many unrated rounds as a rater may, so every round
    # it asks for during the flood must be refused (whatever the pace of the load)
    first_rounds = Counter(flooder.call("POST", "/api/blind/rounds", {"rater": flood_rater, "trait": TRAIT,
                                                                      "pole": POLE, "mode": "full"}).status
                           for _ in range(UNRATED_ROUNDS))
    assert first_rounds == Counter({200: UNRATED_ROUNDS}), f"the flooder's first rounds: {dict(first_rounds)}"
    flooder.close()
    bodies = {"/api/raters": {},
              "/api/blind/rounds": {"rater": flood_rater, "trait": TRAIT, "pole": POLE, "mode": "full"},
              "/api/compare": {"question": QUESTION, "trait": TRAIT, "pole": POLE, "methods": ALL_METHODS}}
    with open(tmp / "flooder.log", "wb") as log:
        flood = subprocess.Popen([sys.executable, "-c", FLOODER, base.rsplit(":", 1)[1], FLOOD_ADDRESS,
                                  str(LOAD_S + 1), json.dumps(FLOOD_THREADS), json.dumps(bodies)],
                                 stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert flood.stdout.readline().strip() == "ready", (tmp / "flooder.log").read_text()
        time.sleep(0.5)  # the flood is on before the honest raters start
        loaded = together(LOAD_S)
        out, _ = flood.communicate(timeout=300)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait(30)
    assert flood.returncode == 0, f"the flooder failed: {(tmp / 'flooder.log').read_text()[-3000:]}"
    report = json.loads(out.strip().splitlines()[-1])
    assert report["alive"] == 0, "a flooding thread did not stop"
    seen = {path: sum((Counter({int(k): v for k, v in w["statuses"].items()}) for w in report["seen"]
                       if w["path"] == path), Counter()) for path in FLOOD_THREADS}
    seen["/api/blind/rounds"] += first_rounds
    retry_after = {path: [v for w in report["seen"] if w["path"] == path for v in w["retry_after"]]
                   for path in FLOOD_THREADS}
    return {"ledgers": ledgers + [warm], "solo": solo, "baseline": baseline, "loaded": loaded, "seen": seen,
            "retry_after": retry_after, "flood_errors": [e for w in report["seen"] for e in w["errors"]],
            "flood_rater": flood_rater}


def _report(run: dict) -> None:
    solo, baseline, loaded, every = run["solo"], run["baseline"], run["loaded"], run["ledgers"]
    honest = sum((ledger.statuses for ledger in every), Counter())
    acknowledged = sum(len(ledger.full) + len(ledger.votes) for ledger in every)
    print(f"\n[flood] round latency, median: alone {median_ms(solo):.0f} ms ({len(solo)} rounds); {HONEST} raters "
          f"without the flooder {median_ms(baseline):.0f} ms ({len(baseline)} rounds in {BASELINE_S} s); with the "
          f"flooder {median_ms(loaded):.0f} ms ({len(loaded)} rounds in {LOAD_S} s): "
          f"{statistics.median(loaded) / statistics.median(baseline):.2f}x the baseline, "
          f"{statistics.median(loaded) / statistics.median(solo):.0f}x alone")
    print(f"[flood] acknowledged ratings and votes: {acknowledged}, rows {run['counts']}; honest statuses "
          f"{dict(honest)}, 503s waited out and retried: {sum(ledger.retried_503 for ledger in every)}")
    print("[flood] flooder statuses: " + "; ".join(f"{p} {dict(c)}" for p, c in run["seen"].items()) +
          f"; rounds issued to the flooder: {run['flood_rounds']} (unrated_rounds cap "
          f"{run['limits'].unrated_rounds}); compare runs: {run['compares']} (cap "
          f"{run['limits'].compares_per_minute} a minute)")


def test_flood_loses_no_rating_and_is_refused_with_429(flood_run):
    every = flood_run["ledgers"]
    problems = [p for ledger in every for p in ledger.problems + ledger.transport]
    assert not problems, f"honest raters ran into {len(problems)} problems: {problems[:10]}"
    acknowledged = sum(len(ledger.full) + len(ledger.votes) for ledger in every)
    assert acknowledged >= 2 * HONEST, f"only {acknowledged} ratings and votes acknowledged"
    assert not flood_run["problems"], lost_or_duplicated(flood_run["problems"])
    for path, statuses in flood_run["seen"].items():
        assert statuses[429] > 0, f"the flooder was never refused with 429 on {path}: {dict(statuses)}"
        bad = [v for v in flood_run["retry_after"][path] if v is None or not v.isdigit() or int(v) < 1]
        assert not bad, f"429s/503s on {path} without a usable Retry-After: {bad[:5]} ({len(bad)})"
    errors = flood_run["flood_errors"]
    assert not errors, f"flooder: {len(errors)} requests without an answer: {errors[:5]}"
    statuses = sum((ledger.statuses for ledger in every), Counter()) + sum(flood_run["seen"].values(), Counter())
    server_errors = {s: n for s, n in statuses.items() if s >= 500 and s != 503}
    assert not server_errors, f"5xx other than 503: {server_errors}"


# -- 2. kill -9 while raters rate ----------------------------------------------------------------------------

# The server process: builds the tiny studio's artefacts under its own folder and loads the model, then waits for
# "go" on stdin before it opens the database and serves (so the servers can load while an earlier one serves).
SERVER = """
import sys
from pathlib import Path

from helpers import tiny_shipped

root, url, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
lm, shipped = tiny_shipped(root, adapter_pole="low")

import uvicorn

from db import Store
from steering.engine.generation import Decoding
from studio.core import Studio
from studio.limits import Limits
from studio.server import create_app

if sys.stdin.readline().strip() != "go":
    sys.exit(0)
studio = Studio(lm, Store(url), Decoding(max_new_tokens=6, do_sample=True), profiles=shipped,
                limits=Limits(trust_proxy=True, rounds_per_minute=600, unrated_rounds=50, pending_generations=32))
uvicorn.run(create_app(studio), host="127.0.0.1", port=port, log_level="warning")
"""

KILLED_RATERS = 8
KILLS = 3
KILL_AFTER_S = (2.0, 2.5, 3.0)  # of rating, per run; then the kill waits for a rating to be on its way ...
KILL_DELAY_S = (0.0, 0.003, 0.008)  # ... and this long more, to land before, during or after its transaction


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    base: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _spawn_server(tmp_path: Path, url: str, run: int) -> Server:
    port = _free_port()
    log = tmp_path / f"server-{run}.log"
    env = {**os.environ, "PERSONA_STUDIO_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path / f"artefacts-{run}"), url, str(port)],
                                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
    return Server(proc, f"http://127.0.0.1:{port}", log)


def _serve_now(server: Server) -> None:
    """Tell a spawned server to open the database and listen; return once it answers."""
    try:
        server.proc.stdin.write(b"go\n")
        server.proc.stdin.close()
    except BrokenPipeError:  # it died while loading: the loop below says how
        pass
    deadline = time.monotonic() + 120
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"the server exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            probe = Client(server.base, timeout=5)
            status = probe.call("GET", "/api/raters/" + "0" * 32).status
            probe.close()
            if status == 403:
                return
        except Transport:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not answer within 120 s:\n{server.tail()}")
        time.sleep(0.1)


def test_sigkill_mid_load_loses_no_acknowledged_rating(tmp_path):
    db_path = tmp_path / "studio.sqlite"
    url = f"sqlite:///{db_path}"
    ledgers: list[Ledger] = []
    servers = []
    try:
        # the three load their models side by side; each opens the file only when its turn comes, after the kill
        servers += [_spawn_server(tmp_path, url, run) for run in range(KILLS)]
        for run, server in enumerate(servers):
            _serve_now(server)
            clients = [Client(server.base, f"10.{run}.0.{i + 1}") for i in range(KILLED_RATERS)]
            batch = [Ledger(new_rater(c)) for c in clients]
            ledgers += batch
            # one full round first: a fresh server loads the LoRA adapter on its first round, outside the model
            # lock, and concurrent first rounds race on it (see the module docstring)
            rate_rounds(clients[0], batch[0], lambda: False, rounds=1)
            assert len(batch[0].full) == 1, f"run {run}: the first round failed: {batch[0].problems}"
            dead, armed, rating = threading.Event(), threading.Event(), threading.Event()
            threads = [threading.Thread(target=rate_rounds, daemon=True,
                                        kwargs=dict(client=c, ledger=ledger, until=dead.is_set, first_mode=i,
                                                    stop_on_transport=True,
                                                    before_rating=lambda: armed.is_set() and rating.set()))
                       for i, (c, ledger) in enumerate(zip(clients, batch))]
            for t in threads:
                t.start()
            time.sleep(KILL_AFTER_S[run])
            armed.set()
            rating.wait(30)
            time.sleep(KILL_DELAY_S[run])
            os.kill(server.proc.pid, signal.SIGKILL)
            dead.set()
            for t in threads:
                t.join(90)
            assert not any(t.is_alive() for t in threads), f"run {run}: a rater thread hung after the kill"
            server.proc.wait(30)
            assert server.proc.returncode == -signal.SIGKILL, f"run {run}: exit {server.proc.returncode}\n" \
                                                              f"{server.tail()}"
            problems = [p for ledger in batch for p in ledger.problems]
            assert not problems, f"run {run}: raters were refused before the kill: {problems[:10]}"
            done = sum(len(ledger.full) + len(ledger.votes) for ledger in batch)
            assert done >= 2, f"run {run}: only {done} ratings acknowledged before the kill"
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(30)

    with closing(sqlite3.connect(db_path)) as db:
        integrity = db.execute("pragma integrity_check").fetchall()
        foreign = db.execute("pragma foreign_key_check").fetchall()
    assert integrity == [("ok",)], f"integrity_check after {KILLS} kills: {integrity}"
    assert foreign == [], f"foreign_key_check after {KILLS} kills: {foreign[:10]}"
    problems, counts = ledger_problems(db_path, ledgers)
    assert not problems, lost_or_duplicated(problems)
    with Store(url) as store:  # the studio opens the file again and reads the same rows
        reopened = store.counts()
    assert [reopened[k] for k in ("ratings", "picks", "votes")] == [counts[k] for k in ("ratings", "picks", "votes")]
    acknowledged = sum(len(ledger.full) + len(ledger.votes) for ledger in ledgers)
    unanswered = sum(len(ledger.unknown) for ledger in ledgers)
    print(f"\n[kill -9] {KILLS} kills; acknowledged ratings and votes: {acknowledged}; ratings in flight at a kill: "
          f"{unanswered} ({counts['unanswered_but_stored']} of them stored, whole); rows {counts}; "
          f"integrity_check ok")


# -- 3. concurrent CSV downloads -----------------------------------------------------------------------------

DOWNLOADERS, DOWNLOADS = 16, 10


def test_concurrent_csv_downloads_are_complete_and_identical(tmp_path, shipped_model):
    lm, shipped = shipped_model
    store = Store(f"sqlite:///{tmp_path / 'studio.sqlite'}")
    studio = Studio(lm, store, Decoding(max_new_tokens=6, do_sample=True), profiles=shipped, admin_token=TOKEN,
                    limits=Limits(rounds_per_minute=600))
    try:
        raters = [studio.new_rater(), studio.new_rater()]
        rated = 0
        for k in range(6):
            rater = raters[k % 2]
            r = studio.blind_round(rater, TRAIT, POLE, question="=1+1, said the spreadsheet?" if k == 0 else None)
            studio.rate(r.round_id, rater, {s.slot: (1 + (k + s.slot) % 5, 1 + s.slot % 5) for s in r.slots},
                        best=r.slots[-1].slot)
            rated += len(r.slots)
        q = studio.blind_round(raters[0], TRAIT, POLE, mode="quick")
        studio.vote(q.round_id, raters[0], "tie")
        with serve(create_app(studio)) as base:
            for token in (None, "wrong-token"):
                for path in ("/api/ratings.csv", "/api/votes.csv"):
                    reply = Client(base, token=token).call("GET", path)
                    assert reply.status == 401, f"{path} with token {token!r}: {reply.status} {reply.data[:200]!r}"
                    assert b"round_id" not in reply.data and "admin token" in reply.json()["error"]
            barrier = threading.Barrier(DOWNLOADERS)
            got: list[list] = [[] for _ in range(DOWNLOADERS)]

            def download(i: int) -> None:
                client = Client(base, token=TOKEN)
                barrier.wait(60)
                for _ in range(DOWNLOADS):
                    try:
                        got[i].append(client.call("GET", "/api/ratings.csv"))
                    except Transport as exc:
                        got[i].append(exc)
                client.close()

            started = time.perf_counter()
            run_threads([lambda i=i: download(i) for i in range(DOWNLOADERS)], 120)
            took = time.perf_counter() - started
    finally:
        store.close()

    replies = [r for per in got for r in per]
    assert len(replies) == DOWNLOADERS * DOWNLOADS, f"{len(replies)} downloads finished"
    failed = [r if isinstance(r, Transport) else (r.status, r.data[:200]) for r in replies
              if isinstance(r, Transport) or r.status != 200]
    assert not failed, f"{len(failed)} of {len(replies)} downloads failed: {failed[:5]}"
    assert all("text/csv" in r.headers.get("content-type", "") for r in replies)
    tables = [list(csv.reader(io.StringIO(r.data.decode("utf-8")))) for r in replies]
    lengths = Counter(len(t) for t in tables)
    assert lengths == Counter({1 + rated: len(replies)}), f"rows per download (header included): {dict(lengths)}"
    assert len({r.data for r in replies}) == 1, "the downloads differ in content"
    header = tables[0][0]
    assert {"round_id", "rater_id", "method", "trait_score", "fluency_score", "best"} <= set(header), header
    assert all(len(row) == len(header) for row in tables[0]), "a row with a different number of cells"
    assert not any(r in replies[0].data.decode() for r in raters), "a rater id is in the export"
    print(f"\n[csv] {len(replies)} concurrent downloads of {len(replies[0].data)} bytes ({rated} rows) in "
          f"{took:.1f} s, all identical; 401 without or with a wrong token")
