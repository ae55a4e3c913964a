"""The ways of giving a model a trait, behind one call: base (no trait), simple and P² prompts, a LoRA adapter
(sft), and NPTI. Each answers a list of questions for one trait pole."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .bank import TraitBank
from .generation import Answer, Decoding, generate_chats
from .induce import Intervention, check_strength, steer
from .models import LoadedModel
from .profile import NeuronProfile
from .prompts import adjective_chat, persona_chat, plain_chat
from .settings import repo_root
from .traits import check_pole, check_trait, opposite

Method = Literal["base", "simple", "p2", "sft", "npti"]
METHODS: tuple[str, ...] = ("base", "simple", "p2", "sft", "npti")
DEFAULT_STRENGTH = 1.0


class MethodUnavailable(RuntimeError):
    """The method needs artefacts that are not there; the message says which."""


def profiles_dir(lm: LoadedModel, root: Path | None = None) -> Path:
    """Where the shipped profiles of this model live: profiles/<model name>/."""
    return (root or repo_root() / "profiles") / lm.name


def load_pole(lm: LoadedModel, trait: str, pole: str, folder: Path | None = None,
              top: int | None = None) -> tuple[NeuronProfile, NeuronProfile]:
    """The target pole's profile and its opposite, checked against the model; with `top`, only each one's `top`
    neurons of largest diff (the fewer-neurons variant)."""
    folder = Path(folder) if folder else profiles_dir(lm)
    found = []
    for p in (pole, opposite(pole)):
        path = folder / f"{trait}_{p}.json"
        if not path.is_file():
            raise MethodUnavailable(f"no NPTI profile {path.name} in {folder}: run `python -m steering identify` "
                                    "for this model and trait, or pass --profiles DIR")
        profile = NeuronProfile.load(path, expect=lm.identity)
        found.append(profile.top(top) if top else profile)
    return found[0], found[1]


def p2_description(trait_bank: TraitBank, pole: str, question: str, seed: int) -> int:
    """Which of the pole's descriptions the P² prompt uses for a question: fixed by (seed, question), so an
    answer does not depend on the other questions in its batch."""
    return zlib.crc32(f"{seed}:{question}".encode()) % len(trait_bank.descriptions[pole])


@dataclass(frozen=True)
class Request:
    method: str
    trait: str
    pole: str
    strength: float | None = None  # NPTI only; None = the profile's shipped default
    seed: int = 0
    top_neurons: int | None = None  # NPTI only: None = the shipped default, 0 = every neuron (the paper's method)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        object.__setattr__(self, "trait", check_trait(self.trait))
        object.__setattr__(self, "pole", check_pole(self.pole))
        if self.strength is not None:
            check_strength(self.strength)
        if self.top_neurons is not None and self.top_neurons < 0:
            raise ValueError(f"top_neurons must be 0 (all) or a positive count, got {self.top_neurons}")


def answer(lm: LoadedModel, request: Request, questions: list[str], decoding: Decoding = Decoding(),
           profiles: Path | None = None, steer_prompt: bool = False) -> tuple[list[Answer], dict]:
    """Answer every question with one method; return the answers and the parameters actually used."""
    params: dict = {"method": request.method, "trait": request.trait, "pole": request.pole, "seed": request.seed}
    if request.method == "sft":
        raise MethodUnavailable("--method sft is not available yet: it needs the trained LoRA adapters")
    if request.method in ("simple", "p2"):
        trait_bank = TraitBank.load(request.trait)
        if request.method == "simple":
            chats = [adjective_chat(trait_bank.adjectives[request.pole], q) for q in questions]
        else:
            picks = [p2_description(trait_bank, request.pole, q, request.seed) for q in questions]
            chats = [persona_chat(trait_bank.descriptions[request.pole][i], q) for i, q in zip(picks, questions)]
            params["descriptions"] = picks
        return generate_chats(lm, chats, decoding, request.seed), params
    chats = [plain_chat(q) for q in questions]
    if request.method == "base":
        return generate_chats(lm, chats, decoding, request.seed), params
    target, other = load_pole(lm, request.trait, request.pole, profiles)
    top = request.top_neurons
    if top is None:  # the shipped default: the paper's method, or the fewer-neurons variant where it was not fluent
        top = int(target.meta.get("default_top_neurons") or 0)
    if top:
        target, other = target.top(top), other.top(top)
    strength = request.strength
    if strength is None:
        strength = float(target.meta.get("default_strength", DEFAULT_STRENGTH))
    iv = Intervention(target, strength, other)
    params.update(strength=strength, top_neurons=top or "all", steer_prompt=steer_prompt)
    with steer(lm, [iv] * len(chats), seeds=[request.seed] * len(chats), steer_prompt=steer_prompt):
        return generate_chats(lm, chats, decoding, request.seed), params
