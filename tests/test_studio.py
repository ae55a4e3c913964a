"""The studio on a tiny random-weight model with real artefacts (NPTI profiles, LoRA adapters), a real SQLite file
and a real HTTP server: rounds, blind rating through the JSON API, refusals, and eight raters at once."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request

import pytest
from helpers import post, serve, tiny_shipped

from db import Store
from steering.engine.generation import Decoding
from steering.methods.dispatch import METHODS
from studio.core import LABELS, Studio


@pytest.fixture
def studio(tmp_path):
    lm, shipped = tiny_shipped(tmp_path, adapter_pole="low")
    store = Store(f"sqlite:///{tmp_path / 'studio.sqlite'}")
    yield Studio(lm, store, Decoding(max_new_tokens=6, do_sample=True), profiles=shipped)
    store.close()


def test_compare_answers_every_method_in_one_round_and_says_why_one_is_missing(studio):
    # Extraversion high has its profiles but no adapter: sft is shown as unavailable, with the reason
    result = studio.compare("how was your weekend?", "Extraversion", "high", list(METHODS), strength=1.0, seed=2)
    by = {c.method: c for c in result.columns}
    assert list(by) == list(METHODS)
    assert by["sft"].text is None and "finetune --data corpus --trait Extraversion --pole high" in by["sft"].reason
    assert all(by[m].text is not None for m in METHODS if m != "sft")
    assert by["npti"].params["strength"] == 1.0
    # every answer carries the trait read-out of its shown tokens (the trait has a vector), one value per token;
    # the shown text is the raw answer trimmed to whole sentences (or a marked cut), the raw one is kept
    for m in METHODS:
        if m != "sft":
            pieces = "".join(p for p, _ in by[m].readout or ()).replace(" ", "")
            assert pieces and pieces == by[m].text.rstrip("…").replace(" ", "")
            assert by[m].raw_text.startswith(by[m].text.rstrip("…"))
            assert by[m].text.endswith((".", "!", "?", "…")) or by[m].text == by[m].raw_text
            assert by[m].prompt
    assert "System prompt:" in by["p2"].prompt and "NPTI" in by["npti"].prompt
    assert "Activation vector" in by["vector"].prompt and "No system prompt" in by["base"].prompt
    frame = studio.store.outputs_frame()
    assert sorted(frame["method"]) == sorted(m for m in METHODS if m != "sft")
    assert set(frame["round_id"]) == {result.round_id}


@pytest.mark.parametrize("args, message", [
    (("", "Extraversion", "high", ["base"]), "the question is empty"),
    (("x" * 4001, "Extraversion", "high", ["base"]), "limit is 4000"),
    (("hi?", "Charm", "high", ["base"]), "unknown trait 'Charm'"),
    (("hi?", "Extraversion", "up", ["base"]), "unknown pole 'up'"),
    (("hi?", "Extraversion", "high", ["npti"], 4.5), "strength must be between 0 and 4"),
    (("hi?", "Extraversion", "high", ["magic"]), "unknown: magic"),
])
def test_bad_compare_input_is_refused_clearly_and_writes_nothing(studio, args, message):
    with pytest.raises(ValueError, match=message):
        studio.compare(*args)
    assert studio.store.counts()["rounds"] == 0


def test_blind_round_mapping_stays_on_the_server_until_the_vote(studio):
    rater = studio.store.new_rater()
    r = studio.blind_round(rater, "Extraversion", "low")
    assert not r.custom and "reserved, introverted" in r.target
    assert len(r.slots) == len(METHODS)  # every method is available for Extraversion low
    page = json.dumps([{"slot": s.slot, "text": s.text} for s in r.slots]) + r.question + r.target
    assert not any(name in page for name in [*LABELS.values(), "npti", "sft", "lora", "LoRA"])
    revealed = studio.rate(r.round_id, rater, {s.slot: (3, 4) for s in r.slots}, best=1)
    assert sorted(x.method for x in revealed) == sorted(METHODS)
    typed = studio.blind_round(rater, "Extraversion", "low", question="what is your favourite song?")
    assert typed.custom and typed.question == "what is your favourite song?"
    # the offline judge scores the rated answers once, and its agreement with the rater can be read
    from steering.evaluation.ratings import judge_agreement

    assert studio.judge_rated("offline") == len(METHODS)
    assert studio.judge_rated("offline") == 0
    per_method, overall = judge_agreement(studio.store.ratings_frame(), studio.store.judgments_frame())
    assert sorted(per_method["method"]) == sorted(METHODS) and overall["judge"].tolist() == ["offline-judge"]
    assert overall["trait_n"].item() == len(METHODS)
    with pytest.raises(ValueError, match="unknown judge"):
        studio.judge_rated("oracle")


def test_blind_rating_over_http_refusals_and_eight_raters_at_once(studio, tmp_path):
    from studio.server import api

    with serve(api(studio)) as base:
        raters = [post(f"{base}/api/raters", {})[1]["rater"] for _ in range(8)]
        rounds = []
        for rater in raters:
            status, body = post(f"{base}/api/blind/rounds", {"rater": rater, "trait": "Extraversion", "pole": "low"})
            assert status == 200, body
            assert not any(name in json.dumps(body) for name in LABELS.values())
            rounds.append(body)
        barrier = threading.Barrier(8)
        results: list = [None] * 8

        def rate(i):
            body = {"rater": raters[i], "best": 0,
                    "scores": {str(a["slot"]): {"trait": 1 + i % 5, "fluency": 5 - i % 5} for a in rounds[i]["answers"]}}
            barrier.wait()
            results[i] = post(f"{base}/api/blind/rounds/{rounds[i]['round']}/rating", body)

        threads = [threading.Thread(target=rate, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [status for status, _ in results] == [200] * 8, results
        assert sorted(x["method"] for x in results[0][1]["revealed"]) == sorted(METHODS)
        n = len(METHODS)
        # count the rows in the file itself
        with sqlite3.connect(tmp_path / "studio.sqlite") as db:
            assert db.execute("select count(*) from ratings").fetchone()[0] == 8 * n
            assert db.execute("select count(*) from picks").fetchone()[0] == 8
        before = studio.store.counts()
        scores = {str(a["slot"]): {"trait": 3, "fluency": 3} for a in rounds[0]["answers"]}
        again = post(f"{base}/api/blind/rounds/{rounds[0]['round']}/rating",
                     {"rater": raters[0], "best": 0, "scores": scores})
        assert again[0] == 409 and "already rated" in again[1]["error"]
        never = post(f"{base}/api/blind/rounds/{'0' * 32}/rating", {"rater": raters[0], "best": 0, "scores": scores})
        assert never[0] == 409 and "no such round" in never[1]["error"]
        other = post(f"{base}/api/blind/rounds/{rounds[1]['round']}/rating", {"rater": raters[0], "best": 0,
                                                                              "scores": scores})
        assert other[0] == 409
        assert studio.store.counts() == before
        bad = post(f"{base}/api/blind/rounds", {"rater": raters[0], "trait": "Charm", "pole": "low"})
        assert bad[0] == 422 and "unknown trait" in bad[1]["error"]
        with urllib.request.urlopen(f"{base}/api/ratings.csv") as r:
            lines = r.read().decode().splitlines()
        assert len(lines) == 1 + 8 * n


def test_blind_rounds_give_each_method_its_own_seed_and_keep_raw_and_shown_text(studio):
    rater = studio.new_rater()
    r = studio.blind_round(rater, "Extraversion", "low")
    frame = studio.store.outputs_frame()
    assert len(frame) == len(r.slots) and frame["seed"].nunique() == len(r.slots)
    for text, raw in zip(frame["text"], frame["raw_text"]):
        assert raw.startswith(text.rstrip("…")) and (text == raw or text.endswith((".", "!", "?", "…")))


def test_quick_rounds_pit_two_methods_and_take_one_vote(studio):
    rater = studio.new_rater()
    r = studio.blind_round(rater, "Extraversion", "low", mode="quick")
    assert r.mode == "quick" and [s.slot for s in r.slots] == [0, 1]
    assert studio.rated_rounds(rater) == 0
    revealed = studio.vote(r.round_id, rater, "tie")
    assert len({x.method for x in revealed}) == 2 and studio.rated_rounds(rater) == 1
    with pytest.raises(ValueError, match="already rated"):
        studio.vote(r.round_id, rater, "a")
    with pytest.raises(ValueError, match="mode must be"):
        studio.blind_round(rater, "Extraversion", "low", mode="duel")
    results = studio.results(min_votes=1)
    assert "1 blind round rated" in results.summary and "1 quick vote)" in results.summary
    shown = set(results.board["method"])
    assert {LABELS[x.method] for x in revealed} <= shown


def test_an_unknown_rater_is_refused_before_anything_is_generated(studio):
    from studio.core import UnknownRater

    calls = []
    studio._run = lambda *a: calls.append(a)
    for forged in ("f" * 32, "nobody", None):
        with pytest.raises(UnknownRater, match="unknown rater"):
            studio.blind_round(forged, "Extraversion", "low")
    assert calls == [] and studio.store.counts()["rounds"] == 0


def test_streaming_yields_growing_answers_then_the_result(studio):
    from studio.core import CompareResult

    real = studio._run

    def slow(rows, on_step, decoding, readout, on_text):  # a tiny model is faster than the page's 0.1 s refresh
        return real(rows, on_step, decoding, readout, lambda texts: (time.sleep(0.06), on_text(texts)))

    studio._run = slow
    updates = list(studio.stream(studio.compare, "how was your weekend?", "Extraversion", "high", ["base", "npti"]))
    *partial, result = updates
    assert isinstance(result, CompareResult) and len(partial) >= 2
    assert all(set(u) == {"base", "npti"} for u in partial)
    lengths = [len(u["base"]) for u in partial]
    assert lengths == sorted(lengths) and lengths[-1] > 0
    with pytest.raises(ValueError, match="the question is empty"):
        list(studio.stream(studio.compare, " ", "Extraversion", "high", ["base"]))
    with pytest.raises(ValueError, match="at most once"):
        studio.compare("hi?", "Extraversion", "high", ["base"] * 3)


def test_high_vs_low_answers_both_poles_with_one_method(studio):
    result = studio.compare_poles("how was your weekend?", "Extraversion", "npti", strength=1.0, seed=3)
    high, low = result.columns
    assert high.params["pole"] == "high" and low.params["pole"] == "low"
    assert high.params["seed"] == low.params["seed"] == 3 and high.text and low.text
    assert result.round_id is None and studio.store.counts()["rounds"] == 0  # an exploration: not recorded


def test_csv_export_defuses_formulas_and_hides_rater_ids(studio):
    rater = studio.new_rater()
    r = studio.blind_round(rater, "Extraversion", "low", question="=HYPERLINK(\"http://x\") and more?")
    studio.rate(r.round_id, rater, {s.slot: (3, 4) for s in r.slots}, best=0)
    text = studio.export_csv("ratings").decode()
    assert "'=HYPERLINK" in text and "\n=HYPERLINK" not in text and ",=HYPERLINK" not in text
    assert rater not in text and "raw_text" in text
    assert studio.export_csv("votes").decode().startswith("round_id,")
    path = studio.ratings_csv()
    assert path.read_bytes() == studio.export_csv("ratings") and path.parent == studio._exports


def test_a_studio_leaves_no_export_folder_behind(tmp_path):
    import gc

    lm, shipped = tiny_shipped(tmp_path, adapter_pole="low")
    with Store("sqlite://") as store:
        studio = Studio(lm, store, Decoding(max_new_tokens=4), profiles=shipped)
        folder = studio.ratings_csv().parent
        assert folder.is_dir()
        del studio
        gc.collect()
        assert not folder.exists()


def test_first_rounds_at_once_load_the_adapter_once_and_all_answer(studio):
    """Eight raters' first rounds at the same moment on a fresh studio: finding the LoRA adapter loads it into the
    model, which must never happen beside another generation or twice at once."""
    from dataclasses import replace

    from helpers import run_together

    from studio.limits import Limits

    studio = replace(studio, limits=Limits(pending_generations=8))  # a fresh Studio on the same model and store
    raters = [studio.new_rater() for _ in range(8)]
    results = run_together(8, lambda i: studio.blind_round(raters[i], "Extraversion", "low", mode="full"))
    assert all(not isinstance(r, Exception) for r in results), results
    assert all(len(r.slots) == len(METHODS) for r in results)


def test_the_unrated_rounds_cap_holds_when_rounds_are_asked_at_once(studio):
    from helpers import run_together

    from studio.limits import TooMany

    rater = studio.new_rater()
    results = run_together(8, lambda i: studio.blind_round(rater, "Extraversion", "low", mode="quick"))
    assert sum(not isinstance(r, Exception) for r in results) == studio.limits.unrated_rounds
    assert all(isinstance(r, TooMany) for r in results if isinstance(r, Exception))


def test_a_round_in_the_making_shows_its_progress_below_the_question_not_over_it(studio):
    """While a blind round's answers are written, Gradio's progress bar and counters go to a slot of their own
    (#blind-progress): drawn over the question, they covered its text (unreadable on a phone)."""
    from studio.blind import blind_page

    config = blind_page(studio).get_config_file()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    rounds = [d for d in config["dependencies"] if "blind-question" in [ids.get(o) for o in d["outputs"]]]
    assert len(rounds) == 6  # New round, Next round, and the next pair after each of the four vote buttons
    assert all([ids[i] for i in d["show_progress_on"] or []] == ["blind-progress"] for d in rounds), rounds


def test_the_blind_page_keeps_the_rater_when_the_database_does_not_answer(studio, monkeypatch):
    """At page load a busy database says so and keeps the browser's rater id (it may be fine); only an id the
    studio never made is replaced."""
    from db import StoreBusy
    from studio.blind import _hello

    class Request:
        headers, client = {}, type("Client", (), {"host": "127.0.0.1"})()

    hello = _hello(studio)
    rater = studio.new_rater()
    assert hello(rater, Request()) == (rater, "You have not rated a round yet.")
    fresh, said = hello("forged", Request())
    assert fresh != "forged" and studio.store.rater_exists(fresh) and said == "You have not rated a round yet."

    def busy(*_args):
        raise StoreBusy("the database is busy (every connection is in use); nothing was saved — submit again")

    monkeypatch.setattr(studio.store, "rater_exists", busy)
    kept, said = hello(rater, Request())
    assert kept == rater and "the database is busy" in said
