"""The trait corpus (profiles/bank/corpus/): the shipped files keep the rules, and a broken file is refused with its
file and line."""

from __future__ import annotations

import json

import pytest

from steering.methods import bank
from steering.methods.corpus import (MAX_LENGTH_RATIO, MAX_WORDS, MIN_WORDS, SPLITS, CorpusError, check_trait_corpus,
                             corpus_path, read_corpus, words)
from steering.traits import TRAITS


@pytest.mark.parametrize("trait", TRAITS)
def test_the_shipped_corpus_keeps_every_rule(trait):
    splits = check_trait_corpus(trait)  # fields, lengths, facets, duplicates, no text in two splits
    assert len(splits["train"]) >= 100 and len(splits["extra"]) >= 10
    search, dev = set(bank.questions(trait, "search")), bank.questions(trait, "dev")
    assert [p.question for p in splits["dev"]] == dev  # every development question, in order
    assert {p.question for p in splits["train"]} <= search
    everything = {q for t in TRAITS for s in ("search", "dev") for q in bank.questions(t, s)}
    assert not {p.question for p in splits["extra"]} & everything  # extra questions are in no bank file
    facets = set(bank.TraitBank.load(trait).facets)
    for split, pairs in splits.items():
        for p in pairs:
            h, lo = words(p.high), words(p.low)
            assert MIN_WORDS <= h <= MAX_WORDS and MIN_WORDS <= lo <= MAX_WORDS
            assert max(h, lo) <= MAX_LENGTH_RATIO * min(h, lo)
        used = {p.facet_high for p in pairs} | {p.facet_low for p in pairs}
        assert used <= facets and (split == "extra" or len(used) == 6)  # spread over the six facets
    answers = [a for pairs in splits.values() for p in pairs for a in (p.high, p.low)]
    assert len(answers) == len(set(answers)) and all(a.strip() for a in answers)


def _pair(q="What do you do on a Sunday?", n=40, **kw):
    row = {"question": q, "high": " ".join(["loud"] * n), "low": " ".join(["quiet"] * n),
           "facet_high": "Gregariousness", "facet_low": "Gregariousness"}
    row.update(kw)
    return json.dumps(row)


@pytest.mark.parametrize("lines, message", [
    ([_pair(), "{not json"], "line 2: not JSON"),
    ([_pair(), _pair("Other?", low="")], "line 2: field 'low' is missing or empty"),
    ([json.dumps({"question": "q?", "high": "a b"})], "line 1: field 'low' is missing or empty"),
    ([_pair(n=20)], "line 1: the high answer has 20 words"),
    ([_pair(high=" ".join(["x"] * 60))], "answers of 60 and 40 words"),
    ([_pair(), _pair()], "line 2: question already on line 1"),
    ([_pair(facet_high="Charm")], "line 1: facet_high 'Charm' is not one of"),
    (["[1, 2]"], "line 1: expected an object"),
])
def test_a_broken_corpus_file_is_refused_with_file_and_line(tmp_path, lines, message):
    path = tmp_path / "extraversion_train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=message) as info:
        read_corpus(path, bank.TraitBank.load("Extraversion").facets)
    assert str(path) in str(info.value)


def test_a_question_in_two_splits_is_refused_naming_both(tmp_path):
    for split in SPLITS:
        q = "Shared question?" if split in ("train", "dev") else f"Only in {split}?"
        corpus_path("Extraversion", split, tmp_path).write_text(
            _pair(q, high=f"{split} " + " ".join(["loud"] * 40), low=f"{split} " + " ".join(["calm"] * 40)) + "\n")
    with pytest.raises(CorpusError, match=r"extraversion_dev.jsonl, line 1: question also in the train split"):
        check_trait_corpus("Extraversion", tmp_path)
