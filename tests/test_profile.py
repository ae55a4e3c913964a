"""Profiles: save/load round trip, model checks, malformed files, and the paper's released format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import pole_pair

from steering import ModelIdentity, NeuronProfile, ProfileError
from steering.settings import repo_root

PAPER = repo_root().parent / "shared" / "fixtures" / "npti-llama3-8b-excerpt"
LLAMA3_8B = ModelIdentity("Meta-Llama-3-8B-Instruct", 32, 14336)


def test_round_trip(tiny_llama, tmp_path):
    high, _ = pole_pair(tiny_llama)
    high.meta["default_strength"] = 0.8
    path = high.save(tmp_path / "p" / "Extraversion_high.json")
    again = NeuronProfile.load(path, expect=tiny_llama.identity)
    assert (again.trait, again.pole, again.model, again.meta) == (high.trait, high.pole, high.model, high.meta)
    for column in ("layer", "index", "diff", "prob", "p95"):
        assert np.array_equal(getattr(again, column), getattr(high, column))
    assert sum(again.per_layer()) == len(high)


def test_load_on_a_model_of_another_shape_fails_clearly(tiny_llama, tmp_path):
    high, _ = pole_pair(tiny_llama)
    path = high.save(tmp_path / "x.json")
    other = ModelIdentity("bigger", tiny_llama.sites.n_layers + 1, tiny_llama.sites.width, "f" * 16)
    with pytest.raises(ProfileError, match=r"made for tiny-llama \(3 layers x 64 MLP neurons.*loaded model is bigger"):
        NeuronProfile.load(path, expect=other)


@pytest.mark.parametrize("content, message", [
    ("not json", "not a readable JSON profile"),
    ('{"format": "something else"}', "not a persona-studio/neuron-profile file"),
    ('{"format": "persona-studio/neuron-profile", "version": 9}', "version 9"),
    ('{"format": "persona-studio/neuron-profile", "version": 1, "trait": "Extraversion"}', "missing or wrong field"),
    ('{"format": "persona-studio/neuron-profile", "version": 1, "trait": "Charm", "pole": "high", '
     '"model": {"name": "m", "n_layers": 2, "width": 4}, "neurons": {"layer": [], "index": [], "diff": [], '
     '"prob": [], "p95": []}}', "unknown trait 'Charm'"),
    ('{"format": "persona-studio/neuron-profile", "version": 1, "trait": "Openness", "pole": "high", '
     '"model": {"name": "m", "n_layers": 2, "width": 4}, "neurons": {"layer": [0], "index": [9], "diff": [0.1], '
     '"prob": [0.5], "p95": [1.0]}}', "index is outside"),
])
def test_malformed_files_get_a_clear_message(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=message):
        NeuronProfile.load(path)


@pytest.mark.skipif(not PAPER.is_dir(), reason="the shared fixtures are not beside this checkout")
def test_the_papers_format_imports():
    high = NeuronProfile.from_paper_json(PAPER / "Agreeableness_dict.json", "Agreeableness", "high", LLAMA3_8B)
    low = NeuronProfile.from_paper_json(PAPER / "Agreeableness_reversed_dict.json", "Agreeableness", "low", LLAMA3_8B)
    raw = json.loads((PAPER / "Agreeableness_dict.json").read_text())
    assert len(high) == sum(len(v) for v in raw.values())
    first = raw["0"][0]
    assert (high.layer[0], high.index[0]) == (first[0], first[1])
    assert high.diff[0] == pytest.approx(first[2]) and high.p95[0] == pytest.approx(first[4])
    assert high.per_layer() == [len(raw.get(str(i), [])) for i in range(32)]
    assert len(low) > 0 and low.pole == "low"


def test_paper_format_errors(tmp_path):
    path = tmp_path / "bad_dict.json"
    path.write_text('{"0": [[0, 1, 0.2]]}')
    with pytest.raises(ProfileError, match="not the paper's neuron format"):
        NeuronProfile.from_paper_json(path, "Openness", "high", LLAMA3_8B)


def test_top_keeps_the_largest_diffs(tiny_llama):
    high, _ = pole_pair(tiny_llama, n=12)
    top = high.top(5)
    assert len(top) == 5 and top.meta["top_neurons"] == 5
    assert sorted(top.diff.tolist(), reverse=True) == sorted(high.diff.tolist(), reverse=True)[:5]
    kept = set(zip(top.layer.tolist(), top.index.tolist()))
    assert kept <= set(zip(high.layer.tolist(), high.index.tolist()))
