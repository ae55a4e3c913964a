"""The LLM judge over real HTTP, against a scriptable OpenAI-compatible server run by the test on a free port."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from steering.methods.bank import TraitBank
from steering.evaluation.judge import JudgeItem, JudgeSettings, Judgment, OpenAIJudge


@dataclass(frozen=True)
class Canned:
    """One scripted answer of the fake server: a status, a raw body and a delay before answering."""

    status: int
    body: bytes
    delay: float = 0.0


def reply(content: str, delay: float = 0.0) -> Canned:
    body = {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
    return Canned(200, json.dumps(body).encode(), delay)


def status(code: int, text: str = "error") -> Canned:
    return Canned(code, json.dumps({"error": {"message": text}}).encode())


def number(body: dict) -> int:
    """The item number that `item(n)` put into the question."""
    return int(re.search(r"number (\d+)", text_of(body)).group(1))


def text_of(body: dict) -> str:
    return "\n".join(m["content"] for m in body["messages"])


def aspect_of(body: dict) -> str:
    """Which of the judge's two requests this is (only the fluency request speaks of fluency)."""
    return "fluency" if "fluen" in text_of(body).lower() else "trait"


class FakeAPI:
    """Records every request; answers from per-aspect queues, then from `respond` (a function of the body)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict, dict]] = []  # (path, body, headers)
        self.queues: dict[str, deque[Canned]] = {"trait": deque(), "fluency": deque()}
        self.respond: Callable[[dict], Canned] = lambda body: reply("Fine. Rating: [[3]]")
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""

    def push(self, aspect: str, *canned: Canned) -> None:
        self.queues[aspect].extend(canned)

    def bodies(self, aspect: str | None = None) -> list[dict]:
        with self.lock:
            return [b for _, b, _ in self.requests if aspect is None or aspect_of(b) == aspect]

    def answer(self, path: str, body: dict, headers: dict) -> Canned:
        with self.lock:
            self.requests.append((path, body, headers))
            queue = self.queues[aspect_of(body)] if isinstance(body, dict) and "messages" in body else deque()
            if queue:
                return queue.popleft()
        return self.respond(body)


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with api.lock:
                api.in_flight += 1
                api.max_in_flight = max(api.max_in_flight, api.in_flight)
            try:
                if self.path != "/v1/chat/completions":
                    canned = status(404, "no such path")
                else:
                    canned = api.answer(self.path, json.loads(raw), dict(self.headers))
                time.sleep(api.delay + canned.delay)
            finally:
                with api.lock:
                    api.in_flight -= 1
            self.send_response(canned.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(canned.body)))
            self.end_headers()
            self.wfile.write(canned.body)

        def log_message(self, *args) -> None:
            pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out closes its socket; the late write failing is expected


@pytest.fixture
def api(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeAPI()
    server = _QuietServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield fake
    server.shutdown()
    server.server_close()


class Sleeps(list):
    """A no-op `sleep` that remembers the waits asked for."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_judge(api: FakeAPI, sleeps: Sleeps | None = None, **overrides) -> OpenAIJudge:
    settings = JudgeSettings.from_env({"PERSONA_STUDIO_JUDGE_BASE_URL": api.url,
                                       "PERSONA_STUDIO_JUDGE_MODEL": "judge-model"}, **overrides)
    return OpenAIJudge(settings, sleep=sleeps if sleeps is not None else Sleeps())


def item(n: int = 0, trait: str = "Extraversion", pole: str = "high") -> JudgeItem:
    return JudgeItem(f"What did you do on your day off, number {n}?",
                     f"Answer {n}: I went to a party and met many new people.", trait, pole)


# --- parsing and the requests ----------------------------------------------------------------------------------

