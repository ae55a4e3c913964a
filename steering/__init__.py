"""Persona Studio's engine: find a model's personality neurons (NPTI) and shift them while it generates.

Imports neither gradio nor sqlalchemy; the studio and the database sit on top of it."""

from .induce import Intervention, steer
from .models import LoadedModel, ModelLoadError, load_model, wrap_model
from .profile import NeuronProfile, ProfileError
from .record import ActivationStats, Bins, record_activations
from .sites import ModelIdentity, find_neuron_sites
from .traits import POLES, TRAITS

__all__ = [
    "ActivationStats", "Bins", "Intervention", "LoadedModel", "ModelIdentity", "ModelLoadError", "NeuronProfile",
    "POLES", "ProfileError", "TRAITS", "find_neuron_sites", "load_model", "record_activations", "steer",
    "wrap_model",
]
