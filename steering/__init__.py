"""Persona Studio's engine: give a small language model a Big Five trait and measure it. The sub-packages follow
the pipeline:

    engine/      load a model, find its neuron sites, hook it, generate in batches, per-row LoRA adapters
    npti/        record neuron firing (generated or teacher-forced), identify a pole's neurons, the profile
                 files, and induction (shift the neurons while the model writes)
    methods/     the six ways to answer as a pole (prompts, persona bank, corpus, LoRA fine-tuning, activation
                 vectors) and `dispatch`, which answers a mixed batch of them in one generate call
    evaluation/  judges (offline and LLM), fluency, the evaluation table, the selection sweep, rating statistics
    artefacts    where a model's shipped files live (`ModelArtefacts`); build.py writes them; cli/ drives it all

The public names below are imported lazily, on first use: `import steering.evaluation.ratings` (statistics only)
never loads torch. Imports neither gradio nor sqlalchemy; the studio and the database sit on top of it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_PUBLIC = {  # name -> the module that defines it
    "Intervention": "npti.induce", "steer": "npti.induce",
    "LoadedModel": "engine.models", "ModelLoadError": "engine.models", "load_model": "engine.models",
    "wrap_model": "engine.models",
    "NeuronProfile": "npti.profile", "ProfileError": "npti.profile",
    "ActivationStats": "npti.record", "Bins": "npti.record", "record_activations": "npti.record",
    "ModelIdentity": "engine.sites", "find_neuron_sites": "engine.sites",
    "POLES": "traits", "TRAITS": "traits",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'steering' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from .engine.models import LoadedModel, ModelLoadError, load_model, wrap_model
    from .engine.sites import ModelIdentity, find_neuron_sites
    from .npti.induce import Intervention, steer
    from .npti.profile import NeuronProfile, ProfileError
    from .npti.record import ActivationStats, Bins, record_activations
    from .traits import POLES, TRAITS
