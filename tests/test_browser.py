"""The studio in a real browser: Playwright drives Debian's Chromium against the app on a local port.

The slow test starts `app.py` itself (the default model, a real SQLite file); the fast one serves the studio on a
tiny model whose answers are HTML and script, to prove that model output is shown as text and never run."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from steering.engine.generation import Answer
from studio.core import LABELS

ROOT = Path(__file__).resolve().parent.parent
METHOD_WORDS = [*LABELS.values(), "NPTI", "LoRA", "fine-tune", "P²"]
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"><b id=bold>bold</b> & more"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen | None, seconds: float, log: Path | None = None) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{log.read_text() if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} did not answer in {seconds} s")


def _method_names_in(html: str) -> list[str]:
    return [w for w in METHOD_WORDS if w in html]


def _rate_blind_round(page, n_expected: int | None = None) -> int:
    """Start a blind round, check the page names no method, rate every answer, submit; return the slot count."""
    from playwright.sync_api import expect

    assert _method_names_in(page.content()) == []
    page.locator("#blind-mode label", has_text="Full form").click()
    page.get_by_role("button", name="New round").click()
    expect(page.locator(".full-answer textarea").first).not_to_have_value("", timeout=300_000)
    n = page.locator(".full-answer textarea:visible").count()
    if n_expected is not None:
        assert n == n_expected
    assert _method_names_in(page.content()) == [], "a method name reached the page before the vote"
    for i, slot in enumerate("ABCDEF"[:n]):
        page.locator(f".trait-{slot} label", has_text=str(1 + i % 5)).click()
        page.locator(f".fluency-{slot} label", has_text=str(5 - i % 5)).click()
    page.locator("#blind-best label", has_text="B").click()
    page.locator("#blind-submit").click()
    expect(page.locator("#blind-reveal")).to_contain_text("NPTI", timeout=60_000)
    return n


@pytest.mark.slow
def test_the_app_compares_and_rates_blind_in_a_browser(browser, default_home, tmp_path):
    from playwright.sync_api import expect

    port, database, log = _free_port(), tmp_path / "ratings.sqlite", tmp_path / "app.log"
    env = {**os.environ, "PERSONA_STUDIO_HOME": str(default_home), "PERSONA_STUDIO_PORT": str(port),
           "PERSONA_STUDIO_DB": f"sqlite:///{database}", "PERSONA_STUDIO_MAX_NEW_TOKENS": "16"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(base + "/", proc, 300, log)
        page = browser.new_page()
        page.goto(base + "/")
        page.locator("textarea").first.fill("A friend invites you to a weekend festival. What do you do?")
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#compare-status")).to_contain_text("answers in one batch", timeout=300_000)
        for m in LABELS:  # every method's artefacts are shipped for the default model: every column answers
            expect(page.locator(f".answer-{m} textarea")).not_to_have_value("", timeout=5_000)
        for label in LABELS.values():
            expect(page.get_by_role("heading", name=label)).to_be_visible()
        page.goto(base + "/blind/")
        n = _rate_blind_round(page, n_expected=len(LABELS))
        with sqlite3.connect(database) as db:
            assert db.execute("select count(*) from ratings").fetchone()[0] == n
            assert db.execute("select count(*) from picks").fetchone()[0] == 1
            assert db.execute("select count(*) from rounds where kind = 'compare'").fetchone()[0] == 1
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # a generation still running: do not hide the test's own error
            proc.kill()
            proc.wait(15)


def test_model_output_is_shown_as_text_never_run(browser, tmp_path):
    """Every answer of this studio is HTML with a script; the pages must show it as text."""
    from playwright.sync_api import expect
    from helpers import serve

    from studio.server import create_app

    lm_studio = _tiny_studio(tmp_path)
    # the read-out colours each token: the hostile text arrives there as a token too
    lm_studio._run = lambda rows, *_: [(Answer(HOSTILE, 5, True, (HOSTILE,), ((HOSTILE, 0.7),)),
                                        {"method": r.method, "seed": r.seed}) for r, _ in rows]
    with serve(create_app(lm_studio)) as base:
        page = browser.new_page()
        page.goto(base + "/")
        page.locator("textarea").first.fill("<i>hello</i>?")
        page.get_by_role("button", name="Generate").click()
        expect(page.locator(".answer-base textarea")).to_have_value(HOSTILE, timeout=60_000)
        expect(page.locator(".readout-base").last).to_contain_text("mean read-out +0.70")
        expect(page.locator(".readout-base").last).to_contain_text("<script>")  # shown as text
        page.goto(base + "/blind/")
        _rate_blind_round(page)
        assert page.locator(".full-answer textarea").first.input_value() == HOSTILE
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#bold").count() == 0
        # the results tab reads the rating back: counts, leaderboard rows, a plot
        page.goto(base + "/")
        page.get_by_role("tab", name="Results").click()
        expect(page.locator("#results-summary")).to_contain_text("1 blind round rated", timeout=30_000)
        expect(page.locator("#results-summary")).to_contain_text("6 answer ratings")
        # every method listed, none ranked after one round, and said so
        expect(page.locator("#leaderboard")).to_contain_text("not enough rounds yet (1 of 10)")


def _tiny_studio(tmp_path):
    from helpers import tiny_shipped

    from db import Store
    from steering.engine.generation import Decoding
    from studio.core import Studio

    lm, shipped = tiny_shipped(tmp_path, adapter_pole="low")
    return Studio(lm, Store(f"sqlite:///{tmp_path / 'studio.sqlite'}"), Decoding(max_new_tokens=6), profiles=shipped)


def _network_texts(responses) -> str:
    """The bodies of the page's finished, non-streaming responses (the queue's event streams are left out)."""
    texts = []
    for r in responses:
        if "event-stream" in (r.headers.get("content-type") or ""):
            continue
        try:
            texts.append(r.text())
        except Exception:  # noqa: BLE001 - a redirect or a body the browser did not keep
            pass
    return "\n".join(texts)


def test_blind_rating_flows_in_a_browser(browser, tmp_path):
    """Quick votes take one click and the next pair follows; the rater survives a reload; in the main page's Blind
    tab the frame grows with the round (no scrollbar inside), errors show next to Submit and the reveal is
    scrolled into view; the Results tab shows the votes without Refresh; no method name reaches the blind page
    (HTML, config, network) before the vote."""
    from playwright.sync_api import expect
    from helpers import page_says, serve

    from studio.server import create_app

    studio = _tiny_studio(tmp_path)
    with serve(create_app(studio)) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        responses = []
        page.on("response", lambda r: responses.append(r))
        page.goto(base + "/blind/")
        expect(page.locator("#blind-count")).to_contain_text("not rated a round yet", timeout=30_000)
        rater = page.evaluate("localStorage.getItem('persona-studio-rater')")
        assert rater
        with urllib.request.urlopen(base + "/blind/config") as r:
            assert _method_names_in(r.read().decode()) == []
        with page_says(page, "blind-error", "blind-count", "blind-reveal"):
            # quick vote: one click, the next pair appears
            page.locator("#blind-start").click()
            first = page.locator(".quick-answer textarea").first
            expect(first).not_to_have_value("", timeout=60_000)
            pair = [t.input_value() for t in page.locator(".quick-answer textarea").all()]
            assert _method_names_in(page.content()) == [] and _method_names_in(_network_texts(responses)) == []
            page.locator("#quick-a").click()
            expect(page.locator("#blind-reveal")).to_contain_text("The last pair was", timeout=30_000)
            expect(page.locator("#blind-count")).to_contain_text("You have rated 1 round")
            expect(page.locator("#quick-a")).to_be_visible(timeout=60_000)
            expect(first).not_to_have_value(pair[0])
        assert studio.store.counts()["votes"] == 1 and studio.store.counts()["blind_rounds"] == 2
        # a reload keeps the rater (one person, one rater)
        page.reload()
        expect(page.locator("#blind-count")).to_contain_text("You have rated 1 round", timeout=30_000)
        assert studio.store.counts()["raters"] == 1  # (the stored value is re-encrypted with a new IV at load)

        # the full form inside the main page's Blind tab
        page.goto(base + "/")
        page.get_by_role("tab", name="Blind rating").click()
        frame = page.frame_locator("iframe.blind-frame")
        expect(frame.locator("#blind-count")).to_contain_text("You have rated 1 round", timeout=30_000)
        frame.locator("#blind-mode label", has_text="Full form").click()
        frame.locator("#blind-start").click()
        expect(frame.locator(".full-answer textarea").first).not_to_have_value("", timeout=60_000)
        n = frame.locator(".full-answer textarea:visible").count()
        frame.locator("#blind-submit").click()  # nothing scored yet
        expect(frame.locator("#blind-error")).to_contain_text("Before submitting: score answers A", timeout=10_000)
        error, submit = frame.locator("#blind-error").bounding_box(), frame.locator("#blind-submit").bounding_box()
        assert abs(error["y"] - (submit["y"] + submit["height"])) < 150  # next to the button, not off-screen
        for i, slot in enumerate("ABCDEF"[:n]):
            frame.locator(f".trait-{slot} label", has_text=str(1 + i % 5)).click()
            frame.locator(f".fluency-{slot} label", has_text="4").click()
        frame.locator("#blind-best label", has_text="A").click()
        frame.locator("#blind-submit").click()
        expect(frame.locator("#blind-reveal")).to_contain_text("Here is who wrote what", timeout=30_000)
        expect(frame.locator("#blind-next")).to_be_visible()
        page.wait_for_timeout(800)  # the frame follows its content every 250 ms
        inner = page.locator("iframe.blind-frame").evaluate(
            "f => [f.contentDocument.documentElement.scrollHeight, f.clientHeight]")
        assert inner[0] <= inner[1] + 2, f"a scrollbar inside the frame: content {inner[0]} px, frame {inner[1]} px"
        box = frame.locator("#blind-reveal").bounding_box()
        assert 0 <= box["y"] < 900, "the reveal was not scrolled into view"
        assert studio.store.counts()["picks"] == 1 and studio.store.counts()["ratings"] == n

        # the results, without pressing Refresh
        page.evaluate("window.scrollTo(0, 0)")
        page.get_by_role("tab", name="Results").click()
        expect(page.locator("#results-summary")).to_contain_text("2 blind rounds rated", timeout=30_000)
        expect(page.locator("#results-summary")).to_contain_text("1 quick vote)")
