"""Identification: the paper's selection rule, and the whole loop on a tiny chat model."""

from __future__ import annotations

import json

import numpy as np
import torch

from steering import ActivationStats, Bins, NeuronProfile
from steering.engine.generation import Decoding
from steering.npti.identify import Selection, identify, select

DESCRIPTIONS = {"high": ["you love parties and people.", "you talk a lot and laugh loudly."],
                "low": ["you prefer quiet evenings alone.", "you keep to yourself."]}
QUESTIONS = ["what do you do at a party?", "how was your weekend?", "do you like crowds?"]


def stats_with(prob: list[float], n: int = 100) -> ActivationStats:
    s = ActivationStats(1, len(prob), Bins(0, 1, 10))
    s.n_tokens = n
    s.fire = torch.tensor([[round(p * n) for p in prob]])
    s.hist[5] = n  # every value in bin 5: p95 = 0.55
    s.max = torch.ones(1, len(prob))
    return s


def test_selection_keeps_top_k_then_while_diff_reaches_min():
    high = stats_with([0.9, 0.5, 0.6, 0.2, 0.35, 0.3])
    low = stats_with([0.1, 0.45, 0.3, 0.6, 0.3, 0.3])
    # diff = [0.8, 0.05, 0.3, -0.4, 0.05, 0.0]: top 1 always, then 0.3 >= 0.1; 0.05 is below
    cols = select(high, low, Selection(top_k=1, min_diff=0.1))
    assert cols["index"].tolist() == [0, 2]
    np.testing.assert_allclose(cols["diff"], [0.8, 0.3], atol=1e-6)
    np.testing.assert_allclose(cols["prob"], [0.9, 0.6], atol=1e-6)
    np.testing.assert_allclose(cols["p95"], [0.55, 0.55], atol=1e-6)
    # top_k keeps neurons even below min_diff
    assert select(high, low, Selection(top_k=4, min_diff=0.1))["index"].tolist() == [0, 2, 1, 4]
    # the low pole is the mirror image
    assert select(low, high, Selection(top_k=1, min_diff=0.1))["index"].tolist() == [3]


def test_identify_end_to_end_on_a_tiny_model(tiny_chat, tmp_path):
    answers = tmp_path / "answers.jsonl"
    result = identify(tiny_chat, "extraversion", QUESTIONS, DESCRIPTIONS, decoding=Decoding(max_new_tokens=6),
                      batch_size=2, selection=Selection(top_k=10, min_diff=0.05), answers_path=answers)
    for profile, pole in ((result.high, "high"), (result.low, "low")):
        assert (profile.trait, profile.pole) == ("Extraversion", pole)
        assert len(profile) >= 10 and profile.model == tiny_chat.identity
        assert profile.meta["tokens"] == result.stats[pole].n_tokens > 0
        assert profile.meta["selection"] == {"top_k": 10, "min_diff": 0.05}
    assert np.all(np.diff(result.high.diff) <= 0)  # sorted by diff, descending
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 2 * len(QUESTIONS) == len(result.answers)
    assert {r["pole"] for r in rows} == {"high", "low"} and all("answer" in r for r in rows)
    path = result.high.save(tmp_path / "Extraversion_high.json")
    assert len(NeuronProfile.load(path, expect=tiny_chat.identity)) == len(result.high)


def test_rebuilding_profiles_keeps_the_swept_defaults_together(tiny_chat, tmp_path):
    from steering.build import build_profiles, read_manifest, write_manifest

    write_manifest(tmp_path, {"traits": {"Openness": {"low": {"default_strength": 1.25, "default_top_neurons": 5}}}})
    build_profiles(tiny_chat, tmp_path, ["Openness"], decoding=Decoding(max_new_tokens=3), batch_size=2, seed=0,
                   selection=Selection(top_k=8, min_diff=0.5), limit=2, command="test")
    entry = read_manifest(tmp_path)["traits"]["Openness"]
    assert entry["low"]["default_strength"] == 1.25 and entry["low"]["default_top_neurons"] == 5
    low = NeuronProfile.load(tmp_path / "Openness_low.json")
    assert (low.meta["default_strength"], low.meta["default_top_neurons"]) == (1.25, 5)
    assert "default_strength" not in entry["high"] and len(low) == 8
