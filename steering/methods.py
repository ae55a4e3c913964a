"""The ways of giving a model a trait, behind one call: base (no trait), simple and P² prompts, a LoRA adapter
(sft), and NPTI. Each answers a list of questions for one trait pole."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .adapters import adapter_name, attach_adapter, check_adapter, loaded_adapters
from .bank import TraitBank
from .generation import Answer, Decoding, generate_chats
from .induce import Intervention, check_strength, steer
from .models import LoadedModel
from .profile import NeuronProfile, ProfileError
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


def adapters_dir(lm: LoadedModel, profiles: Path | None = None) -> Path:
    """Where a model's shipped LoRA adapters live: profiles/<model name>/adapters/<Trait>_<pole>/."""
    return (Path(profiles) if profiles else profiles_dir(lm)) / "adapters"


def load_adapter(lm: LoadedModel, trait: str, pole: str, profiles: Path | None = None) -> str:
    """Make sure the pole's adapter is loaded into the model; return its name for a batch row."""
    name = adapter_name(trait, pole)
    if name not in loaded_adapters(lm):
        folder = adapters_dir(lm, profiles) / name
        if not (folder / "adapter_config.json").is_file():
            raise MethodUnavailable(f"no LoRA adapter {name} in {folder.parent}: train it with "
                                    f"`python -m steering finetune --trait {trait} --pole {pole}`")
        attach_adapter(lm, name, folder)
    return name


@dataclass
class _Row:
    chat: list[dict]
    params: dict
    adapter: str | None = None
    intervention: Intervention | None = None
    seed: int = 0


def _plan(lm: LoadedModel, request: Request, question: str, profiles: Path | None, steer_prompt: bool,
          banks: dict) -> _Row:
    """How one row answers one question: its prompt, adapter, intervention and the parameters actually used."""
    params: dict = {"method": request.method, "trait": request.trait, "pole": request.pole, "seed": request.seed}
    if request.method in ("simple", "p2"):
        if request.trait not in banks:
            banks[request.trait] = TraitBank.load(request.trait)
        bank = banks[request.trait]
        if request.method == "simple":
            return _Row(adjective_chat(bank.adjectives[request.pole], question), params, seed=request.seed)
        pick = p2_description(bank, request.pole, question, request.seed)
        params["description"] = pick
        return _Row(persona_chat(bank.descriptions[request.pole][pick], question), params, seed=request.seed)
    chat = plain_chat(question)
    if request.method == "base":
        return _Row(chat, params, seed=request.seed)
    if request.method == "sft":
        name = load_adapter(lm, request.trait, request.pole, profiles)
        params["adapter"] = name
        return _Row(chat, params, adapter=name, seed=request.seed)
    target, other = load_pole(lm, request.trait, request.pole, profiles)
    top = request.top_neurons
    if top is None:  # the shipped default: the paper's method, or the fewer-neurons variant where it was not fluent
        top = int(target.meta.get("default_top_neurons") or 0)
    if top:
        target, other = target.top(top), other.top(top)
    strength = request.strength
    if strength is None:
        strength = float(target.meta.get("default_strength", DEFAULT_STRENGTH))
    params.update(strength=strength, top_neurons=top or "all", steer_prompt=steer_prompt)
    return _Row(chat, params, intervention=Intervention(target, strength, other), seed=request.seed)


def answer_rows(lm: LoadedModel, rows: list[tuple[Request, str]], decoding: Decoding = Decoding(),
                profiles: Path | None = None, steer_prompt: bool = False,
                on_step: Callable[[int], None] | None = None) -> list[tuple[Answer, dict]]:
    """Answer a mixed batch in ONE generate call: each row is (request, question), and rows may use different
    methods, traits and poles — base and prompted rows run the base model, sft rows their own adapter, npti rows
    their own intervention. Returns each row's answer and the parameters it used.

    Every artefact is checked before anything is generated, so a missing adapter or profile fails fast.
    Sampling (decoding.do_sample) is seeded once for the batch with the first row's seed."""
    if not rows:
        return []
    banks: dict = {}
    plan = [_plan(lm, request, question, profiles, steer_prompt, banks) for request, question in rows]
    chats = [r.chat for r in plan]
    adapters = [r.adapter for r in plan] if any(r.adapter for r in plan) else None
    ivs = [r.intervention for r in plan]
    if any(iv is not None for iv in ivs):
        with steer(lm, ivs, seeds=[r.seed for r in plan], steer_prompt=steer_prompt):
            answers = generate_chats(lm, chats, decoding, plan[0].seed, adapters, on_step)
    else:
        answers = generate_chats(lm, chats, decoding, plan[0].seed, adapters, on_step)
    return [(a, r.params) for a, r in zip(answers, plan)]


def answer(lm: LoadedModel, request: Request, questions: list[str], decoding: Decoding = Decoding(),
           profiles: Path | None = None, steer_prompt: bool = False) -> tuple[list[Answer], dict]:
    """Answer every question with one method in one batch; return the answers and the parameters used (for p2,
    "descriptions" lists each question's description)."""
    out = answer_rows(lm, [(request, q) for q in questions], decoding, profiles, steer_prompt)
    params = dict(out[0][1]) if out else {"method": request.method}
    if "description" in params:
        params.pop("description")
        params["descriptions"] = [p["description"] for _, p in out]
    return [a for a, _ in out], params


def unavailable(lm: LoadedModel, method: str, trait: str, pole: str, profiles: Path | None = None) -> str | None:
    """Why `method` cannot answer for this trait pole on this model right now, or None if it can. The studio
    shows the reason in place of the method's answer rather than hiding the method."""
    try:
        Request(method, trait, pole)
        if method == "sft":
            name = adapter_name(trait, pole)
            if name not in loaded_adapters(lm):
                folder = adapters_dir(lm, profiles) / name
                if not (folder / "adapter_config.json").is_file():
                    return (f"no LoRA adapter for {trait} {pole} on {lm.name}: train one with "
                            f"`python -m steering finetune --trait {trait} --pole {pole}`")
                check_adapter(lm, folder)
        elif method == "npti":
            load_pole(lm, trait, pole, profiles)
    except (MethodUnavailable, ProfileError, ValueError, FileNotFoundError) as exc:
        return str(exc)
    return None


def default_strength(lm: LoadedModel, trait: str, pole: str, profiles: Path | None = None) -> float:
    """The NPTI strength a pole's shipped profile recommends (DEFAULT_STRENGTH where it names none)."""
    target, _ = load_pole(lm, trait, pole, profiles)
    return float(target.meta.get("default_strength", DEFAULT_STRENGTH))
