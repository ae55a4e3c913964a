"""Building a model's shipped NPTI profiles from the persona bank: identification for every trait, the ten profile
files, the persona-prompted answers (the fine-tuning data), and a manifest that says how they were made."""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import bank
from .generation import Decoding
from .identify import Selection, identify
from .models import LoadedModel
from .record import Bins

MANIFEST = "manifest.json"
DEFAULT_KEYS = ("default_strength", "default_top_neurons")  # a pole's shipped NPTI configuration


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {"traits": {}}


def write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(folder / MANIFEST)


def build_profiles(lm: LoadedModel, folder: Path, traits: Sequence[str], *, decoding: Decoding, batch_size: int,
                   seed: int, selection: Selection, limit: int | None = None, command: str | None = None,
                   progress: Callable | None = None) -> dict:
    """Identify every trait in `traits` on the bank's search questions; write <Trait>_<pole>.json, answers/<Trait>.jsonl
    and the manifest into `folder`. Traits are written one by one, so an interrupted run keeps what it finished."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    manifest.update({
        "model": lm.identity.to_dict(), "quantization": lm.quantization,
        "command": command or " ".join(["python -m steering"] + sys.argv[1:]),
        "selection": asdict(selection), "decoding": asdict(decoding), "bins": asdict(Bins()), "seed": seed,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
    })
    for trait in traits:
        trait_bank = bank.TraitBank.load(trait)
        qs = bank.questions(trait, "search")[:limit]
        answers = folder / "answers" / f"{trait_bank.trait}.jsonl"
        answers.parent.mkdir(parents=True, exist_ok=True)
        answers.unlink(missing_ok=True)
        start = time.perf_counter()
        result = identify(lm, trait_bank.trait, qs, trait_bank.descriptions, decoding=decoding,
                          batch_size=batch_size, seed=seed, selection=selection, answers_path=answers,
                          progress=progress)
        seconds = time.perf_counter() - start
        entry = {"questions": len(qs), "seconds": round(seconds, 1), "answers": str(answers.relative_to(folder))}
        for profile in (result.high, result.low):
            # defaults a strength sweep already chose (strength, and the variant's neuron count with it) stay
            old = manifest["traits"].get(trait_bank.trait, {}).get(profile.pole, {})
            kept = {k: old[k] for k in DEFAULT_KEYS if k in old}
            profile.meta.update(kept)
            profile.save(folder / f"{profile.name}.json")
            entry[profile.pole] = {"file": f"{profile.name}.json", "neurons": len(profile),
                                   "tokens": profile.meta["tokens"], "per_layer": profile.per_layer(),
                                   "p95_beyond_bins": profile.meta["p95_beyond_bins"], **kept}
        manifest["traits"][trait_bank.trait] = entry
        write_manifest(folder, manifest)
    return manifest


def record_sweep(folder: Path, trait: str, table: list[dict], defaults: dict, settings: dict,
                 top: int | None = None) -> None:
    """Write a strength sweep and the chosen defaults into the manifest and into the profiles (so
    `generate --method npti` uses them with no other argument).

    The paper's method (top=None) sets every pole's default. A fewer-neurons variant (top=N) is recorded beside it
    and becomes a pole's default only where the paper's method had no fluent strength."""
    from .profile import NeuronProfile

    manifest = read_manifest(folder)
    entry = manifest["traits"].setdefault(trait, {})
    if top:
        entry.setdefault("sweep_variants", {})[f"top{top}"] = {"settings": settings, "table": table}
    else:
        entry["sweep"] = {"settings": settings, "table": table}
    for pole, strength in defaults.items():
        path = folder / f"{trait}_{pole}.json"
        profile = NeuronProfile.load(path)
        pole_entry = entry.setdefault(pole, {})
        if top and (pole_entry.get("default_strength") is not None and not pole_entry.get("default_top_neurons")):
            continue  # the paper's method is fluent here: it stays the default
        for meta in (profile.meta, pole_entry):
            for key in DEFAULT_KEYS:
                meta.pop(key, None)
            if strength is not None:
                meta["default_strength"] = strength
                if top:
                    meta["default_top_neurons"] = top
        profile.save(path)
    write_manifest(folder, manifest)


def record_adapter(folder: Path, card) -> None:
    """Enter a trained LoRA adapter (its AdapterCard) in the manifest under adapters/<Trait>_<pole>."""
    manifest = read_manifest(folder)
    manifest.setdefault("adapters", {})[f"{card.trait}_{card.pole}"] = {
        "path": f"adapters/{card.trait}_{card.pole}", **card.summary()}
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, manifest)
