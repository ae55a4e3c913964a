"""Building a model's shipped NPTI profiles from the persona bank: identification for every trait, the ten profile
files, the persona-prompted answers (the fine-tuning data), and a manifest that says how they were made."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch

from .methods import bank
from .artefacts import DEFAULT_KEYS, ModelArtefacts
from .engine.generation import Decoding
from .npti.identify import Selection, identify
from .engine.models import LoadedModel
from .engine.world import World
from .npti.record import Bins

def read_manifest(folder: Path) -> dict:
    return ModelArtefacts(Path(folder)).read_manifest()


def write_manifest(folder: Path, manifest: dict) -> None:
    ModelArtefacts(Path(folder)).write_manifest(manifest)


def _environment() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads()}


def _corpus_triples(trait: str, limit: int | None) -> list[tuple[str, str, str]]:
    from .methods.corpus import load_corpus

    return [(p.question, p.high, p.low) for p in load_corpus(trait, "train")][:limit]


def build_corpus_profiles(lm: LoadedModel, folder: Path, traits: Sequence[str], *, batch_size: int,
                          selection: Selection, limit: int | None = None, command: str | None = None,
                          progress: Callable | None = None, world: World = World()) -> dict:
    """NPTI profiles from the corpus (the model reads each pole's train-split answers), for every trait in
    `traits`: <Trait>_<pole>.corpus.json and a manifest entry traits/<Trait>/corpus. Defaults a sweep already chose
    for a profile stay. Under a launcher (`world`) the ranks share the reading and rank 0 writes."""
    from .npti.identify import identify_corpus
    from .methods.dispatch import profile_path
    from .npti.profile import NeuronProfile

    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    for trait in traits:
        triples = _corpus_triples(trait, limit)
        start = time.perf_counter()
        result = identify_corpus(lm, trait, triples, batch_size=batch_size, selection=selection, progress=progress,
                                 world=world)
        entry = {"command": command or " ".join(["python -m steering"] + sys.argv[1:]), "pairs": len(triples),
                 "selection": asdict(selection), "seconds": round(time.perf_counter() - start, 1),
                 "quantization": lm.quantization, "environment": {**_environment(), "processes": world.size}}
        for profile in (result.high, result.low):
            path = profile_path(folder, trait, profile.pole, "corpus")
            if path.is_file():
                old = NeuronProfile.load(path).meta
                profile.meta.update({k: old[k] for k in DEFAULT_KEYS if k in old})
            if world.writer:
                profile.save(path)
            entry[profile.pole] = {"file": path.name, "neurons": len(profile), "tokens": profile.meta["tokens"],
                                   "max_diff": round(float(profile.diff.max()), 4),
                                   "diff_at_top_k": round(float(profile.diff[min(len(profile), selection.top_k) - 1]), 4),
                                   "per_layer": profile.per_layer()}
        manifest["traits"].setdefault(trait, {})["corpus"] = entry
        if world.writer:
            write_manifest(folder, manifest)
    return manifest


def build_vectors(lm: LoadedModel, folder: Path, traits: Sequence[str], *, batch_size: int,
                  limit: int | None = None, command: str | None = None, progress: Callable | None = None) -> dict:
    """Activation vectors from the corpus's train split for every trait in `traits`: <Trait>.vector.safetensors
    and .json, and a manifest entry vectors/<Trait>. Defaults a sweep already chose for a vector stay."""
    from .methods.vector import TraitVector, build_vector, vector_paths

    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    for trait in traits:
        triples = _corpus_triples(trait, limit)
        start = time.perf_counter()
        vector = build_vector(lm, trait, triples, batch_size=batch_size, progress=progress,
                              meta={"command": command or " ".join(["python -m steering"] + sys.argv[1:]),
                                    "quantization": lm.quantization})
        if vector_paths(folder, trait)[1].is_file():
            old = TraitVector.load(folder, trait)
            vector.layers = old.layers
            if "defaults" in old.meta:
                vector.meta["defaults"] = old.meta["defaults"]
        vector.meta["seconds"] = round(time.perf_counter() - start, 1)
        vector.save(folder)
        manifest.setdefault("vectors", {})[trait] = {
            "file": vector_paths(folder, trait)[0].name, "readout_layer": vector.readout_layer,
            "layers": list(vector.layers), "pairs": len(triples), "seconds": vector.meta["seconds"],
            "separation_d": vector.meta["separation_d"]}
        write_manifest(folder, manifest)
    return manifest


def build_profiles(lm: LoadedModel, folder: Path, traits: Sequence[str], *, decoding: Decoding, batch_size: int,
                   seed: int, selection: Selection, limit: int | None = None, command: str | None = None,
                   progress: Callable | None = None, world: World = World()) -> dict:
    """Identify every trait in `traits` on the bank's search questions; write <Trait>_<pole>.json, answers/<Trait>.jsonl
    and the manifest into `folder`. Traits are written one by one, so an interrupted run keeps what it finished.
    Under a launcher (`world`) the ranks share the questions and rank 0 writes; the manifest records the number of
    processes."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    manifest.update({
        "model": lm.identity.to_dict(), "quantization": lm.quantization,
        "command": command or " ".join(["python -m steering"] + sys.argv[1:]),
        "selection": asdict(selection), "decoding": asdict(decoding), "bins": asdict(Bins()), "seed": seed,
        "environment": {**_environment(), "processes": world.size},
    })
    for trait in traits:
        trait_bank = bank.TraitBank.load(trait)
        qs = bank.questions(trait, "search")[:limit]
        answers = ModelArtefacts(folder).answers(trait_bank.trait)  # replaced only when the trait finishes
        start = time.perf_counter()
        result = identify(lm, trait_bank.trait, qs, trait_bank.descriptions, decoding=decoding,
                          batch_size=batch_size, seed=seed, selection=selection, answers_path=answers,
                          progress=progress, world=world)
        seconds = time.perf_counter() - start
        entry = {"questions": len(qs), "seconds": round(seconds, 1), "answers": str(answers.relative_to(folder))}
        for profile in (result.high, result.low):
            # defaults a strength sweep already chose (strength, and the variant's neuron count with it) stay
            old = manifest["traits"].get(trait_bank.trait, {}).get(profile.pole, {})
            kept = {k: old[k] for k in DEFAULT_KEYS if k in old}
            profile.meta.update(kept)
            if world.writer:
                profile.save(folder / f"{profile.name}.json")
            entry[profile.pole] = {"file": f"{profile.name}.json", "neurons": len(profile),
                                   "tokens": profile.meta["tokens"], "per_layer": profile.per_layer(),
                                   "p95_beyond_bins": profile.meta["p95_beyond_bins"], **kept}
        manifest["traits"][trait_bank.trait] = entry
        if world.writer:
            write_manifest(folder, manifest)
    return manifest


def record_adapter(folder: Path, card, source: str = "corpus") -> None:
    """Enter a trained LoRA adapter (its AdapterCard) in the manifest: under adapters/<Trait>_<pole> for one trained
    on the corpus, adapters_<source>/<Trait>_<pole> for another source (its folder: adapters-<source>/)."""
    manifest = read_manifest(folder)
    artefacts = ModelArtefacts(Path(folder))
    adapter = artefacts.adapter(card.trait, card.pole, source)
    manifest.setdefault(artefacts.adapter_section(source), {})[f"{card.trait}_{card.pole}"] = {
        "path": adapter.relative_to(artefacts.folder).as_posix(), **card.summary()}
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, manifest)
