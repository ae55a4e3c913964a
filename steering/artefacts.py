"""Where a model's shipped artefacts live, in one object. Every path and manifest key below is spelled here and
nowhere else; the builders write through it and the methods read through it.

    profiles/<model name>/
      <Trait>_<pole>.json              NPTI profile identified from the model's persona-prompted answers ("generated")
      <Trait>_<pole>.corpus.json       NPTI profile identified while the model reads our corpus ("corpus")
      answers/<Trait>.jsonl            the persona-prompted answers that identification generated
      <Trait>.vector.safetensors       the trait's activation vector, beside its card <Trait>.vector.json
      adapters/<Trait>_<pole>/         the LoRA adapter trained on the corpus; adapters-persona/ on persona answers
      manifest.json                    how everything was made, and the defaults the selection sweep chose

Pure Python (no torch), so anything may ask where a file is without loading a model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .fileio import write_text_atomic
from .settings import repo_root

MANIFEST = "manifest.json"
DEFAULT_KEYS = ("default_strength", "default_top_neurons")  # a pole's shipped NPTI configuration, kept on rebuilds
NPTI_DEFAULT_SOURCE = "npti_default_source"  # manifest: {trait: {pole: "generated" | "corpus"}}, set by the sweep
SELECTION_SWEEP = "selection_sweep"  # manifest: what the sweep chose and how


@dataclass(frozen=True)
class ModelArtefacts:
    """The artefact folder of one model (see the module docstring for its layout)."""

    folder: Path

    @classmethod
    def of(cls, model_name: str, profiles: Path | str | None = None) -> ModelArtefacts:
        """`profiles` if given (a folder of artefacts), else the shipped profiles/<model name>/."""
        return cls(Path(profiles) if profiles else repo_root() / "profiles" / model_name)

    def profile(self, trait: str, pole: str, source: str = "generated") -> Path:
        name = f"{trait}_{pole}.json" if source == "generated" else f"{trait}_{pole}.{source}.json"
        return self.folder / name

    def answers(self, trait: str) -> Path:
        return self.folder / "answers" / f"{trait}.jsonl"

    def vector(self, trait: str) -> tuple[Path, Path]:
        """(the tensors, the card) of the trait's activation vector."""
        return self.folder / f"{trait}.vector.safetensors", self.folder / f"{trait}.vector.json"

    def adapters(self, source: str = "corpus") -> Path:
        return self.folder / ("adapters" if source == "corpus" else f"adapters-{source}")

    def adapter(self, trait: str, pole: str, source: str = "corpus") -> Path:
        return self.adapters(source) / f"{trait}_{pole}"

    @staticmethod
    def adapter_section(source: str = "corpus") -> str:
        """The manifest section that lists the adapters of a training source."""
        return "adapters" if source == "corpus" else f"adapters_{source}"

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def read_manifest(self) -> dict:
        path = self.manifest_path
        return json.loads(path.read_text()) if path.is_file() else {"traits": {}}

    def write_manifest(self, manifest: dict) -> None:
        """Written to a temporary file and renamed: a failed build never leaves half a manifest."""
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=1))

    def npti_default_source(self, trait: str, pole: str) -> str | None:
        """The NPTI source the sweep chose for a pole, where it chose one."""
        return self.read_manifest().get(NPTI_DEFAULT_SOURCE, {}).get(trait, {}).get(pole)
