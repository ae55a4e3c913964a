"""The persona bank (profiles/bank/, written by this project): per trait, the six IPIP-NEO facet names, the
adjective phrase of the simple prompt, persona descriptions of each pole, and search / development questions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .questions import read_questions
from ..settings import repo_root
from ..traits import POLES, check_trait

Split = Literal["search", "dev"]


def bank_dir() -> Path:
    return repo_root() / "profiles" / "bank"


@dataclass(frozen=True)
class TraitBank:
    trait: str
    facets: tuple[str, ...]
    adjectives: dict[str, str]  # pole -> "an extraverted person"
    descriptions: dict[str, tuple[str, ...]]  # pole -> second-person persona descriptions

    @classmethod
    def load(cls, trait: str, root: Path | None = None) -> "TraitBank":
        trait = check_trait(trait)
        path = (root or bank_dir()) / f"{trait.lower()}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            bank = cls(trait, tuple(data["facets"]), {p: str(data["adjectives"][p]) for p in POLES},
                       {p: tuple(str(d) for d in data["descriptions"][p]) for p in POLES})
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable persona bank file ({exc})") from exc
        if data.get("trait") != trait or len(bank.facets) != 6 or not all(bank.descriptions[p] for p in POLES):
            raise ValueError(f"{path}: expected trait {trait}, six facets and descriptions for both poles")
        return bank


def questions(trait: str, split: Split = "search", root: Path | None = None) -> list[str]:
    """The bank's questions for a trait: `search` for identification, `dev` (kept apart) for choosing strengths."""
    trait = check_trait(trait)
    if split not in ("search", "dev"):
        raise ValueError(f"unknown split {split!r}: choose search or dev")
    return [row["question"] for row in read_questions((root or bank_dir()) / "questions" / f"{trait.lower()}_{split}.jsonl")]
