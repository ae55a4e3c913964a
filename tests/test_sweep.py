"""Fluency measures, the offline trait proxy and the choice of default strengths."""

from __future__ import annotations

import math

import pytest
import torch

from steering.fluency import distinct_n, perplexity, repeated_ngram_share
from steering.proxy import TraitProxy, first_person
from steering.sweep import Fluent, choose_defaults


def test_repetition_and_diversity_on_known_texts():
    assert repeated_ngram_share("one two three four five six") == 0.0
    loop = "I'm going! " * 6  # tokens: i ' m going ! x6 = 30 tokens, 27 4-grams, 5 distinct
    assert repeated_ngram_share(loop) == pytest.approx(1 - 5 / 27)
    assert distinct_n("a b a b") == pytest.approx(2 / 3)
    assert distinct_n("word") == 1.0 and repeated_ngram_share("") == 0.0


def test_perplexity_matches_a_direct_computation(tiny_chat):
    lm = tiny_chat
    q, a = "how are you?", "fine thanks"
    [ppl] = perplexity(lm, [q], [a])
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                              add_generation_prompt=True)
    p_ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = lm.tokenizer(a, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + a_ids])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=ids).logits[0, len(p_ids) - 1:-1].float(), -1)
    nll = -logp.gather(-1, torch.tensor(a_ids).unsqueeze(-1)).mean()
    assert ppl == pytest.approx(math.exp(float(nll)), rel=1e-4)
    # batching with padding does not change it
    assert perplexity(lm, [q, "a much longer question here?"], [a, "ok"])[0] == pytest.approx(ppl, rel=1e-4)


def test_choose_defaults_takes_the_strongest_fluent_strength():
    base = {"pole": "base", "strength": 0.0, "repeat4": 0.02, "distinct2": 0.9, "perplexity": 4.0}
    rows = [base] + [
        {"pole": "high", "strength": 0.5, "repeat4": 0.03, "distinct2": 0.88, "perplexity": 5.0},
        {"pole": "high", "strength": 1.0, "repeat4": 0.06, "distinct2": 0.86, "perplexity": 5.9},
        {"pole": "high", "strength": 1.5, "repeat4": 0.30, "distinct2": 0.5, "perplexity": 9.0},
        {"pole": "high", "strength": 2.0, "repeat4": 0.02, "distinct2": 0.9, "perplexity": 4.0},  # after a failure
        {"pole": "low", "strength": 0.5, "repeat4": 0.10, "distinct2": 0.8, "perplexity": 4.0},
        {"pole": "low", "strength": 1.0, "repeat4": 0.02, "distinct2": 0.9, "perplexity": 4.0},
    ]
    assert choose_defaults(rows) == {"high": 1.0, "low": None}
    assert choose_defaults(rows, Fluent(max_perplexity_ratio=1.2))["high"] is None


def test_first_person_rewrite():
    assert first_person("You are calm. Your friends trust you, and you're kind.") == \
        "I am calm. My friends trust I, and I'm kind."


@pytest.fixture(scope="module")
def proxy():
    return TraitProxy()


def test_proxy_leans_the_right_way_on_plain_examples(proxy):
    s = proxy.score("Extraversion", [
        "I love big parties! I talk to everyone, dance all night and invite strangers to join our group.",
        "I prefer a quiet evening at home with a book. Crowds tire me and I leave parties early.",
    ])
    assert s[0] > 0 > s[1]


def test_a_variant_becomes_the_default_only_where_the_papers_method_was_not_fluent(tiny_llama, tmp_path):
    from helpers import pole_pair

    from steering import NeuronProfile
    from steering.build import read_manifest, record_sweep

    high, low = pole_pair(tiny_llama)
    high.save(tmp_path / "Extraversion_high.json")
    low.save(tmp_path / "Extraversion_low.json")
    record_sweep(tmp_path, "Extraversion", [{"exact": 1}], {"high": 1.0, "low": None}, {})
    record_sweep(tmp_path, "Extraversion", [{"variant": 1}], {"high": 1.5, "low": 0.5}, {}, top=5)
    entry = read_manifest(tmp_path)["traits"]["Extraversion"]
    assert entry["high"] == {"default_strength": 1.0}
    assert entry["low"] == {"default_strength": 0.5, "default_top_neurons": 5}
    assert entry["sweep"]["table"] == [{"exact": 1}] and entry["sweep_variants"]["top5"]["table"] == [{"variant": 1}]
    assert NeuronProfile.load(tmp_path / "Extraversion_low.json").meta["default_top_neurons"] == 5
    assert "default_top_neurons" not in NeuronProfile.load(tmp_path / "Extraversion_high.json").meta
