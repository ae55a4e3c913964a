"""Automatic judging of generated answers: how much of a Big Five trait an answer shows, and how fluent it is.

Two judges share one protocol (`Judge`): the LLM judge here, which asks any OpenAI-compatible chat endpoint, and
the offline judge (`judges.py`, where `make_judge` makes either). Both return one `Judgment` per `JudgeItem`, in input order, with 1-5 scores where
None means "missing" — a score that could not be obtained is never guessed, so means computed downstream (see
`steering.evaluation.ratings.score_table`, which skips NaN) are over real ratings only.

Design choices of `OpenAIJudge`, and why:

* Two separate requests per item, one for trait expression and one for fluency, so one rating cannot anchor the
  other (a fluent answer is not thereby more agreeable).
* The judge is told the trait and its six IPIP-NEO facets but never the pole the method aimed at nor the method
  itself: a rater who knows the target tends to find it.
* Only the standard library talks HTTP (urllib), so the module adds no dependency and works with any
  OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama...).
* Failures are per request: retries with exponential backoff for rate limits, server errors and network trouble;
  after that the score is None and the error is kept in `Judgment.detail`. One bad item must not end a long run.
* A JSONL cache keyed by model, messages and temperature (not the URL, so the same model behind another host
  reuses it) makes a rerun free: at temperature 0 the same request gets the same reply, so every successful reply
  is cached, even one whose rating cannot be parsed.
* The API key comes only from settings (normally the environment), is left out of the settings' repr and is
  never written to the cache or to `detail`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence

from ..methods.bank import TraitBank
from ..traits import check_pole, check_trait
from .scales import LLM_SCALES

__all__ = ["Judge", "JudgeItem", "JudgeSettings", "Judgment", "OpenAIJudge"]

Aspect = Literal["trait", "fluency"]
_ASPECTS: tuple[Aspect, ...] = ("trait", "fluency")

_TEMPERATURE = 0
_DEFAULT_BASE_URL = "https://api.openai.com/v1"
_DEFAULT_MODEL = "gpt-4o-mini"

# The LAST "Rating: [[N]]" of a reply counts (a judge may quote the format before answering). A sign is matched
# so that "[[-1]]" is read as out of range rather than skipped in favour of an earlier rating; "**Rating:**"
# (markdown bold) is tolerated because chat models like to add it.
_RATING = re.compile(r"rating\s*\**\s*:\s*\**\s*\[\[\s*([+-]?\d+(?:\.\d+)?)\s*\]\]", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeItem:
    """One answer to judge. `pole` is the pole the method aimed at; it is kept for the record and for analysis
    but is never shown to an LLM judge."""

    question: str
    answer: str
    trait: str
    pole: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "trait", check_trait(self.trait))
        object.__setattr__(self, "pole", check_pole(self.pole))


@dataclass(frozen=True)
class Judgment:
    """Scores on 1-5 (trait: 1 = shows very little of the trait, 5 = very much; fluency: 1 = broken, 5 = natural);
    None marks a missing score. `detail` holds raw replies, parse notes and errors, JSON-serialisable."""

    trait_score: float | None
    fluency_score: float | None
    judge: str
    detail: dict


class Judge(Protocol):
    """Anything that scores answers. `progress` is tqdm-like: `progress(total=n, desc=...)` returns a bar with
    `.update(1)` and `.close()`; None shows nothing."""

    name: str

    def judge(self, items: Sequence[JudgeItem], progress: Callable | None = None) -> list[Judgment]: ...


@dataclass(frozen=True)
class JudgeSettings:
    """Where and how the LLM judge asks. `backoff` is the first retry's wait in seconds, doubled on each further
    retry up to `backoff_cap`. `cache` is a JSONL file of replies (None: no cache)."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 4
    retries: int = 4
    backoff: float = 1.0
    timeout: float = 60.0
    cache: Path | None = None
    max_tokens: int = 400
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        if not self.base_url.strip():
            raise ValueError("base_url must not be empty")
        if not self.model.strip():
            raise ValueError("model must not be empty")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.retries < 0:
            raise ValueError(f"retries must not be negative, got {self.retries}")
        if self.backoff < 0 or self.backoff_cap < 0:
            raise ValueError("backoff and backoff_cap must not be negative")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        object.__setattr__(self, "base_url", self.base_url.strip().rstrip("/"))
        if self.cache is not None:
            object.__setattr__(self, "cache", Path(self.cache))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: Any) -> "JudgeSettings":
        """Settings from the environment: `PERSONA_STUDIO_JUDGE_BASE_URL` (else `OPENAI_BASE_URL`, else the
        OpenAI API), `PERSONA_STUDIO_JUDGE_MODEL` (else gpt-4o-mini), `PERSONA_STUDIO_JUDGE_API_KEY` (else
        `OPENAI_API_KEY`). Empty variables count as unset. Keyword overrides win over the environment."""

        def first(*names: str) -> str | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        found: dict[str, Any] = {
            "base_url": first("PERSONA_STUDIO_JUDGE_BASE_URL", "OPENAI_BASE_URL") or _DEFAULT_BASE_URL,
            "model": first("PERSONA_STUDIO_JUDGE_MODEL") or _DEFAULT_MODEL,
            "api_key": first("PERSONA_STUDIO_JUDGE_API_KEY", "OPENAI_API_KEY"),
        }
        return cls(**{**found, **overrides})


