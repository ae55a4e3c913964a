"""What a round hands the pages: the methods' names as the pages show them, a column per method (its answer trimmed
to whole sentences, with the trait read-out of the tokens still shown), and the blind round as its rater sees it
(slots and texts only, never the methods)."""

from __future__ import annotations

from dataclasses import dataclass

from db import OutputIn, SlotView
from steering.engine.generation import trim_to_sentence
from steering.methods.bank import TraitBank
from steering.traits import check_pole

LABELS = {"base": "Base model", "simple": "Simple prompt", "p2": "P² persona prompt", "sft": "LoRA fine-tune",
          "npti": "NPTI (neurons)", "vector": "Activation vector"}
SLOT_NAMES = "ABCDEF"
NOTES = {  # one line per method, wherever results name methods
    "base": "the model as shipped, asked the question alone",
    "simple": "a system prompt naming the pole's adjectives (\"You are an outgoing, sociable person\")",
    "p2": "a system prompt with a rich description of a person at the pole (P², persona prompting)",
    "sft": "a LoRA adapter fine-tuned on our corpus's answers of the pole (supervised fine-tuning)",
    "npti": "NPTI: the MLP neurons whose firing differs between the poles, shifted while the model writes",
    "vector": "a direction added to the residual stream: the mean difference of the poles' activations",
}


def target_text(trait: str, pole: str) -> str:
    """The blind round's question to the rater, e.g. "Which answers sound most like a reserved, introverted
    person?" (from the persona bank's adjective phrase, so it never names a method)."""
    return f"Which answers sound most like {TraitBank.load(trait).adjectives[check_pole(pole)]}?"


@dataclass(frozen=True)
class Column:
    method: str
    label: str
    text: str | None  # None: unavailable
    params: dict
    reason: str | None = None  # why the method is unavailable
    readout: tuple[tuple[str, float], ...] | None = None  # (token, trait read-out) where the trait has a vector
    prompt: str | None = None  # what the method was given (system prompt, adapter, neurons, vector), in words
    raw_text: str | None = None  # the answer before trimming to whole sentences


def shown_answer(answer) -> tuple[str, tuple | None]:
    """What the pages show of an answer: trimmed to its last whole sentence (generation.trim_to_sentence), and
    its read-out cut to the tokens that are still shown."""
    text = trim_to_sentence(answer.text, answer.finished)
    readout = answer.readout
    if readout and text != answer.text:
        def visible(t: str) -> int:  # decoders differ in the spaces they put between pieces
            return len("".join(t.split()))

        keep, target, seen = [], visible(text.rstrip("…")), 0
        for piece, value in readout:
            if seen >= target:
                break
            keep.append((piece, value))
            seen += visible(piece)
        readout = tuple(keep)
    return text, readout


def output_in(slot: int, column: Column, seed: int, seconds: float) -> OutputIn:
    """A compare column as the store records it."""
    return OutputIn(slot, column.method, column.params, seed, column.text, column.params["n_tokens"], seconds,
                    raw_text=column.raw_text)


@dataclass(frozen=True)
class CompareResult:
    round_id: str | None
    question: str
    columns: list[Column]
    seconds: float


@dataclass(frozen=True)
class BlindRound:
    round_id: str
    question: str
    target: str
    custom: bool
    slots: list[SlotView]  # slot and text only: the page is never told which method wrote what
    mode: str = "full"  # "full": score every answer and pick the best; "quick": two answers, one vote
