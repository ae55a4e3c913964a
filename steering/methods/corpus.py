"""The trait corpus (profiles/bank/corpus/, written by this project): minimal pairs of first-person answers.

One file per trait and split, `<trait>_{train,dev,extra}.jsonl`, one line per question:
`{"question", "high", "low", "facet_high", "facet_low"}`. Both answers answer the same question on the same topic
at a similar length (35-90 words each, the longer at most 1.25x the shorter) and differ in the trait. The splits'
roles: `train` (the bank's search questions) builds everything learned from the corpus — the trait judge, the LoRA
adapters, NPTI's corpus profiles, the steering vectors; `dev` (the bank's development questions) chooses defaults;
`extra` (questions that are in no other file) is a final check only and feeds no choice.

Pure Python on purpose: reading and checking the corpus needs neither torch nor transformers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..settings import repo_root
from ..traits import check_trait

Split = Literal["train", "dev", "extra"]
SPLITS: tuple[str, ...] = ("train", "dev", "extra")
FIELDS = ("question", "high", "low", "facet_high", "facet_low")
MIN_WORDS, MAX_WORDS, MAX_LENGTH_RATIO = 35, 90, 1.25


class CorpusError(ValueError):
    """A corpus file breaks a rule; the message names the file and line."""


@dataclass(frozen=True)
class Pair:
    """One question answered at both poles of a trait."""

    question: str
    high: str
    low: str
    facet_high: str
    facet_low: str
    line: int = field(default=0, compare=False)  # where it stands in its file, for messages

    def answer(self, pole: str) -> str:
        return self.high if pole == "high" else self.low


def corpus_dir() -> Path:
    return repo_root() / "profiles" / "bank" / "corpus"


def corpus_path(trait: str, split: str, root: Path | None = None) -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown corpus split {split!r}: choose one of {', '.join(SPLITS)}")
    return (root or corpus_dir()) / f"{check_trait(trait).lower()}_{split}.jsonl"


def words(text: str) -> int:
    return len(text.split())


def _check_line(path: Path, n: int, line: str, facets: tuple[str, ...] | None) -> Pair:
    where = f"{path}, line {n}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise CorpusError(f"{where}: expected an object with fields {', '.join(FIELDS)}")
    for name in FIELDS:
        if not isinstance(row.get(name), str) or not row[name].strip():
            raise CorpusError(f"{where}: field {name!r} is missing or empty")
    pair = Pair(*(row[name].strip() for name in FIELDS), line=n)
    counts = {pole: words(pair.answer(pole)) for pole in ("high", "low")}
    for pole, count in counts.items():
        if not MIN_WORDS <= count <= MAX_WORDS:
            raise CorpusError(f"{where}: the {pole} answer has {count} words; the rule is {MIN_WORDS}-{MAX_WORDS}")
    if max(counts.values()) > MAX_LENGTH_RATIO * min(counts.values()):
        raise CorpusError(f"{where}: answers of {counts['high']} and {counts['low']} words; the longer may be at "
                          f"most {MAX_LENGTH_RATIO}x the shorter")
    if pair.high == pair.low:
        raise CorpusError(f"{where}: the high and low answers are identical")
    if facets is not None:
        for name in ("facet_high", "facet_low"):
            if getattr(pair, name) not in facets:
                raise CorpusError(f"{where}: {name} {getattr(pair, name)!r} is not one of {', '.join(facets)}")
    return pair


def read_corpus(path: str | Path, facets: tuple[str, ...] | None = None) -> list[Pair]:
    """Every pair of one corpus file, checked line by line; the first broken rule is raised with file and line.
    Within a file no question and no answer may repeat."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: not a readable corpus file ({exc})") from exc
    pairs: list[Pair] = []
    questions: dict[str, int] = {}
    answers: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        pair = _check_line(path, n, line, facets)
        if pair.question in questions:
            raise CorpusError(f"{path}, line {n}: question already on line {questions[pair.question]}")
        for answer in (pair.high, pair.low):
            if answer in answers:
                raise CorpusError(f"{path}, line {n}: answer already on line {answers[answer]}")
            answers[answer] = n
        questions[pair.question] = n
        pairs.append(pair)
    if not pairs:
        raise CorpusError(f"{path}: no pairs")
    return pairs


def load_corpus(trait: str, split: str, root: Path | None = None) -> list[Pair]:
    """One trait's pairs of one split, checked against the trait's facets."""
    from .bank import TraitBank  # the facet names

    path = corpus_path(trait, split, root)
    if not path.is_file():
        raise CorpusError(f"{path}: no such corpus file (the {split} split of {check_trait(trait)})")
    return read_corpus(path, TraitBank.load(trait).facets)


def check_trait_corpus(trait: str, root: Path | None = None) -> dict[str, list[Pair]]:
    """Every split of a trait, checked, and checked against each other: no question and no answer in two splits
    (the message names both files and the line of the second)."""
    splits = {split: load_corpus(trait, split, root) for split in SPLITS}
    seen: dict[str, str] = {}
    for split, pairs in splits.items():
        path = corpus_path(trait, split, root)
        for pair in pairs:
            for text in (pair.question, pair.high, pair.low):
                if text in seen and seen[text] != split:
                    kind = "question" if text == pair.question else "answer"
                    raise CorpusError(f"{path}, line {pair.line}: {kind} also in the {seen[text]} split "
                                      f"({corpus_path(trait, seen[text], root).name})")
                seen[text] = split
    return splits
