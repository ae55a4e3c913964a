"""Test helpers: random profiles for a tiny model, and activation capture."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from steering import NeuronProfile


def random_profile(lm, pole: str, n: int = 12, seed: int = 0, exclude: np.ndarray | None = None,
                   trait: str = "Extraversion") -> NeuronProfile:
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(lm.sites.n_layers * lm.sites.width), exclude if exclude is not None else [])
    flat = rng.choice(pool, n, replace=False)
    return NeuronProfile(trait, pole, lm.identity, flat // lm.sites.width, flat % lm.sites.width,
                         rng.uniform(0.1, 0.5, n), rng.uniform(0.2, 0.8, n), rng.uniform(0.5, 2.0, n))


def pole_pair(lm, n: int = 12, seed: int = 0, trait: str = "Extraversion"):
    high = random_profile(lm, "high", n, seed, trait=trait)
    low = random_profile(lm, "low", n, seed + 1, exclude=high.layer * lm.sites.width + high.index, trait=trait)
    return high, low


def random_vector(lm, seed: int = 0, layers=(1,), trait: str = "Extraversion"):
    """A trait vector of random directions and norms for a tiny model (read-out at the last layer)."""
    from steering.methods.vector import TraitVector

    rng = np.random.default_rng(seed)
    config = lm.model.config
    n, h = lm.sites.n_layers, getattr(config, "hidden_size", None) or config.n_embd
    return TraitVector(trait, lm.identity, rng.normal(size=(n, h)), rng.uniform(1, 3, n), rng.normal(size=n),
                       readout_layer=n - 1, layers=layers)


@contextmanager
def capture(lm):
    """Record every site's input and (final, post-steering) output per call: {layer: [(input, output), ...]}.

    Registered last, so it sees what the steering hooks returned."""
    seen: dict[int, list] = {i: [] for i in range(lm.sites.n_layers)}
    handles = [m.register_forward_hook(lambda _m, inp, out, i=i: seen[i].append((inp[0].clone(), out.clone())))
               for i, m in enumerate(lm.sites.modules)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def hook_count(lm) -> int:
    mods = list(lm.sites.modules) + [lm.sites.root]
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)


def tokens(batch: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 40, (batch, length), generator=g)


def tiny_shipped(root, adapter_pole: str | None = None):
    """A tiny chat Llama (2,048-token context, for persona prompts) and a profiles folder under `root` holding
    Extraversion NPTI profiles and, for `adapter_pole`, a random LoRA adapter: what the studio and evaluation tests
    build on. Returns (model, folder)."""
    from conftest import _tiny, tiny_tokenizer

    lm = _tiny("llama", positions=2048)
    lm.tokenizer = tiny_tokenizer()
    folder = root / "profiles" / lm.name
    high, low = pole_pair(lm, n=12)
    high.save(folder / "Extraversion_high.json")
    low.save(folder / "Extraversion_low.json")
    random_vector(lm).save(folder)
    if adapter_pole:
        from test_finetune import _random_adapter

        _random_adapter(lm, folder / "adapters" / f"Extraversion_{adapter_pole}", seed=4)
    return lm, folder
