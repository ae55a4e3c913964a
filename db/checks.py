"""What the store takes in and hands out, and what it refuses: the records, the refusal messages and the checks.

A malformed round is a programming error (`ValueError`) and is refused before the database is touched. A rating
that breaks a rule of the blind protocol is the rater's doing (`RatingRefused`, with a message meant for them). These
checks query nothing: the store runs them on what it read inside the write transaction that then inserts the
rating, so the checks and the insert see one consistent database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from .schema import KINDS, MODES, OUTCOMES, POLES, Kind, Mode, Output, Pole, Round

SCORE_RANGE = (1, 5)

RATER_ID = re.compile(r"[0-9a-f]{32}")  # what new_id() makes

MSG_NO_ROUND = "no such round"
MSG_NOT_YOURS = "this round was not issued to you"
MSG_NOT_BLIND = "this is not a blind round; only blind rounds are rated"
MSG_ALREADY = "this round was already rated"
MSG_SCORES = "rate every answer (1–5) for trait and fluency before submitting"
MSG_BEST = "pick the best portrayal among the answers before submitting"
MSG_QUICK = "this is a quick-vote round: vote A, B, tie or both bad"
MSG_FULL = "this round is rated in full: score every answer and pick the best portrayal"
MSG_OUTCOME = "vote 'a', 'b', 'tie' or 'bad'"


class RatingRefused(ValueError):
    """A rating (or a view of a blind round) the store will not accept; the message is meant for the rater."""


@dataclass(frozen=True)
class OutputIn:
    """One method's answer to record: `slot` is where the page shows it (for a blind round, after shuffling)."""

    slot: int
    method: str
    params: dict[str, Any]
    seed: int
    text: str
    n_tokens: int
    latency: float
    raw_text: str | None = None  # the model's untrimmed answer, when the page shows a trimmed `text`


@dataclass(frozen=True)
class RoundIn:
    """A round to record. `rater_id` is required for blind rounds (the round is issued to that rater).

    `mode` is how a blind round is rated: "full" (scores and a best pick, `record_rating`) or "quick" (a vote
    between the answers at slots 0 and 1, `record_vote`). A compare round is "full"."""

    kind: Kind
    question: str
    custom: bool
    trait: str
    pole: Pole
    model: str
    seconds: float
    outputs: list[OutputIn]
    rater_id: str | None = None
    mode: Mode = "full"


@dataclass(frozen=True)
class SlotView:
    """What a blind page may know before the vote: where an answer sits and what it says. Deliberately no method:
    anything on this object can reach the browser."""

    slot: int
    text: str


@dataclass(frozen=True)
class Reveal:
    """What a rater learns after voting: which method (and parameters) wrote the answer at each slot."""

    slot: int
    method: str
    params: dict[str, Any]
    text: str


def is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_rater_id(value: object) -> bool:
    """Whether `value` is an id `new_rater` could have made (32 lowercase hex digits); checked without a query."""
    return isinstance(value, str) and RATER_ID.fullmatch(value) is not None


def check_round(round: RoundIn) -> None:
    """Refuse a malformed round before touching the database (existence of the rater is checked inside it)."""
    if round.kind not in KINDS:
        raise ValueError(f"a round's kind is 'compare' or 'blind', not {round.kind!r}")
    if round.pole not in POLES:
        raise ValueError(f"a round's pole is 'high' or 'low', not {round.pole!r}")
    if round.mode not in MODES:
        raise ValueError(f"a round's mode is 'full' or 'quick', not {round.mode!r}")
    if round.mode == "quick" and round.kind != "blind":
        raise ValueError("a quick round is a blind vote between two answers: its kind must be 'blind'")
    if round.kind == "blind" and not round.rater_id:
        raise ValueError("a blind round is issued to a rater: give its rater_id")
    if not round.outputs:
        raise ValueError("a round needs at least one output")
    slots = [o.slot for o in round.outputs]
    if not all(is_int(s) and s >= 0 for s in slots):
        raise ValueError(f"output slots are integers from 0, got {slots}")
    if len(set(slots)) != len(slots):
        raise ValueError(f"output slots must be unique within a round, got {slots}")
    if round.mode == "quick" and sorted(slots) != [0, 1]:
        raise ValueError(f"a quick round shows exactly 2 answers, at slots 0 and 1 (A and B), got slots {slots}")
    for output in round.outputs:
        try:
            json.dumps(output.params, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"the params of slot {output.slot} ({output.method}) are not plain JSON: {err}") from err
        if not isinstance(output.params, dict):
            raise ValueError(f"the params of slot {output.slot} ({output.method}) must be a dict")
        if output.raw_text is not None and not isinstance(output.raw_text, str):
            raise ValueError(f"the raw_text of slot {output.slot} ({output.method}) is a string or None")


def check_viewer(found: Round | None, rater_id: str) -> None:
    """Refuse (`RatingRefused`) to show a round that does not exist or was not issued to this rater."""
    if found is None:
        raise RatingRefused(MSG_NO_ROUND)
    if found.rater_id is None or found.rater_id != rater_id:
        raise RatingRefused(MSG_NOT_YOURS)


def check_rateable(found: Round | None, rater_id: str, mode: str) -> None:
    """Refuse (`RatingRefused`) unless the round exists, is blind, was issued to this rater and is rated in `mode`.
    Ownership is checked before the mode so a stranger learns nothing about the round. Whether it was rated yet
    is the store's question (`Store._rateable` asks it next)."""
    if found is None:
        raise RatingRefused(MSG_NO_ROUND)
    if found.kind != "blind":
        raise RatingRefused(MSG_NOT_BLIND)
    if found.rater_id != rater_id:
        raise RatingRefused(MSG_NOT_YOURS)
    if found.mode != mode:
        raise RatingRefused(MSG_QUICK if found.mode == "quick" else MSG_FULL)


def check_scores(scores: Mapping[int, tuple[int, int]], by_slot: Mapping[int, Output]) -> dict[int, tuple[int, int]]:
    """The scores as {slot: (trait, fluency)} ints, or `RatingRefused` unless they cover exactly the round's slots
    with two integers in 1..5 each."""
    low, high = SCORE_RANGE
    if not isinstance(scores, Mapping) or not all(is_int(k) for k in scores) or set(scores) != set(by_slot):
        raise RatingRefused(MSG_SCORES)
    checked: dict[int, tuple[int, int]] = {}
    for slot, pair in scores.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise RatingRefused(MSG_SCORES)
        if not all(is_int(v) and low <= v <= high for v in pair):
            raise RatingRefused(MSG_SCORES)
        checked[int(slot)] = (int(pair[0]), int(pair[1]))
    return checked


def check_best(best: int, by_slot: Mapping[int, Output]) -> int:
    """The slot of the best portrayal as an int, or `RatingRefused` unless it is one of the round's slots."""
    if not is_int(best) or int(best) not in by_slot:
        raise RatingRefused(MSG_BEST)
    return int(best)


def check_outcome(outcome: object) -> None:
    """Refuse (`RatingRefused`) a quick vote that is not one of "a", "b", "tie" or "bad"."""
    if not isinstance(outcome, str) or outcome not in OUTCOMES:
        raise RatingRefused(MSG_OUTCOME)