def test_scores_parsed_and_requests_reveal_neither_pole_nor_method(api):
    api.push("trait", reply("The writer seeks company and fun. Rating: [[4]]"))
    api.push("fluency", reply("Rating: [[5]]"))
    settings = JudgeSettings.from_env({"PERSONA_STUDIO_JUDGE_API_KEY": "k", "PERSONA_STUDIO_JUDGE_BASE_URL": api.url})
    judge = OpenAIJudge(settings, sleep=Sleeps())
    assert judge.name == "openai:gpt-4o-mini"

    [judgment] = judge.judge([item(pole="high")])

    assert (judgment.trait_score, judgment.fluency_score) == (4, 5)
    assert judgment.judge == "openai:gpt-4o-mini"
    assert len(api.requests) == 2
    for path, body, headers in api.requests:
        assert path == "/v1/chat/completions"
        assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0 and body["max_tokens"] > 0
        assert headers["Authorization"] == "Bearer k"
        text = text_of(body).lower()
        assert "what did you do on your day off" in text and "met many new people" in text
        for pole in ("high", "low"):
            assert not re.search(rf"\b{pole}\b", text), pole
        for method in ("npti", "sft", "lora", "prompt", "steer", "neuron"):
            assert method not in text, method
        assert "rating: [[n]]" in text
    [trait_body] = api.bodies("trait")
    for facet in TraitBank.load("Extraversion").facets:
        assert facet in text_of(trait_body)
    assert "Extraversion" in text_of(trait_body)
    [fluency_body] = api.bodies("fluency")
    assert "Extraversion" not in text_of(fluency_body)


def test_low_pole_request_is_identical_to_high_pole_request(api):
    """The pole is not in the request at all: both poles' items ask exactly the same thing."""
    make_judge(api).judge([item(pole="high"), item(pole="low")])
    bodies = [b for _, b, _ in api.requests]
    assert len(bodies) == 2  # identical requests are sent once
    assert sorted(aspect_of(b) for b in bodies) == ["fluency", "trait"]


def test_no_key_no_authorization_header(api):
    make_judge(api).judge([item()])
    assert all("Authorization" not in headers for _, _, headers in api.requests)


@pytest.mark.parametrize("content, score, note", [
    ("Rating: [[2]] at first, but on reflection... Rating: [[4]]", 4, None),
    ("Rating:[[ 3.5 ]]", 3.5, None),
    ("**Rating:** [[1]]", 1, None),
    ("Rating: [[7]]", None, "outside 1-5"),
    ("Rating: [[0]]", None, "outside 1-5"),
    ("Rating: [[4]] ... actually Rating: [[-2]]", None, "outside 1-5"),
    ("I'd say four", None, "no 'Rating: [[N]]'"),
    ("", None, "no 'Rating: [[N]]'"),
])
def test_last_rating_wins_and_bad_ratings_are_missing(api, content, score, note):
    api.push("trait", reply(content))
    [judgment] = make_judge(api).judge([item()])
    assert judgment.trait_score == score
    assert judgment.fluency_score == 3
    assert judgment.detail["trait"]["reply"] == content
    if note is None:
        assert "note" not in judgment.detail["trait"]
    else:
        assert note in judgment.detail["trait"]["note"]


# --- failures --------------------------------------------------------------------------------------------------

def test_server_errors_are_retried_with_growing_backoff(api):
    api.push("trait", status(500), status(503), reply("Rating: [[2]]"))
    sleeps = Sleeps()
    [judgment] = make_judge(api, sleeps, backoff=0.5).judge([item()])
    assert judgment.trait_score == 2 and judgment.fluency_score == 3
    assert len(api.bodies("trait")) == 3 and len(api.bodies("fluency")) == 1
    assert judgment.detail["trait"]["attempts"] == 3
    assert sleeps == [0.5, 1.0]


def test_rate_limit_is_retried(api):
    api.push("fluency", status(429, "slow down"), reply("Rating: [[5]]"))
    [judgment] = make_judge(api).judge([item()])
    assert judgment.fluency_score == 5 and len(api.bodies("fluency")) == 2


def test_client_error_is_not_retried(api):
    api.push("trait", status(400, "bad request: context too long"))
    sleeps = Sleeps()
    [judgment] = make_judge(api, sleeps).judge([item()])
    assert judgment.trait_score is None and judgment.fluency_score == 3
    assert len(api.bodies("trait")) == 1 and sleeps == []
    assert "400" in judgment.detail["trait"]["error"] and "context too long" in judgment.detail["trait"]["error"]


