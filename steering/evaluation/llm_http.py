"""The LLM judge's plumbing: where it asks (`JudgeSettings`) and how one chat request is made (`ChatClient`), with
retries and a reply cache. What is asked and how replies are read is the judge's business (`judge.py`).

Design choices, and why:

* Only the standard library talks HTTP (urllib), so the module adds no dependency and works with any
  OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama...).
* Failures are per request: retries with exponential backoff for rate limits, server errors and network trouble;
  after that the reply carries the error instead of text (the judge keeps it in `Judgment.detail`). One bad item
  must not end a long run.
* A JSONL cache keyed by model, messages and temperature (not the URL, so the same model behind another host
  reuses it) makes a rerun free: at temperature 0 the same request gets the same reply, so every successful reply
  is cached, even one whose rating cannot be parsed.
* The API key comes only from settings (normally the environment), is left out of the settings' repr and is
  never written to the cache or to an error.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["ChatClient", "JudgeSettings", "Reply", "cache_key"]

_TEMPERATURE = 0
_DEFAULT_BASE_URL = "https://api.openai.com/v1"
_DEFAULT_MODEL = "gpt-4o-mini"

Messages = list[dict[str, str]]


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


@dataclass(frozen=True)
class Reply:
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


def cache_key(model: str, messages: Messages) -> str:
    """The cache key of a request: what decides the reply at temperature 0, and nothing else (not the URL)."""
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


class _ReplyCache:
    """Replies by cache key, in memory and (with a path) appended to a JSONL file; safe across threads."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._replies: dict[str, str] = {}
        self._needs_newline = False
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
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
                self._replies[row["key"]] = row["content"]
        # A truncated last line has no newline; the next append must start on a fresh line or it is lost too.
        self._needs_newline = bool(text) and not text.endswith("\n")

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._replies.get(key)

    def remember(self, key: str, content: str) -> None:
        line = json.dumps({"key": key, "content": content}, ensure_ascii=False) + "\n"
        with self._lock:
            self._replies[key] = content
            if self._path is None:
                return
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="utf-8") as fh:
                fh.write(("\n" if self._needs_newline else "") + line)
                fh.flush()
            self._needs_newline = False


class ChatClient:
    """Chat requests to `settings.base_url`'s `/chat/completions`, with retries and the reply cache.

    `sleep` waits between retries; tests pass a no-op so backoff costs nothing. A malformed reply body (HTTP
    success but not a chat completion) is not retried and not cached: the reply carries the reason, and a later run
    asks again."""

    def __init__(self, settings: JudgeSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._cache = _ReplyCache(settings.cache)

    def cached(self, key: str) -> Reply | None:
        """The cached reply for `key`, or None when it has to be asked."""
        content = self._cache.get(key)
        return None if content is None else Reply(content, cached=True)

    def ask(self, messages: Messages, key: str) -> Reply:
        """A request with retries; never raises, so one failure cannot stop the others. A reply is cached under
        `key`."""
        s = self.settings
        errors: list[str] = []
        for attempt in range(s.retries + 1):
            try:
                content = self._post(messages)
            except _Final as exc:
                return Reply(None, self._redact(str(exc)), attempt + 1)
            except _Retryable as exc:
                errors.append(self._redact(str(exc)))
                if attempt < s.retries:
                    wait = min(s.backoff * 2 ** attempt, s.backoff_cap)
                    if exc.wait is not None:
                        wait = min(max(wait, exc.wait), s.backoff_cap)
                    self._sleep(wait)
                continue
            self._cache.remember(key, content)
            return Reply(content, None, attempt + 1)
        return Reply(None, f"gave up after {s.retries + 1} attempts: " + " | ".join(errors), s.retries + 1)

    def _redact(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text

    def _post(self, messages: Messages) -> str:
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