# --- prompts ---------------------------------------------------------------------------------------------------

_OUTPUT_FORMAT = ("First explain your reasoning in two or three sentences. Then give your rating on a line of its "
                  "own, in exactly this format: Rating: [[N]] where N is a whole number from 1 to 5.")


def _trait_messages(item: JudgeItem, facets: Sequence[str]) -> list[dict[str, str]]:
    """Ask how strongly the author of the answer shows the trait. The scale is worded without the pole words
    ("high"/"low") so the request cannot hint at a target, and nothing names how the answer was produced."""
    system = ("You are a careful personality psychologist. You read short written replies and judge how much of a "
              "Big Five personality trait the person who wrote them reveals. You judge the writer's personality "
              "only, not whether the reply is good, polite or well written.")
    user = (f"Trait: {item.trait}\n"
            f"Facets of {item.trait} to consider: {', '.join(facets)}\n\n"
            f"Someone was asked the question below and wrote the reply that follows.\n\n"
            f"[Question]\n{item.question}\n[End of question]\n\n"
            f"[Reply]\n{item.answer}\n[End of reply]\n\n"
            f"Looking at all six facets, how strongly does the writer of the reply express {item.trait}?\n"
            f"1 = very little of it (the writer is at the bottom end of {item.trait})\n"
            f"2 = somewhat little\n"
            f"3 = neither much nor little, or no clear sign either way\n"
            f"4 = quite a lot\n"
            f"5 = a great deal of it (the writer is at the top end of {item.trait})\n\n"
            f"{_OUTPUT_FORMAT}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _fluency_messages(item: JudgeItem) -> list[dict[str, str]]:
    """Ask about language quality alone, so that trait strength and fluency are separate measurements."""
    system = ("You are an experienced editor. You judge how well a written reply reads: whether it is grammatical, "
              "coherent, natural and on topic. You ignore the personality, opinions or mood it shows.")
    user = (f"Someone was asked the question below and wrote the reply that follows.\n\n"
            f"[Question]\n{item.question}\n[End of question]\n\n"
            f"[Reply]\n{item.answer}\n[End of reply]\n\n"
            f"How fluent, coherent and natural is this reply as an answer to the question?\n"
            f"1 = broken: garbled, looping or unrelated to the question\n"
            f"2 = poor: hard to follow, with clear errors or repetition\n"
            f"3 = acceptable: understandable but awkward in places\n"
            f"4 = good: clear and natural with minor flaws\n"
            f"5 = excellent: fully fluent, coherent and natural\n\n"
            f"{_OUTPUT_FORMAT}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _parse_rating(text: str) -> tuple[float | None, str | None]:
    """The score of a reply and, when there is none, a note saying why. Out-of-range or missing ratings give
    None: a missing score is honest, a guessed one would bias the means."""
    matches = _RATING.findall(text)
    if not matches:
        return None, "no 'Rating: [[N]]' in the reply"
    value = float(matches[-1])
    if not 1.0 <= value <= 5.0:
        return None, f"rating {matches[-1]} is outside 1-5"
    return value, None


# --- HTTP ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Reply:
    """The outcome of one chat request: the reply text, or an error, never both."""

    content: str | None
    error: str | None = None
    attempts: int = 0
    cached: bool = False


class _Retryable(Exception):
    """A failure worth trying again (rate limit, server error, network trouble)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class _Final(Exception):
    """A failure that another attempt would not fix (client error, malformed body)."""


def _cache_key(model: str, messages: list[dict[str, str]]) -> str:
    payload = json.dumps({"model": model, "messages": messages, "temperature": _TEMPERATURE},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _retry_after(headers: Any) -> float | None:
    """A server's Retry-After in seconds, when it gives a plain number (the date form is ignored)."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _content_of(body: bytes) -> str:
    """`choices[0].message.content` of a chat completion, or _Final when the body is not one."""
    try:
        data = json.loads(body.decode("utf-8"))
        content = data["choices"][0]["message"]["content"]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Final(f"malformed reply: not JSON ({exc}): {body[:200]!r}") from None
    except (KeyError, IndexError, TypeError):
        raise _Final(f"malformed reply: no choices[0].message.content: {body[:200]!r}") from None
    if not isinstance(content, str):
        raise _Final(f"malformed reply: content is {type(content).__name__}, not text: {body[:200]!r}")
    return content


class OpenAIJudge:
    """The LLM judge over an OpenAI-compatible `/chat/completions` endpoint.

    `sleep` waits between retries; tests pass a no-op so backoff costs nothing. A malformed reply body (HTTP
    success but not a chat completion) is not retried and not cached: the score is None with the reason in
    `detail`, and a later run asks again."""

    scales = LLM_SCALES  # 1-5 for the trait's level and for fluency

    def __init__(self, settings: JudgeSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.name = f"openai:{settings.model}"
        self._sleep = sleep
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}
        self._cache_needs_newline = False
        if settings.cache is not None:
            self._load_cache(settings.cache)

    # cache

    def _load_cache(self, path: Path) -> None:
        """Read earlier replies; unreadable lines (e.g. the last one, cut short by a crash) are skipped."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("key"), str) and isinstance(row.get("content"), str):
                self._cache[row["key"]] = row["content"]
        # A truncated last line has no newline; the next append must start on a fresh line or it is lost too.
        self._cache_needs_newline = bool(text) and not text.endswith("\n")

    def _remember(self, key: str, content: str) -> None:
        path = self.settings.cache
        line = json.dumps({"key": key, "content": content}, ensure_ascii=False) + "\n"
        with self._lock:
            self._cache[key] = content
            if path is None:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(("\n" if self._cache_needs_newline else "") + line)
                fh.flush()
            self._cache_needs_newline = False

    def _cached(self, key: str) -> str | None:
        with self._lock:
            return self._cache.get(key)

    # requests

    def _redact(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text

    def _post(self, messages: list[dict[str, str]]) -> str:
        """One HTTP attempt; raises _Retryable or _Final on failure."""
        s = self.settings
        body = json.dumps({"model": s.model, "messages": messages, "temperature": _TEMPERATURE,
                           "max_tokens": s.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        request = urllib.request.Request(f"{s.base_url}/chat/completions", data=body, headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=s.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            try:
                text = exc.read()[:300].decode("utf-8", errors="replace")
            except Exception:  # the error body is only for the record
                text = ""
            message = f"HTTP {exc.code}: {text}".strip()
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(message, _retry_after(exc.headers)) from None
            raise _Final(message) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, bad status lines
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"connection error: {type(exc).__name__}: {reason}") from None
        return _content_of(raw)

    def _ask(self, messages: list[dict[str, str]], key: str) -> _Reply:
        """A request with retries; never raises, so one failure cannot stop the others."""
        s = self.settings
        errors: list[str] = []
        for attempt in range(s.retries + 1):
            try:
                content = self._post(messages)
            except _Final as exc:
                return _Reply(None, self._redact(str(exc)), attempt + 1)
            except _Retryable as exc:
                errors.append(self._redact(str(exc)))
                if attempt < s.retries:
                    wait = min(s.backoff * 2 ** attempt, s.backoff_cap)
                    if exc.wait is not None:
                        wait = min(max(wait, exc.wait), s.backoff_cap)
                    self._sleep(wait)
                continue
            self._remember(key, content)
            return _Reply(content, None, attempt + 1)
        return _Reply(None, f"gave up after {s.retries + 1} attempts: " + " | ".join(errors), s.retries + 1)

    # judging

    def judge(self, items: Sequence[JudgeItem], progress: Callable | None = None) -> list[Judgment]:
        """Score every item (two requests each, identical requests sent once), in input order."""
        items = list(items)
        facets = {trait: TraitBank.load(trait).facets for trait in {item.trait for item in items}}
        keys: list[dict[Aspect, str]] = []
        messages: dict[str, list[dict[str, str]]] = {}
        for item in items:
            asked = {"trait": _trait_messages(item, facets[item.trait]), "fluency": _fluency_messages(item)}
            row: dict[Aspect, str] = {}
            for aspect in _ASPECTS:
                row[aspect] = _cache_key(self.settings.model, asked[aspect])
                messages.setdefault(row[aspect], asked[aspect])
            keys.append(row)

        replies: dict[str, _Reply] = {}
        for key in messages:
            content = self._cached(key)
            if content is not None:
                replies[key] = _Reply(content, cached=True)
        waiting: dict[str, list[int]] = {}  # key still to ask -> the items that need its reply
        for i, row in enumerate(keys):
            for key in dict.fromkeys(row.values()):
                if key not in replies:
                    waiting.setdefault(key, []).append(i)
        open_keys = [{k for k in row.values() if k in waiting} for row in keys]

        bar = progress(total=len(items), desc=f"judging ({self.name})") if progress is not None else None
        try:
            if bar is not None:
                for row in open_keys:
                    if not row:
                        bar.update(1)
            if waiting:
                with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
                    futures = {pool.submit(self._ask, messages[key], key): key for key in waiting}
                    for future in as_completed(futures):
                        key = futures[future]
                        replies[key] = future.result()
                        for i in waiting[key]:
                            open_keys[i].discard(key)
                            if bar is not None and not open_keys[i]:
                                bar.update(1)
        finally:
            if bar is not None:
                bar.close()

        return [self._judgment({aspect: replies[row[aspect]] for aspect in _ASPECTS}) for row in keys]

    def _judgment(self, replies: dict[Aspect, _Reply]) -> Judgment:
        scores: dict[Aspect, float | None] = {}
        detail: dict[str, Any] = {}
        for aspect, reply in replies.items():
            record: dict[str, Any] = {"reply": reply.content, "cached": reply.cached, "attempts": reply.attempts}
            if reply.content is None:
                scores[aspect] = None
                record["error"] = reply.error
            else:
                scores[aspect], note = _parse_rating(reply.content)
                if note is not None:
                    record["note"] = note
            detail[aspect] = record
        return Judgment(scores["trait"], scores["fluency"], self.name, detail)
