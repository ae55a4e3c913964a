"""The ways of giving a model a trait, behind one call: base (no trait), simple and P² prompts, a LoRA adapter
(sft), NPTI, and an activation vector. Each answers a list of questions for one trait pole.

Where a method has artefacts from more than one source, `Request.source` picks one: NPTI's profiles come from the
model's own persona-prompted answers (`generated`, the paper's way) or from reading our corpus (`corpus`); the LoRA
adapters were trained on our corpus (`corpus`, the default) or on the persona-prompted answers (`persona`)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..engine.adapters import adapter_name, attach_adapter, loaded_adapters
from .bank import TraitBank
from ..engine.generation import Answer, Decoding, generate_chats
from ..npti.induce import Intervention, check_strength, steer
from ..engine.models import LoadedModel
from ..npti.profile import NeuronProfile, ProfileError
from .prompts import adjective_chat, persona_chat, plain_chat
from ..artefacts import ModelArtefacts
from ..traits import check_pole, check_trait, opposite

Method = Literal["base", "simple", "p2", "sft", "npti", "vector"]
METHODS: tuple[str, ...] = ("base", "simple", "p2", "sft", "npti", "vector")
DEFAULT_STRENGTH = 1.0
DEFAULT_VECTOR_STRENGTH = 0.1
SOURCES: dict[str, tuple[str, ...]] = {"npti": ("generated", "corpus"), "sft": ("corpus", "persona")}


class MethodUnavailable(RuntimeError):
    """The method needs artefacts that are not there; the message says which."""


def profiles_dir(lm: LoadedModel, root: Path | None = None) -> Path:
    """Where the shipped profiles of this model live: profiles/<model name>/ (under `root` if given)."""
    return Path(root) / lm.name if root else ModelArtefacts.of(lm.name).folder


def profile_path(folder: Path, trait: str, pole: str, source: str = "generated") -> Path:
    """<Trait>_<pole>.json (identified from generated answers) or <Trait>_<pole>.corpus.json (from the corpus)."""
    return ModelArtefacts(Path(folder)).profile(trait, pole, source)


def npti_source(lm: LoadedModel, trait: str, pole: str, folder: Path | None = None) -> str:
    """The NPTI source a pole ships with by default (chosen by the sweep; `generated` where none was chosen)."""
    artefacts = ModelArtefacts.of(lm.name, folder)
    chosen = artefacts.npti_default_source(trait, pole)
    if chosen in SOURCES["npti"] and artefacts.profile(trait, pole, chosen).is_file():
        return chosen
    return "generated"


def load_pole(lm: LoadedModel, trait: str, pole: str, folder: Path | None = None,
              top: int | None = None, source: str = "generated") -> tuple[NeuronProfile, NeuronProfile]:
    """The target pole's profile and its opposite, checked against the model; with `top`, only each one's `top`
    neurons of largest diff (the fewer-neurons variant)."""
    folder = Path(folder) if folder else profiles_dir(lm)
    found = []
    for p in (pole, opposite(pole)):
        path = profile_path(folder, trait, p, source)
        if not path.is_file():
            how = "identify --source corpus" if source == "corpus" else "identify"
            raise MethodUnavailable(f"no NPTI profile {path.name} in {folder}: run `python -m steering {how}` "
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
    strength: float | None = None  # NPTI and vector only; None = the shipped default
    seed: int = 0
    top_neurons: int | None = None  # NPTI only: None = the shipped default, 0 = every neuron (the paper's method)
    source: str | None = None  # NPTI: generated | corpus; sft: corpus | persona; None = the shipped default
    layers: tuple[int, ...] | None = None  # vector only: None = the shipped default layers
    clamp: bool | None = None  # NPTI only: clamp the opposite pole's neurons (None = the shipped default, yes)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        object.__setattr__(self, "trait", check_trait(self.trait))
        object.__setattr__(self, "pole", check_pole(self.pole))
        if self.strength is not None:
            check_strength(self.strength)
        if self.top_neurons is not None and self.top_neurons < 0:
            raise ValueError(f"top_neurons must be 0 (all) or a positive count, got {self.top_neurons}")
        if self.source is not None and self.source not in SOURCES.get(self.method, ()):
            allowed = SOURCES.get(self.method)
            raise ValueError(f"source {self.source!r} is not one of {self.method}'s: "
                             + (", ".join(allowed) if allowed else f"{self.method} has a single source"))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if self.clamp is not None and self.method != "npti":
            raise ValueError(f"clamp is an NPTI option, not one of {self.method}'s")


def adapters_dir(lm: LoadedModel, profiles: Path | None = None) -> Path:
    """Where a model's shipped LoRA adapters live: profiles/<model name>/adapters/<Trait>_<pole>/."""
    return ModelArtefacts.of(lm.name, profiles).adapters()


