"""A trait pole's neurons: the result of identification, saved and loaded as JSON.

Per neuron: layer, index, `diff` (firing probability under this pole minus under the other), `prob` (firing
probability under this pole) and `p95` (95th percentile of its activation under this pole). The paper's released
lists (`{"<layer>": [[layer, index, diff, prob, p95], ...]}`) import with `NeuronProfile.from_paper_json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.sites import ModelIdentity
from ..traits import check_pole, check_trait

FORMAT = "persona-studio/neuron-profile"
VERSION = 1
_COLUMNS = ("layer", "index", "diff", "prob", "p95")


class ProfileError(ValueError):
    """A profile file is malformed, or was made for another model."""


@dataclass
class NeuronProfile:
    trait: str
    pole: str
    model: ModelIdentity
    layer: np.ndarray  # int64
    index: np.ndarray  # int64
    diff: np.ndarray  # float32
    prob: np.ndarray  # float32
    p95: np.ndarray  # float32
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trait = check_trait(self.trait)
        self.pole = check_pole(self.pole)
        self.layer = np.asarray(self.layer, dtype=np.int64).reshape(-1)
        self.index = np.asarray(self.index, dtype=np.int64).reshape(-1)
        for name in ("diff", "prob", "p95"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32).reshape(-1))
        n = len(self.layer)
        if any(len(getattr(self, c)) != n for c in _COLUMNS):
            raise ProfileError("profile columns have different lengths")
        if n and (self.layer.min() < 0 or self.layer.max() >= self.model.n_layers):
            raise ProfileError(f"a neuron's layer is outside 0..{self.model.n_layers - 1}")
        if n and (self.index.min() < 0 or self.index.max() >= self.model.width):
            raise ProfileError(f"a neuron's index is outside 0..{self.model.width - 1}")
        if not np.all(np.isfinite(self.diff)) or not np.all(np.isfinite(self.p95)):
            raise ProfileError("a neuron's diff or p95 is not a finite number")

    def __len__(self) -> int:
        return len(self.layer)

    @property
    def name(self) -> str:
        return f"{self.trait}_{self.pole}"

    def top(self, n: int) -> "NeuronProfile":
        """The n neurons with the largest diff: a stricter selection, for the fewer-neurons variant of NPTI."""
        order = np.argsort(-self.diff, kind="stable")[:n]
        return NeuronProfile(self.trait, self.pole, self.model, *(getattr(self, c)[order] for c in _COLUMNS),
                             meta={**self.meta, "top_neurons": int(n)})

    def per_layer(self) -> list[int]:
        """How many neurons each layer holds."""
        return np.bincount(self.layer, minlength=self.model.n_layers).tolist()

    def check_model(self, identity: ModelIdentity) -> None:
        """Refuse to steer a model whose neurons are not the ones this profile addresses."""
        mine = self.model
        same_shape = (mine.n_layers, mine.width) == (identity.n_layers, identity.width)
        same_arch = mine.fingerprint is None or identity.fingerprint is None or mine.fingerprint == identity.fingerprint
        if not (same_shape and same_arch):
            raise ProfileError(
                f"profile {self.name} was made for {mine.describe()}, but the loaded model is {identity.describe()}; "
                "identify neurons on this model or load the model the profile was made for"
            )

    # -- files ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "trait": self.trait,
            "pole": self.pole,
            "model": self.model.to_dict(),
            "meta": self.meta,
            "neurons": {c: getattr(self, c).tolist() for c in _COLUMNS},
        }

    def save(self, path: str | Path) -> Path:
        """Write the profile atomically (a unique temporary file, then a rename): a failed save never truncates
        the profile already there, and two runs saving at once never share a temporary file."""
        from ..fileio import write_text_atomic

        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict) -> "NeuronProfile":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ProfileError(f"not a {FORMAT} file (for the paper's format use NeuronProfile.from_paper_json)")
        if data.get("version") != VERSION:
            raise ProfileError(f"profile format version {data.get('version')!r}; this code reads version {VERSION}")
        try:
            neurons = data["neurons"]
            return cls(data["trait"], data["pole"], ModelIdentity.from_dict(data["model"]),
                       *(neurons[c] for c in _COLUMNS), meta=dict(data.get("meta") or {}))
        except (KeyError, TypeError) as exc:
            raise ProfileError(f"malformed profile: missing or wrong field {exc}") from exc
        except ValueError as exc:
            if isinstance(exc, ProfileError):
                raise
            raise ProfileError(f"malformed profile: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path, expect: ModelIdentity | None = None) -> "NeuronProfile":
        """Load a profile; with `expect`, also check that it addresses that model's neurons."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileError(f"{path}: not a readable JSON profile ({exc})") from exc
        try:
            profile = cls.from_dict(data)
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from exc
        if expect is not None:
            profile.check_model(expect)
        return profile

    @classmethod
    def from_paper_json(cls, path: str | Path, trait: str, pole: str, model: ModelIdentity) -> "NeuronProfile":
        """Import one of the NPTI paper's released lists (`<Trait>_dict.json` is the high pole,
        `<Trait>_reversed_dict.json` the low pole) for the model they were made on, e.g.
        ModelIdentity("Meta-Llama-3-8B-Instruct", 32, 14336)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            rows = [row for key in sorted(data, key=int) for row in data[key]]
            table = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        except (OSError, json.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            raise ProfileError(f"{path}: not the paper's neuron format "
                               '({"<layer>": [[layer, index, diff, prob, p95], ...]})' f": {exc}") from exc
        if np.any(table[:, :2] != np.round(table[:, :2])):
            raise ProfileError(f"{path}: layer and index must be whole numbers")
        return cls(trait, pole, model, table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 4],
                   meta={"source": f"NPTI paper release ({path.name})"})