def test_persistent_server_error_gives_up_and_the_run_goes_on(api):
    api.respond = lambda body: status(500) if "number 0" in text_of(body) else reply("Rating: [[4]]")
    sleeps = Sleeps()
    judgments = make_judge(api, sleeps, retries=3, backoff=10, backoff_cap=25).judge([item(0), item(1)])
    assert [(j.trait_score, j.fluency_score) for j in judgments] == [(None, None), (4, 4)]
    broken = [b for b in api.bodies() if "number 0" in text_of(b)]
    assert len(broken) == 2 * (3 + 1)
    assert sorted(sleeps) == [10, 10, 20, 20, 25, 25]  # doubled each retry, capped
    assert "gave up after 4 attempts" in judgments[0].detail["trait"]["error"]


def test_connection_errors_are_retried_then_missing(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    judge = OpenAIJudge(JudgeSettings(f"http://127.0.0.1:{port}/v1", "m", retries=2, timeout=2), sleep=sleeps)
    [judgment] = judge.judge([item()])
    assert judgment.trait_score is None and judgment.fluency_score is None
    assert len(sleeps) == 4
    assert "connection error" in judgment.detail["trait"]["error"]


def test_timeout_is_retried(api):
    api.push("trait", reply("Rating: [[1]]", delay=1.0), reply("Rating: [[2]]"))
    [judgment] = make_judge(api, timeout=0.3).judge([item()])
    assert judgment.trait_score == 2 and len(api.bodies("trait")) == 2


@pytest.mark.parametrize("body", [b'{"oops": 1}', b"not json at all", b'{"choices": []}',
                                  b'{"choices": [{"message": {"content": null}}]}'])
def test_malformed_reply_body_is_missing_and_recorded(api, body, tmp_path):
    api.push("trait", Canned(200, body))
    cache = tmp_path / "cache.jsonl"
    [judgment] = make_judge(api, cache=cache).judge([item()])
    assert judgment.trait_score is None and judgment.fluency_score == 3
    assert len(api.bodies("trait")) == 1  # not retried
    assert "malformed reply" in judgment.detail["trait"]["error"]
    assert len(cache.read_text().splitlines()) == 1  # only the good fluency reply is cached
    [again] = make_judge(api, cache=cache).judge([item()])  # so a rerun asks again
    assert again.trait_score == 3 and len(api.bodies("trait")) == 2


# --- cache -----------------------------------------------------------------------------------------------------

def test_cache_makes_a_rerun_free(api, tmp_path):
    def respond(body: dict) -> Canned:
        if aspect_of(body) == "fluency":
            return reply("Rating: [[5]]")
        return reply("I'd say four" if number(body) == 2 else f"Rating: [[{1 + number(body)}]]")

    api.respond = respond  # item 2's reply is unparsable, but it is a successful reply: cached too
    cache = tmp_path / "judge" / "cache.jsonl"
    items = [item(0), item(1, "Neuroticism", "low"), item(2, "Openness")]
    first = make_judge(api, cache=cache, api_key="sk-secret-123").judge(items)
    assert len(api.requests) == 6
    assert len(cache.read_text().splitlines()) == 6

    second = make_judge(api, cache=cache, api_key="sk-secret-123").judge(items)
    assert len(api.requests) == 6
    assert [(j.trait_score, j.fluency_score) for j in second] == [(j.trait_score, j.fluency_score) for j in first]
    assert [(j.trait_score, j.fluency_score) for j in first] == [(1, 5), (2, 5), (None, 5)]
    assert all(j.detail[a]["cached"] for j in second for a in ("trait", "fluency"))
    assert "no 'Rating: [[N]]'" in second[2].detail["trait"]["note"]

    assert "sk-secret" not in cache.read_text()
    assert all("sk-secret" not in json.dumps(j.detail) for j in first + second)
    assert "sk-secret" not in repr(JudgeSettings("http://x", "m", api_key="sk-secret-123"))

    other = make_judge(api, cache=cache, base_url="http://127.0.0.1:1/v1")  # the key ignores the URL
    assert [j.trait_score for j in other.judge(items)] == [j.trait_score for j in first]
    assert len(api.requests) == 6


def test_truncated_cache_line_is_skipped_and_later_appends_stay_readable(api, tmp_path):
    cache = tmp_path / "cache.jsonl"
    make_judge(api, cache=cache).judge([item(0)])
    with cache.open("a") as fh:
        fh.write('{"key": "abc", "cont')  # a crash mid-write
    assert len(api.requests) == 2

    judgments = make_judge(api, cache=cache).judge([item(0), item(1)])
    assert [j.trait_score for j in judgments] == [3, 3]
    assert len(api.requests) == 4  # item 0 from the cache, item 1 asked

    make_judge(api, cache=cache).judge([item(0), item(1)])
    assert len(api.requests) == 4  # the appends after the broken line were readable
    lines = cache.read_text().splitlines()
    assert len(lines) == 5 and lines[2] == '{"key": "abc", "cont'


# --- concurrency, order, progress ------------------------------------------------------------------------------

def test_concurrency_is_bounded_and_order_kept(api):
    api.delay = 0.2
    api.respond = lambda body: reply(f"Rating: [[{1 + number(body) % 5}]]")
    items = [item(n) for n in range(6)]
    judgments = make_judge(api, concurrency=2).judge(items)
    assert len(api.requests) == 12
    assert api.max_in_flight == 2
    assert [j.trait_score for j in judgments] == [1, 2, 3, 4, 5, 1]
    assert [j.fluency_score for j in judgments] == [1, 2, 3, 4, 5, 1]


def test_progress_counts_items(api, tmp_path):
    class Bar:
        def __init__(self, total: int, desc: str) -> None:
            self.total, self.desc, self.done, self.closed = total, desc, 0, False
            bars.append(self)

        def update(self, n: int) -> None:
            self.done += n

        def close(self) -> None:
            self.closed = True

    bars: list[Bar] = []
    cache = tmp_path / "cache.jsonl"
    make_judge(api, cache=cache).judge([item(0)])
    make_judge(api, cache=cache).judge([item(0), item(1), item(2)], progress=Bar)
    [bar] = bars
    assert (bar.total, bar.done, bar.closed) == (3, 3, True)
    assert "openai:judge-model" in bar.desc


# --- settings and items ----------------------------------------------------------------------------------------

def test_settings_from_env():
    s = JudgeSettings.from_env({})
    assert (s.base_url, s.model, s.api_key) == ("https://api.openai.com/v1", "gpt-4o-mini", None)
    s = JudgeSettings.from_env({"OPENAI_BASE_URL": "http://a/v1/", "OPENAI_API_KEY": "o"})
    assert (s.base_url, s.api_key) == ("http://a/v1", "o")
    s = JudgeSettings.from_env({"OPENAI_BASE_URL": "http://a/v1", "OPENAI_API_KEY": "o",
                                "PERSONA_STUDIO_JUDGE_BASE_URL": "http://b/v1", "PERSONA_STUDIO_JUDGE_API_KEY": "p",
                                "PERSONA_STUDIO_JUDGE_MODEL": "qwen"}, concurrency=8, cache=Path("c.jsonl"))
    assert (s.base_url, s.model, s.api_key, s.concurrency, s.cache) == ("http://b/v1", "qwen", "p", 8,
                                                                        Path("c.jsonl"))
    assert JudgeSettings.from_env({"PERSONA_STUDIO_JUDGE_API_KEY": "", "OPENAI_API_KEY": "o"}).api_key == "o"
    assert JudgeSettings.from_env({"OPENAI_API_KEY": "o"}, api_key=None).api_key is None
    with pytest.raises(ValueError):
        JudgeSettings.from_env({}, concurrency=0)


def test_items_are_checked():
    assert JudgeItem("q", "a", "extraversion", "HIGH") == JudgeItem("q", "a", "Extraversion", "high")
    with pytest.raises(ValueError):
        JudgeItem("q", "a", "Humour", "high")
    with pytest.raises(ValueError):
        JudgeItem("q", "a", "Openness", "medium")
    assert Judgment(None, None, "x", {}).trait_score is None
