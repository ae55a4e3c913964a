"""Finding neurons by the model's structure; a clear error for architectures we do not know."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from steering import find_neuron_sites


def test_known_architectures(tiny):
    sites = tiny.sites
    expected = {"tiny-llama": ("model.layers.{}.mlp.act_fn", 3, 64), "tiny-qwen2": ("model.layers.{}.mlp.act_fn", 2, 48),
                "tiny-gpt2": ("transformer.h.{}.mlp.act", 2, 128)}[tiny.name]
    assert (sites.template, sites.n_layers, sites.width) == expected
    assert tiny.identity.n_layers == expected[1] and tiny.identity.width == expected[2]
    assert len(tiny.identity.fingerprint) == 16


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)) for _ in range(2)])
        self.embed = nn.Embedding(10, 4)

    def forward(self, input_ids):
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return x


def test_unknown_architecture_names_what_to_pass():
    with pytest.raises(ValueError, match=r"cannot find the MLP neurons of Odd.*neuron_module="):
        find_neuron_sites(Odd())


def test_explicit_template_works_and_bad_templates_are_explained():
    sites = find_neuron_sites(Odd(), "blocks.{}.1")
    assert (sites.n_layers, sites.width, sites.dtype) == (2, 8, torch.float32)
    with pytest.raises(ValueError, match="has no 'blocks.0.7'"):
        find_neuron_sites(Odd(), "blocks.{}.7")
    with pytest.raises(ValueError, match="must contain"):
        find_neuron_sites(Odd(), "blocks.1")


def test_shared_activation_module_is_refused():
    odd = Odd()
    odd.blocks[1][1] = odd.blocks[0][1]
    with pytest.raises(ValueError, match="share one activation module"):
        find_neuron_sites(odd, "blocks.{}.1")
