"""The persona bank ships complete: every trait, both poles, search and development questions kept apart."""

from __future__ import annotations

import re

import pytest

from steering import TRAITS
from steering.methods.bank import TraitBank, questions
from steering.methods.questions import read_questions


@pytest.mark.parametrize("trait", TRAITS)
def test_bank_is_complete(trait):
    bank = TraitBank.load(trait)
    assert len(bank.facets) == 6
    for pole in ("high", "low"):
        assert bank.adjectives[pole].startswith(("a ", "an "))
        descriptions = bank.descriptions[pole]
        assert len(descriptions) >= 20 and len(set(descriptions)) == len(descriptions)
        for d in descriptions:
            second_person = re.search(r"\byou(r)?\b", d, re.I) and not re.search(r"\b(I|my|me)\b", d)
            assert second_person and 3 <= len(re.findall(r"[.!?](\s|$)", d)) <= 5, d
    search, dev = questions(trait, "search"), questions(trait, "dev")
    assert len(search) >= 150 and len(dev) >= 30
    assert not set(search) & set(dev)
    assert len(set(search)) == len(search)


def test_bank_refuses_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown trait 'Charisma'"):
        TraitBank.load("Charisma")
    with pytest.raises(ValueError, match="unknown split"):
        questions("Openness", "train")
    (tmp_path / "openness.json").write_text('{"trait": "Openness"}')
    with pytest.raises(ValueError, match="not a readable persona bank file"):
        TraitBank.load("Openness", root=tmp_path)


def test_personalitybench_files_load_from_any_path(tmp_path):
    path = tmp_path / "elsewhere.jsonl"
    path.write_text('{"question": "What do you do on a rainy day?", "id": 7}\n\n{"question": " Why? "}\n')
    assert read_questions(path) == [{"question": "What do you do on a rainy day?", "id": 7}, {"question": "Why?"}]
