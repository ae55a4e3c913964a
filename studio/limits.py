"""What one client may ask of the studio, so that a script cannot starve the people rating: rounds per rater per
minute, unrated rounds a rater may hold, new raters per client address per hour, compare runs per address per
minute, generations running or waiting at once, and the size of a request body.

The counting is the `limits` library's moving windows in memory (the library slowapi and Flask-Limiter stand on):
one process counts its own clients; several replicas each count theirs. A refusal says when to come back:
`TooMany` (HTTP 429) and `Busy` (HTTP 503) carry `retry_after` in seconds."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields

from limits import RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

ENV_PREFIX = "PERSONA_STUDIO_LIMIT_"


class TooMany(Exception):
    """A client asked for more than a limit allows; nothing was generated or written. `retry_after`: seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(int(retry_after), 1)


class Busy(Exception):
    """The studio already has as many generations running or waiting as it takes; come back shortly."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    """The limits, each a setting `PERSONA_STUDIO_LIMIT_<NAME>` (e.g. PERSONA_STUDIO_LIMIT_ROUNDS_PER_MINUTE)."""

    rounds_per_minute: int = 10  # blind rounds one rater may start per minute
    unrated_rounds: int = 3  # blind rounds of the last 10 minutes one rater may hold without rating them
    raters_per_hour: int = 60  # new rater ids per client address per hour (a lab behind one address: raise it)
    compares_per_minute: int = 10  # compare and high-vs-low runs per client address per minute
    pending_generations: int = 4  # generations running or waiting at once; more are refused with 503 at once
    max_body_bytes: int = 65_536  # a request body larger than this is refused (413) before it is parsed
    trust_proxy: bool = False  # take the client address from X-Forwarded-For (behind a proxy, e.g. on a Space)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()} must be a whole number of at least 1, got {value!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Limits:
        """The defaults, overridden by the environment; trust_proxy defaults to on on a Hugging Face Space."""
        values: dict = {"trust_proxy": "SPACE_ID" in env}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            if name not in env:
                continue
            raw = env[name].strip()
            if f.name == "trust_proxy":
                if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
                    raise ValueError(f"{name} must be 1 or 0, got {raw!r}")
                values[f.name] = raw.lower() in ("1", "true", "yes")
                continue
            try:
                values[f.name] = int(raw)
            except ValueError:
                raise ValueError(f"{name} must be a whole number of at least 1, got {raw!r}") from None
        return cls(**values)


class Gate:
    """The limits in force for one studio: rate windows per key and a count of generations in flight."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items = {"round": RateLimitItemPerMinute(limits.rounds_per_minute),
                       "rater": RateLimitItemPerHour(limits.raters_per_hour),
                       "compare": RateLimitItemPerMinute(limits.compares_per_minute)}
        self._pending = 0
        self._issuing: Counter[str] = Counter()  # rounds being written, per rater
        self._lock = threading.Lock()

    def hit(self, what: str, key: str, message: str) -> None:
        """Count one `what` ("round", "rater" or "compare") for `key`; TooMany if that is over the limit."""
        item = self._items[what]
        if not self._limiter.hit(item, what, key):
            reset = self._limiter.get_window_stats(item, what, key).reset_time
            raise TooMany(message, math.ceil(reset - time.time()))

    @contextmanager
    def issuing(self, key: str, stored: Callable[[], int], cap: int, message: Callable[[int], str]) -> Iterator[None]:
        """Admit one more round for `key` while its `stored()` unrated rounds plus those still being written stay
        under `cap`, or TooMany. Checked and counted under one lock, so concurrent asks cannot all slip under it
        before the first of them is saved."""
        with self._lock:
            waiting = stored() + self._issuing[key]
            if waiting >= cap:
                raise TooMany(message(waiting), 60)
            self._issuing[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._issuing[key] -= 1
                if not self._issuing[key]:
                    del self._issuing[key]

    @contextmanager
    def generation(self) -> Iterator[None]:
        """A place among the generations in flight, or Busy at once when they are full (a flood is refused in
        microseconds instead of tying up a worker thread until its turn)."""
        with self._lock:
            if self._pending >= self.limits.pending_generations:
                raise Busy(f"the studio is busy ({self._pending} answers being written or waiting); try again in a "
                           "few seconds")
            self._pending += 1
        try:
            yield
        finally:
            with self._lock:
                self._pending -= 1


def client_address(host: str | None, headers: Mapping[str, str], trust_proxy: bool) -> str:
    """Who is asking: the first X-Forwarded-For address behind a trusted proxy, else the socket's peer."""
    if trust_proxy:
        forwarded = headers.get("x-forwarded-for") or headers.get("X-Forwarded-For")
        if forwarded and forwarded.split(",")[0].strip():
            return forwarded.split(",")[0].strip()
    return host or "unknown"
