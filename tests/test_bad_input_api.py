"""Every bad request to the JSON API is one clear refusal: the right status, a message naming the field or the
reason, never a 500, and nothing written. A real server (uvicorn on 127.0.0.1) on a tiny model and a SQLite file."""

from __future__ import annotations

import http.client
import json
import urllib.parse

import pytest
from helpers import tiny_shipped
from helpers import serve

from db import Store
from steering.engine.generation import Decoding
from studio.core import Studio
from studio.limits import Limits
from studio.server import create_app

TOKEN = "s3cret-admin"
FORGED = "f" * 32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole table, with a rater, a full round and a quick round already issued to that rater
    (and one round of another rater) to aim the bad requests at."""
    tmp = tmp_path_factory.mktemp("api")
    lm, shipped = tiny_shipped(tmp, adapter_pole="low")
    store = Store(f"sqlite:///{tmp / 'studio.sqlite'}")
    studio = Studio(lm, store, Decoding(max_new_tokens=6, do_sample=True), profiles=shipped, admin_token=TOKEN,
                    limits=Limits(max_body_bytes=8192))
    rater, other = studio.new_rater(), studio.new_rater()
    full = studio.blind_round(rater, "Extraversion", "low", mode="full").round_id
    quick = studio.blind_round(rater, "Extraversion", "low", mode="quick").round_id
    theirs = studio.blind_round(other, "Extraversion", "low", mode="quick").round_id
    with serve(create_app(studio)) as base:
        yield {"base": base, "studio": studio, "rater": rater, "full": full, "quick": quick, "theirs": theirs}
    store.close()


def request(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            chunked: bool = False) -> tuple[int, dict, dict]:
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    head = {"Content-Type": "application/json", **(headers or {})}
    if chunked:
        conn.putrequest(method, path)
        for k, v in {**head, "Transfer-Encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        for i in range(0, len(body), 1000):
            piece = body[i:i + 1000]
            try:
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except OSError:  # the server answered and closed early: fine
                break
        else:
            conn.send(b"0\r\n\r\n")
    else:
        conn.request(method, path, body, head)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = {"raw": data.decode(errors="replace")}
    return r.status, parsed, dict(r.getheaders())


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _round(**change):
    return _json({"rater": "{rater}", "trait": "Extraversion", "pole": "low", **change})


def _compare(**change):
    return _json({"question": "how was your day?", "trait": "Extraversion", "pole": "low", "methods": ["base"],
                  **change})


def _rating(scores=None, best=0, **change):
    scores = scores if scores is not None else {str(s): {"trait": 3, "fluency": 3} for s in range(6)}
    return _json({"rater": "{rater}", "scores": scores, "best": best, **change})


BIG = b'{"rater": "' + b"x" * 10_000 + b'"}'

# (name, method, path, body, status, message fragment, options)
CASES = [
    ("body over the limit", "POST", "/api/raters", BIG, 413, "over 8192 bytes", {}),
    ("chunked body over the limit", "POST", "/api/blind/rounds", BIG, 413, "over 8192 bytes", {"chunked": True}),
    ("not JSON", "POST", "/api/blind/rounds", b"{rater:", 422, "JSON", {}),
    ("empty body", "POST", "/api/blind/rounds", b"", 422, "body", {}),
    ("a list, not an object", "POST", "/api/blind/rounds", b"[1, 2]", 422, "dictionary", {}),
    ("bare NaN", "POST", "/api/compare", b"NaN", 422, "dictionary", {}),
    ("rater missing", "POST", "/api/blind/rounds", _json({"trait": "Extraversion", "pole": "low"}), 422, "rater", {}),
    ("rater a number", "POST", "/api/blind/rounds", _round(rater=42), 422, "rater", {}),
    ("rater NaN", "POST", "/api/blind/rounds", _round().replace(b'"{rater}"', b"NaN"), 422, "rater", {}),
    ("forged rater", "POST", "/api/blind/rounds", _round(rater=FORGED), 403, "unknown rater", {}),
    ("unknown trait", "POST", "/api/blind/rounds", _round(trait="Charm"), 422, "unknown trait 'Charm'", {}),
    ("trait Infinity", "POST", "/api/blind/rounds", _round().replace(b'"Extraversion"', b"Infinity"), 422,
     "trait", {}),
    ("unknown pole", "POST", "/api/blind/rounds", _round(pole="up"), 422, "unknown pole 'up'", {}),
    ("unknown mode", "POST", "/api/blind/rounds", _round(mode="duel"), 422, "mode", {}),
    ("question a number", "POST", "/api/blind/rounds", _round(question=42), 422, "question", {}),
    ("question too long", "POST", "/api/compare", _compare(question="x" * 4001), 422, "limit is 4000", {}),
    ("question empty", "POST", "/api/compare", _compare(question="  "), 422, "the question is empty", {}),
    ("misspelt field", "POST", "/api/compare", _compare(methodz=["base"]), 422, "methodz", {}),
    ("strength NaN", "POST", "/api/compare", _compare(strength=1).replace(b"1}", b"NaN}"), 422, "strength", {}),
    ("strength too high", "POST", "/api/compare", _compare(strength=4.5, methods=["npti"]), 422,
     "strength must be between 0 and 4", {}),
    ("vector strength negative", "POST", "/api/compare", _compare(vector_strength=-1, methods=["vector"]), 422,
     "strength must be between", {}),
    ("seed negative", "POST", "/api/compare", _compare(seed=-1), 422, "seed", {}),
    ("seed 2**31", "POST", "/api/compare", _compare(seed=2**31), 422, "seed", {}),
    ("seed Infinity", "POST", "/api/compare", _compare(seed=0).replace(b": 0}", b": Infinity}"), 422, "seed", {}),
    ("512 methods", "POST", "/api/compare", _compare(methods=["base"] * 512), 422, "methods", {}),
    ("a method twice", "POST", "/api/compare", _compare(methods=["base", "base"]), 422, "at most once", {}),
    ("no method", "POST", "/api/compare", _compare(methods=[]), 422, "choose at least one method", {}),
    ("unknown method", "POST", "/api/compare", _compare(methods=["magic"]), 422, "unknown: magic", {}),
    ("poles: unknown method", "POST", "/api/compare/poles",
     _json({"question": "hi?", "trait": "Extraversion", "method": "magic"}), 422, "choose one method", {}),
    ("score true", "POST", "/api/blind/rounds/{full}/rating",
     _rating({"0": {"trait": True, "fluency": 3}}), 422, "trait", {}),
    ("score a string", "POST", "/api/blind/rounds/{full}/rating",
     _rating({"0": {"trait": "3", "fluency": 3}}), 422, "trait", {}),
    ("score 6", "POST", "/api/blind/rounds/{full}/rating",
     _rating({str(s): {"trait": 6, "fluency": 3} for s in range(6)}), 409, "rate every answer", {}),
    ("a slot unscored", "POST", "/api/blind/rounds/{full}/rating",
     _rating({"0": {"trait": 3, "fluency": 3}}), 409, "rate every answer", {}),
    ("slot not a number", "POST", "/api/blind/rounds/{full}/rating",
     _rating({"x": {"trait": 3, "fluency": 3}}), 422, "scores.x", {}),
    ("best a letter", "POST", "/api/blind/rounds/{full}/rating", _rating(best="A"), 422, "best", {}),
    ("best out of range", "POST", "/api/blind/rounds/{full}/rating", _rating(best=9), 409, "pick the best", {}),
    ("rating a quick round", "POST", "/api/blind/rounds/{quick}/rating", _rating(), 409, "quick-vote round", {}),
    ("rating a round that is not there", "POST", f"/api/blind/rounds/{'0' * 32}/rating", _rating(), 409,
     "no such round", {}),
    ("vote outcome c", "POST", "/api/blind/rounds/{quick}/vote", _json({"rater": "{rater}", "outcome": "c"}), 422,
     "outcome", {}),
    ("vote on a full round", "POST", "/api/blind/rounds/{full}/vote",
     _json({"rater": "{rater}", "outcome": "a"}), 409, "rated in full", {}),
    ("vote on another rater's round", "POST", "/api/blind/rounds/{theirs}/vote",
     _json({"rater": "{rater}", "outcome": "a"}), 409, "not issued to you", {}),
    ("vote by a forged rater", "POST", "/api/blind/rounds/{quick}/vote", _json({"rater": FORGED, "outcome": "a"}),
     403, "unknown rater", {}),
    ("rater lookup, forged", "GET", f"/api/raters/{FORGED}", None, 403, "unknown rater", {}),
    ("ratings CSV without the token", "GET", "/api/ratings.csv", None, 401, "admin token", {}),
    ("votes CSV with a wrong token", "GET", "/api/votes.csv", None, 401, "admin token",
     {"headers": {"Authorization": "Bearer nope"}}),
]


@pytest.mark.parametrize("name, method, path, body, status, message, options", CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_one_clear_refusal_and_writes_nothing(server, name, method, path, body, status, message,
                                                             options):
    studio = server["studio"]
    path = path.format(**server)
    if body is not None:
        body = body.replace(b"{rater}", server["rater"].encode())
    before = studio.store.counts()
    got, reply, headers = request(server["base"], method, path, body, options.get("headers"),
                                  options.get("chunked", False))
    assert got == status, (got, reply)
    assert set(reply) == {"error"} and message in reply["error"], reply
    assert "\n" not in reply["error"] and len(reply["error"]) < 300  # one line, the input not echoed
    assert studio.store.counts() == before


def test_the_table_covers_thirty_kinds():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_the_admin_token_opens_the_exports(server):
    status, reply, headers = request(server["base"], "GET", "/api/ratings.csv",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "round_id" in reply["raw"] and "text/csv" in headers["content-type"]
    status, reply, _ = request(server["base"], "GET", f"/api/votes.csv?token={TOKEN}")
    assert status == 200 and reply["raw"].startswith("round_id,")


def test_limits_refuse_with_429_and_retry_after(tmp_path):
    lm, shipped = tiny_shipped(tmp_path, adapter_pole="low")
    with Store("sqlite://") as store:
        studio = Studio(lm, store, Decoding(max_new_tokens=4, do_sample=True), profiles=shipped,
                        limits=Limits(raters_per_hour=2, unrated_rounds=2, compares_per_minute=2))
        calls = []
        real = studio._run
        studio._run = lambda *a: calls.append(1) or real(*a)
        with serve(create_app(studio)) as base:
            statuses = [request(base, "POST", "/api/raters", b"{}")[0] for _ in range(3)]
            assert statuses == [200, 200, 429]
            status, reply, headers = request(base, "POST", "/api/raters", b"{}")
            assert status == 429 and int(headers["retry-after"]) > 0 and "new raters" in reply["error"]
            rater = studio.new_rater("elsewhere")
            for _ in range(2):
                assert request(base, "POST", "/api/blind/rounds", _round(rater=rater, mode="quick"))[0] == 200
            generated = len(calls)
            status, reply, headers = request(base, "POST", "/api/blind/rounds", _round(rater=rater))
            assert status == 429 and "rate one first" in reply["error"] and "retry-after" in headers
            assert len(calls) == generated  # refused before anything was generated
            for expect in (200, 200, 429):
                assert request(base, "POST", "/api/compare", _compare())[0] == expect


def test_a_database_that_went_away_is_a_503_with_retry_after_not_a_500(tmp_path, postgres_cluster, caplog):
    """A PostgreSQL database dropped under a running studio (its connections cut, reconnecting refused) is what a
    server down or restarting looks like to the app: every API call that needs the database answers 503 with
    Retry-After and one line, and the driver's own words go to the log only."""
    lm, shipped = tiny_shipped(tmp_path, adapter_pole="low")
    url = postgres_cluster.create_database()
    store = Store(url)
    try:
        studio = Studio(lm, store, Decoding(max_new_tokens=4, do_sample=True), profiles=shipped, admin_token=TOKEN)
        rater = studio.new_rater()
        with serve(create_app(studio)) as base:
            assert request(base, "GET", f"/api/raters/{rater}")[0] == 200
            postgres_cluster.drop_database(url)
            for method, path, body in (("POST", "/api/raters", b"{}"), ("GET", f"/api/raters/{rater}", None),
                                       ("POST", "/api/blind/rounds", _round(rater=rater, mode="quick")),
                                       ("GET", f"/api/ratings.csv?token={TOKEN}", None)):
                status, reply, headers = request(base, method, path, body)
                assert (status, reply.get("error")) == (503, "the database cannot be reached right now; nothing was "
                                                             "saved — try again in a moment"), (path, reply)
                assert int(headers["retry-after"]) > 0
        assert "database unavailable" in caplog.text and "does not exist" in caplog.text
    finally:
        store.close()
