"""Fluency measures and the rule that chooses each pole's shipped NPTI and vector configuration."""

from __future__ import annotations

import math

import pytest
import torch

from steering.evaluation.fluency import distinct_n, perplexity, repeated_ngram_share
from steering.evaluation.sweep import Fluent, choose, grid, pole_rows, vector_layer_sets


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


def _frame(scores: dict):
    """A joined evaluate frame from {(variant, pole): [P(high) per question]} with fixed fluency numbers, except
    that variant 'npti@corpus:2' repeats itself."""
    import pandas as pd

    from steering.evaluation.evaluate import JOINED

    rows = []
    for (variant, pole), ps in scores.items():
        for i, p in enumerate(ps):
            loop = variant == "npti@corpus:2"
            rows.append({"key": f"{variant}{pole}{i}", "method": variant.split("@")[0].split(":")[0],
                         "variant": variant, "resolved": variant, "strength": "-", "trait": "Openness", "pole": pole,
                         "question": f"q{i}", "trait_score": p, "fluency_score": 0.3,
                         "repeat4": 0.2 if loop else 0.01, "distinct2": 0.9, "perplexity": 4.0})
    return pd.DataFrame(rows, columns=JOINED)


def test_the_rule_picks_the_best_fluent_win_rate_per_pole():
    base = [0.5, 0.5, 0.5, 0.5]
    frame = _frame({
        ("base", "high"): base, ("base", "low"): base,
        ("npti@generated:1", "high"): [0.6, 0.6, 0.4, 0.5],  # win (1 + 1 + 0 + 0.5) / 4 = 0.625
        ("npti@corpus:1", "high"): [0.6, 0.6, 0.6, 0.4],  # 0.75
        ("npti@corpus:2", "high"): [0.9, 0.9, 0.9, 0.9],  # 1.0, but it loops: not fluent
        ("npti@generated:1", "low"): [0.4, 0.4, 0.4, 0.4],  # 1.0 toward low
        ("npti@corpus:1", "low"): [0.45, 0.45, 0.45, 0.45],  # 1.0 too, but less far: loses the tie
        ("vector:0.05/1,2,3", "high"): [0.5, 0.5, 0.5, 0.5],  # all ties: 0.5
    })
    rows = pole_rows(frame)
    by = {(r["pole"], r["variant"]): r for r in rows}
    assert by[("high", "npti@generated:1")]["win"] == 0.625 and by[("high", "npti@corpus:1")]["win"] == 0.75
    assert not by[("high", "npti@corpus:2")]["fluent"] and by[("high", "npti@corpus:1")]["fluent"]
    assert by[("low", "npti@generated:1")]["toward"] == 0.6
    picks = choose(rows, "npti")
    assert picks == {("Openness", "high"): "npti@corpus:1", ("Openness", "low"): "npti@generated:1"}
    assert choose(rows, "vector") == {("Openness", "high"): "vector:0.05/1,2,3", ("Openness", "low"): None}
    assert choose(rows, "npti") != choose(pole_rows(frame, Fluent(max_repeat_increase=1.0)), "npti")


def test_the_grid_covers_both_sources_and_two_layer_sets():
    assert vector_layer_sets(30) == [(9, 10, 11), (14, 15, 16)]
    assert vector_layer_sets(3) == [(0, 1, 2)]
    specs = grid(30)
    assert specs[0] == "base" and "npti@generated:1" in specs and "npti@corpus:2" in specs
    assert "vector:0.08/14,15,16" in specs and "npti@corpus:1.5/noclamp" in specs and len(specs) == 1 + 6 + 3 + 4


def test_choices_land_in_the_profiles_the_vector_card_and_the_manifest(tiny_llama, tmp_path):
    from helpers import pole_pair, random_vector

    from steering import NeuronProfile
    from steering.build import read_manifest
    from steering.methods.dispatch import npti_source, profile_path
    from steering.evaluation.sweep import record_choices
    from steering.methods.vector import TraitVector

    high, low = pole_pair(tiny_llama, trait="Openness")
    for p in (high, low):
        for source in ("generated", "corpus"):
            p.save(profile_path(tmp_path, "Openness", p.pole, source))
    random_vector(tiny_llama, trait="Openness").save(tmp_path)
    rows = [{"trait": "Openness", "pole": "high", "variant": "npti@corpus:1.5", "method": "npti", "win": 0.8,
             "toward": 0.6, "fluent": True},
            {"trait": "Openness", "pole": "high", "variant": "vector:0.07/0,1", "method": "vector", "win": 0.9,
             "toward": 0.7, "fluent": True},
            {"trait": "Openness", "pole": "high", "variant": "npti@generated:1", "method": "npti", "win": 0.7,
             "toward": 0.6, "fluent": True},
            {"trait": "Openness", "pole": "low", "variant": "npti@generated:2", "method": "npti", "win": 0.9,
             "toward": 0.7, "fluent": False}]
    summary = record_choices(tmp_path, rows, {"questions": 4})
    assert summary["npti"] == {"Openness high": "npti@corpus:1.5", "Openness low": None}
    assert NeuronProfile.load(profile_path(tmp_path, "Openness", "high", "corpus")).meta["default_strength"] == 1.5
    # the losing source is still set to its own best fluent strength
    assert NeuronProfile.load(profile_path(tmp_path, "Openness", "high", "generated")).meta["default_strength"] == 1.0
    assert "default_strength" not in NeuronProfile.load(profile_path(tmp_path, "Openness", "low", "generated")).meta
    assert TraitVector.load(tmp_path, "Openness").meta["defaults"] == {"high": {"strength": 0.07, "layers": [0, 1]}}
    manifest = read_manifest(tmp_path)
    assert manifest["npti_default_source"] == {"Openness": {"high": "corpus"}}
    assert manifest["selection_sweep"]["Openness"]["settings"] == {"questions": 4}

    class FakeLM:
        name = "tiny"
    assert npti_source(FakeLM(), "Openness", "high", tmp_path) == "corpus"
    assert npti_source(FakeLM(), "Openness", "low", tmp_path) == "generated"
