"""The default model's shipped NPTI profiles: all ten poles, each matching the manifest and the model's shape."""

from __future__ import annotations

import json

import pytest

from steering import POLES, TRAITS, ModelIdentity, NeuronProfile
from steering.engine.models import DEFAULT_MODEL_NAME
from steering.settings import repo_root

FOLDER = repo_root() / "profiles" / DEFAULT_MODEL_NAME


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FOLDER / "manifest.json").read_text())


def test_manifest_says_how_the_profiles_were_made(manifest):
    model = ModelIdentity.from_dict(manifest["model"])
    assert (model.name, model.n_layers, model.width) == (DEFAULT_MODEL_NAME, 30, 1536)
    assert manifest["command"].startswith("python -m steering build-profiles")
    assert manifest["selection"] == {"top_k": 2000, "min_diff": 0.1}
    assert set(manifest["traits"]) == set(TRAITS)


@pytest.mark.parametrize("trait", TRAITS)
def test_every_pole_loads_and_matches_its_manifest_entry(manifest, trait):
    entry = manifest["traits"][trait]
    assert entry["questions"] >= 150 and entry["seconds"] > 0
    assert len((FOLDER / entry["answers"]).read_text().splitlines()) == 2 * entry["questions"]
    model = ModelIdentity.from_dict(manifest["model"])
    for pole in POLES:
        profile = NeuronProfile.load(FOLDER / entry[pole]["file"], expect=model)
        assert (profile.trait, profile.pole) == (trait, pole)
        assert len(profile) == entry[pole]["neurons"] >= 2000
        assert profile.per_layer() == entry[pole]["per_layer"]
        assert profile.meta["tokens"] == entry[pole]["tokens"] > 1000
        assert 0 < profile.meta["default_strength"] == entry[pole]["default_strength"] <= 4
    # every default is a configuration a sweep measured: the selection sweep (or, where it found no fluent
    # configuration for the generated source, the earlier fluency-only sweep)
    chosen = {r["variant"] for r in manifest["selection_sweep"][trait]["rows"]}
    earlier = {(r["pole"], r["strength"]) for r in entry["sweep"]["table"]}
    for pole in POLES:
        s = entry[pole]["default_strength"]
        assert f"npti@generated:{s:g}" in chosen or (pole, s) in earlier
