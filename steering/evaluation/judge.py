"""Automatic judging of generated answers: how much of a Big Five trait an answer shows, and how fluent it is.

Two judges share one protocol (`Judge`): the LLM judge here, which asks any OpenAI-compatible chat endpoint, and
the offline judge (`judges.py`, where `make_judge` makes either). Both return one `Judgment` per `JudgeItem`, in
input order, with 1-5 scores where None means "missing" — a score that could not be obtained is never guessed, so
means computed downstream (see `steering.evaluation.ratings.score_table`, which skips NaN) are over real ratings
only.

Design choices of `OpenAIJudge`, and why (its HTTP, retries, cache and API-key handling are in `llm_http.py`, whose
`JudgeSettings` this module re-exports):

* Two separate requests per item, one for trait expression and one for fluency, so one rating cannot anchor the
  other (a fluent answer is not thereby more agreeable).
* The judge is told the trait and its six IPIP-NEO facets but never the pole the method aimed at nor the method
  itself: a rater who knows the target tends to find it.
* Identical requests are sent once, and a request whose reply is cached is not sent at all.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, Sequence

from ..methods.bank import TraitBank
from ..traits import check_pole, check_trait
from .llm_http import ChatClient, JudgeSettings, Messages, Reply, cache_key
from .scales import LLM_SCALES

__all__ = ["Judge", "JudgeItem", "JudgeSettings", "Judgment", "OpenAIJudge"]

Aspect = Literal["trait", "fluency"]
_ASPECTS: tuple[Aspect, ...] = ("trait", "fluency")

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


# --- prompts ---------------------------------------------------------------------------------------------------

_OUTPUT_FORMAT = ("First explain your reasoning in two or three sentences. Then give your rating on a line of its "
                  "own, in exactly this format: Rating: [[N]] where N is a whole number from 1 to 5.")


def _trait_messages(item: JudgeItem, facets: Sequence[str]) -> Messages:
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


def _fluency_messages(item: JudgeItem) -> Messages:
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


# --- the judge -------------------------------------------------------------------------------------------------

class OpenAIJudge:
    """The LLM judge over an OpenAI-compatible `/chat/completions` endpoint, asked through `llm_http.ChatClient`
    (`sleep` waits between its retries). A request that failed for good, or whose reply is malformed or holds no
    rating, gives a None score with the reason in `detail`."""

    scales = LLM_SCALES  # 1-5 for the trait's level and for fluency

    def __init__(self, settings: JudgeSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.name = f"openai:{settings.model}"
        self._client = ChatClient(settings, sleep)

    def judge(self, items: Sequence[JudgeItem], progress: Callable | None = None) -> list[Judgment]:
        """Score every item (two requests each, identical requests sent once), in input order."""
        items = list(items)
        keys, messages = self._requests(items)
        replies: dict[str, Reply] = {}
        for key in messages:
            cached = self._client.cached(key)
            if cached is not None:
                replies[key] = cached
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
                self._ask_all(messages, waiting, open_keys, replies, bar)
        finally:
            if bar is not None:
                bar.close()

        return [self._judgment({aspect: replies[row[aspect]] for aspect in _ASPECTS}) for row in keys]

    def _requests(self, items: list[JudgeItem]) -> tuple[list[dict[Aspect, str]], dict[str, Messages]]:
        """Per item the cache key of each aspect's request, and the messages of each distinct key."""
        facets = {trait: TraitBank.load(trait).facets for trait in {item.trait for item in items}}
        keys: list[dict[Aspect, str]] = []
        messages: dict[str, Messages] = {}
        for item in items:
            asked = {"trait": _trait_messages(item, facets[item.trait]), "fluency": _fluency_messages(item)}
            row: dict[Aspect, str] = {}
            for aspect in _ASPECTS:
                row[aspect] = cache_key(self.settings.model, asked[aspect])
                messages.setdefault(row[aspect], asked[aspect])
            keys.append(row)
        return keys, messages

    def _ask_all(self, messages: dict[str, Messages], waiting: dict[str, list[int]], open_keys: list[set[str]],
                 replies: dict[str, Reply], bar: Any) -> None:
        """Ask every waiting key, `settings.concurrency` at a time, into `replies`; an item's progress step is taken
        when the last of its keys is answered."""
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            futures = {pool.submit(self._client.ask, messages[key], key): key for key in waiting}
            for future in as_completed(futures):
                key = futures[future]
                replies[key] = future.result()
                for i in waiting[key]:
                    open_keys[i].discard(key)
                    if bar is not None and not open_keys[i]:
                        bar.update(1)

    def _judgment(self, replies: dict[Aspect, Reply]) -> Judgment:
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