def adapter_folder(lm: LoadedModel, trait: str, pole: str, source: str = "corpus",
                   profiles: Path | None = None) -> Path:
    """adapters/<Trait>_<pole>/ (trained on the corpus) or adapters-persona/<Trait>_<pole>/ (on the persona-prompted
    answers)."""
    return ModelArtefacts.of(lm.name, profiles).adapter(trait, pole, source)


def _adapter_id(trait: str, pole: str, source: str) -> str:
    """The adapter's name inside the peft model: one per trait pole and source."""
    return adapter_name(trait, pole) if source == "corpus" else f"{adapter_name(trait, pole)}_{source}"


def load_adapter(lm: LoadedModel, trait: str, pole: str, profiles: Path | None = None, source: str = "corpus") -> str:
    """Make sure the pole's adapter is loaded into the model; return its name for a batch row."""
    name = _adapter_id(trait, pole, source)
    if name not in loaded_adapters(lm):
        folder = adapter_folder(lm, trait, pole, source, profiles)
        if not (folder / "adapter_config.json").is_file():
            raise MethodUnavailable(f"no LoRA adapter {folder.name} in {folder.parent}: train it with "
                                    f"`python -m steering finetune --data {source} --trait {trait} --pole {pole}`")
        attach_adapter(lm, name, folder)
    return name


def load_vector(lm: LoadedModel, trait: str, profiles: Path | None = None):
    """The trait's activation vector for this model (MethodUnavailable where it was not built)."""
    from .vector import TraitVector, vector_paths

    folder = ModelArtefacts.of(lm.name, profiles).folder
    tensors, card = vector_paths(folder, trait)
    if not (tensors.is_file() and card.is_file()):
        raise MethodUnavailable(f"no activation vector for {trait} in {folder}: build it with "
                                f"`python -m steering build-vectors --traits {trait}`")
    return TraitVector.load(folder, trait, expect=lm.identity)


@dataclass
class _Row:
    chat: list[dict]
    params: dict
    adapter: str | None = None
    intervention: Intervention | None = None
    seed: int = 0
    push: object | None = None  # a vector.VectorPush


def _cached_vector(lm: LoadedModel, trait: str, profiles: Path | None, cache: dict):
    key = ("vector", trait)
    if key not in cache:
        cache[key] = load_vector(lm, trait, profiles)
    return cache[key]


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
        source = request.source or "corpus"
        name = load_adapter(lm, request.trait, request.pole, profiles, source)
        params.update(adapter=adapter_name(request.trait, request.pole), source=source)
        return _Row(chat, params, adapter=name, seed=request.seed)
    if request.method == "vector":
        from .vector import VectorPush

        vec = _cached_vector(lm, request.trait, profiles, banks)
        shipped = vec.meta.get("defaults", {}).get(request.pole, {})
        strength = request.strength if request.strength is not None else float(
            shipped.get("strength", DEFAULT_VECTOR_STRENGTH))
        layers = request.layers or tuple(shipped.get("layers") or vec.layers)
        push = VectorPush(vec, request.pole, strength, layers)
        params.update(strength=strength, layers=list(push.layers), steer_prompt=steer_prompt)
        return _Row(chat, params, seed=request.seed, push=push)
    source = request.source or npti_source(lm, request.trait, request.pole, profiles)
    target, other = load_pole(lm, request.trait, request.pole, profiles, source=source)
    top = request.top_neurons
    if top is None:  # the shipped default: the paper's method, or the fewer-neurons variant where it was not fluent
        top = int(target.meta.get("default_top_neurons") or 0)
    if top:
        target, other = target.top(top), other.top(top)
    strength = request.strength
    if strength is None:
        strength = float(target.meta.get("default_strength", DEFAULT_STRENGTH))
    clamp = request.clamp if request.clamp is not None else bool(target.meta.get("default_clamp", True))
    params.update(strength=strength, top_neurons=top or "all", steer_prompt=steer_prompt, source=source, clamp=clamp)
    return _Row(chat, params, intervention=Intervention(target, strength, other if clamp else None),
                seed=request.seed)


def _readout_vectors(lm: LoadedModel, rows: list[tuple[Request, str]], profiles: Path | None, cache: dict) -> list:
    """Each row's trait vector for the read-out, or None where the trait has none."""
    out = []
    for request, _ in rows:
        try:
            out.append(_cached_vector(lm, request.trait, profiles, cache))
        except (MethodUnavailable, FileNotFoundError):
            out.append(None)
    return out


def answer_rows(lm: LoadedModel, rows: list[tuple[Request, str]], decoding: Decoding = Decoding(),
                profiles: Path | None = None, steer_prompt: bool = False,
                on_step: Callable[[int], None] | None = None, readout: bool = False, row_seeds: bool = False,
                on_text: Callable[[list[str]], None] | None = None) -> list[tuple[Answer, dict]]:
    """Answer a mixed batch in ONE generate call: each row is (request, question), and rows may use different
    methods, traits and poles — base and prompted rows run the base model, sft rows their own adapter, npti rows
    their own intervention, vector rows their own vector. Returns each row's answer and the parameters it used.

    With `readout`, each answer carries the trait read-out of its tokens (`Answer.readout`, see vector.read_trait)
    wherever the row's trait has a vector. Every artefact is checked before anything is generated, so a missing
    adapter, profile or vector fails fast. Sampling (decoding.do_sample) is seeded once for the batch with the
    first row's seed, or, with `row_seeds`, each row with its own request's seed (its answer then does not depend
    on the rest of the batch). `on_text` streams every row's answer so far (see generation.generate_chats)."""
    if not rows:
        return []
    banks: dict = {}
    plan = [_plan(lm, request, question, profiles, steer_prompt, banks) for request, question in rows]
    chats = [r.chat for r in plan]
    adapters = [r.adapter for r in plan] if any(r.adapter for r in plan) else None
    ivs = [r.intervention for r in plan]
    pushes = [r.push for r in plan]
    readers = _readout_vectors(lm, rows, profiles, banks) if readout else []
    with ExitStack() as stack:
        values = None
        if any(v is not None for v in readers):  # first, so it reads each layer before that layer's steering
            from .vector import read_trait

            values = stack.enter_context(read_trait(lm, readers))
        if any(iv is not None for iv in ivs):
            stack.enter_context(steer(lm, ivs, seeds=[r.seed for r in plan], steer_prompt=steer_prompt))
        if any(p is not None for p in pushes):
            from .vector import steer_vectors

            stack.enter_context(steer_vectors(lm, pushes, steer_prompt=steer_prompt))
        seed = [r.seed for r in plan] if row_seeds else plan[0].seed
        answers = generate_chats(lm, chats, decoding, seed, adapters, on_step, on_text)
    if values is not None:
        answers = [a if readers[b] is None else replace(a, readout=tuple(
            zip(a.pieces, (round(v, 3) for v in values[b][:len(a.pieces)]))))
            for b, a in enumerate(answers)]
    return [(a, r.params) for a, r in zip(answers, plan)]


def explain(lm: LoadedModel, request: Request, question: str, profiles: Path | None = None) -> str:
    """What a row is given, in words a person can check (the compare page's "show prompt"): the exact system
    prompt, and the adapter, neurons or vector that act on the model. Plain text, one fact per line."""
    row = _plan(lm, request, question, profiles, False, {})
    system = next((m["content"] for m in row.chat if m["role"] == "system"), None)
    lines = [f"System prompt: {system}" if system else "No system prompt: the model sees the question alone."]
    if row.adapter:
        lines.append(f"LoRA adapter {row.params['adapter']}, fine-tuned on the {row.params['source']} answers.")
    if row.intervention is not None:
        iv = row.intervention
        layers = sorted(set(iv.profile.layer.tolist()))
        lines.append(f"NPTI ({row.params['source']} profile): {len(iv.profile.layer)} neurons of the "
                     f"{iv.profile.pole} pole in layers {layers[0]}–{layers[-1]} raised at every new token, "
                     f"strength {iv.strength:g}.")
        if iv.opposite is not None:
            lines.append(f"The {len(iv.opposite.layer)} neurons of the {iv.opposite.pole} pole are clamped at 0.")
    if row.push is not None:
        lines.append(f"Activation vector of {request.trait}, {request.pole} pole, added at layers "
                     f"{', '.join(map(str, row.params['layers']))} with strength {row.params['strength']:g} "
                     "(a fraction of each layer's typical residual norm).")
    return "\n".join(lines)


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


def unavailable(lm: LoadedModel, method: str, trait: str, pole: str, profiles: Path | None = None,
                source: str | None = None) -> str | None:
    """Why `method` cannot answer for this trait pole on this model right now, or None if it can. The studio
    shows the reason in place of the method's answer rather than hiding the method."""
    try:
        Request(method, trait, pole, source=source)
        if method == "sft":
            source = source or "corpus"
            load_adapter(lm, trait, pole, profiles, source)  # once; refused where the model cannot take it
        elif method == "npti":
            load_pole(lm, trait, pole, profiles, source=source or npti_source(lm, trait, pole, profiles))
        elif method == "vector":
            load_vector(lm, trait, profiles)
    except (MethodUnavailable, ProfileError, ValueError, FileNotFoundError) as exc:
        return str(exc)
    return None


def default_strength(lm: LoadedModel, trait: str, pole: str, profiles: Path | None = None,
                     method: str = "npti") -> float:
    """The strength a pole ships with: NPTI's from its default profile (DEFAULT_STRENGTH where it names none), the
    vector's from its card (DEFAULT_VECTOR_STRENGTH where it names none)."""
    if method == "vector":
        vec = load_vector(lm, trait, profiles)
        return float(vec.meta.get("defaults", {}).get(pole, {}).get("strength", DEFAULT_VECTOR_STRENGTH))
    target, _ = load_pole(lm, trait, pole, profiles, source=npti_source(lm, trait, pole, profiles))
    return float(target.meta.get("default_strength", DEFAULT_STRENGTH))
