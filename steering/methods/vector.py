"""Activation-vector steering and the trait read-out.

A trait's vector is, per decoder layer, the mean residual stream over the answer tokens of the corpus's high-pole
answers minus that of its low-pole answers, both read with teacher forcing (train split). Steering a row toward a
pole adds `sign x strength x unit vector x the layer's typical residual norm` to the output of each chosen layer at
every decoding step (sign +1 for high, -1 for low; the prompt untouched unless asked, as for NPTI). The typical norm
is the mean residual norm over the same tokens, so a strength reads as a fraction of the residual stream's size.

The read-out is the same direction used to READ: the projection of the residual stream at the vector's read-out
layer on the unit vector, for the state from which each generated token was chosen, rescaled so that the mean of our
high answers reads +1 and the mean of our low answers -1. It never changes the computation.

Saved as `<Trait>.vector.safetensors` (the tensors) beside `<Trait>.vector.json` (the card: model identity, layers,
norms, source, defaults)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..engine.hooks import hook_scope, read_call
from ..fileio import write_text_atomic
from ..artefacts import ModelArtefacts
from ..npti.induce import check_strength
from ..engine.models import LoadedModel
from ..npti.profile import ProfileError
from ..engine.sites import ModelIdentity, residual_modules
from ..traits import check_pole, check_trait

VECTOR_FORMAT = "persona-studio/trait-vector"
VECTOR_VERSION = 1


def vector_paths(folder: Path, trait: str) -> tuple[Path, Path]:
    """(tensors, card) of a trait's vector in a model's artefact folder."""
    return ModelArtefacts(Path(folder)).vector(check_trait(trait))


@dataclass
class TraitVector:
    """A trait's direction per layer, the typical residual norm per layer, and how to read it out."""

    trait: str
    model: ModelIdentity
    direction: np.ndarray  # [L, H] float32: mean(high) - mean(low)
    norm: np.ndarray  # [L] float32: mean residual norm over the answer tokens of both poles
    midpoint: np.ndarray  # [L] float32: ((mean(high) + mean(low)) / 2) . unit
    readout_layer: int
    layers: tuple[int, ...]  # the layers steered when a request names none
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trait = check_trait(self.trait)
        self.direction = np.asarray(self.direction, dtype=np.float32)
        self.norm = np.asarray(self.norm, dtype=np.float32).reshape(-1)
        self.midpoint = np.asarray(self.midpoint, dtype=np.float32).reshape(-1)
        n = self.model.n_layers
        if self.direction.ndim != 2 or self.direction.shape[0] != n or self.norm.shape != (n,) or \
                self.midpoint.shape != (n,):
            raise ProfileError(f"a {self.trait} vector must have one direction, norm and midpoint per layer ({n})")
        self.layers = check_layers(self.layers, n)
        check_layers((self.readout_layer,), n)
        if not np.all(np.isfinite(self.direction)) or not np.all(np.isfinite(self.norm)):
            raise ProfileError(f"the {self.trait} vector holds a value that is not a finite number")

    @property
    def scale(self) -> np.ndarray:
        """[L] half the distance between the poles' means along the direction (the read-out's unit)."""
        return np.linalg.norm(self.direction, axis=1) / 2

    def unit(self) -> np.ndarray:
        """[L, H] the direction per layer at unit length."""
        length = np.linalg.norm(self.direction, axis=1, keepdims=True)
        return self.direction / np.where(length > 0, length, 1)

    def check_model(self, identity: ModelIdentity) -> None:
        mine = self.model
        if (mine.n_layers, mine.width) != (identity.n_layers, identity.width) or (
                mine.fingerprint and identity.fingerprint and mine.fingerprint != identity.fingerprint):
            raise ProfileError(f"the {self.trait} vector was made for {mine.describe()}, not for {identity.describe()}")

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save

        tensors, card = vector_paths(Path(folder), self.trait)
        tensors.parent.mkdir(parents=True, exist_ok=True)
        blob = save({"direction": self.direction, "norm": self.norm, "midpoint": self.midpoint})
        tmp = tensors.with_name(f".{tensors.name}.tmp")
        tmp.write_bytes(blob)
        tmp.replace(tensors)
        write_text_atomic(card, json.dumps({
            "format": VECTOR_FORMAT, "version": VECTOR_VERSION, "trait": self.trait, "model": self.model.to_dict(),
            "readout_layer": self.readout_layer, "layers": list(self.layers),
            "norm": [round(float(x), 4) for x in self.norm], "meta": self.meta}, indent=1) + "\n")
        return card

    @classmethod
    def load(cls, folder: str | Path, trait: str, expect: ModelIdentity | None = None) -> "TraitVector":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        tensors, card = vector_paths(Path(folder), trait)
        try:
            data = json.loads(card.read_text(encoding="utf-8"))
            arrays = load_file(tensors)
        except FileNotFoundError:
            raise
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, SafetensorError) as exc:
            raise ProfileError(f"{card}: not a readable trait vector ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != VECTOR_FORMAT:
            raise ProfileError(f"{card}: not a {VECTOR_FORMAT} file")
        if data.get("version") != VECTOR_VERSION:
            raise ProfileError(f"{card}: vector file version {data.get('version')!r}, this code reads {VECTOR_VERSION}")
        try:
            vector = cls(data["trait"], ModelIdentity.from_dict(data["model"]), arrays["direction"], arrays["norm"],
                         arrays["midpoint"], int(data["readout_layer"]), tuple(data["layers"]), data.get("meta", {}))
        except (KeyError, TypeError) as exc:
            raise ProfileError(f"{card}: malformed trait vector ({exc})") from exc
        if expect is not None:
            vector.check_model(expect)
        return vector


def check_layers(layers: Sequence[int], n_layers: int) -> tuple[int, ...]:
    """Layers as a sorted tuple of distinct indices in 0..n_layers-1; anything else is refused by name."""
    try:
        out = tuple(sorted({int(layer) for layer in layers}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"layers must be integers, got {list(layers)!r}") from exc
    if not out:
        raise ValueError("at least one layer is needed")
    bad = [layer for layer in out if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} does not exist: this model has layers 0..{n_layers - 1}")
    return out


def middle_layers(n_layers: int, count: int = 3) -> tuple[int, ...]:
    """`count` consecutive layers around the middle of the model."""
    start = max(0, n_layers // 2 - count // 2 - (1 if count % 2 == 0 else 0))
    return tuple(range(start, min(n_layers, start + count)))


def build_vector(lm: LoadedModel, trait: str, pairs: Sequence[tuple[str, str, str]], *, batch_size: int = 8,
                 layers: Sequence[int] | None = None, progress: Callable | None = None,
                 meta: dict | None = None) -> TraitVector:
    """A trait's vector from (question, high answer, low answer) triples read with teacher forcing. The read-out
    layer is the one whose per-answer projections separate the poles best on these same triples (Cohen's d)."""
    from ..npti.forced import residual_stats

    trait = check_trait(trait)
    for pole, k in (("high", 1), ("low", 2)):
        if not [p for p in pairs if p[k].strip()]:
            raise ValueError(f"the corpus has no {pole}-pole answers for {trait}: a vector needs both poles")
    per: dict[str, list] = {"high": [], "low": []}
    stats = {pole: residual_stats(lm, [(p[0], p[k]) for p in pairs], batch_size=batch_size, progress=progress,
                                  desc=f"{trait} {pole} (reading)", per_example=per[pole])
             for pole, k in (("high", 1), ("low", 2))}
    high, low = stats["high"].mean(), stats["low"].mean()
    direction = (high - low).float().numpy()
    norm = ((stats["high"].norm_sum + stats["low"].norm_sum) / (stats["high"].n_tokens + stats["low"].n_tokens))
    unit = torch.from_numpy(direction).double()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp(min=1e-12)
    midpoint = (((high + low) / 2) * unit).sum(1)
    ph = (torch.stack(per["high"]) * unit).sum(-1)  # [n, L]
    pl = (torch.stack(per["low"]) * unit).sum(-1)
    pooled = ((ph.var(0, unbiased=True) + pl.var(0, unbiased=True)) / 2).sqrt().clamp(min=1e-12)
    separation = (ph.mean(0) - pl.mean(0)) / pooled
    readout = int(separation.argmax())
    n = lm.sites.n_layers
    info = {"source": "corpus", "pairs": len(pairs), "tokens": {p: s.n_tokens for p, s in stats.items()},
            "separation_d": [round(float(x), 3) for x in separation], **(meta or {})}
    return TraitVector(trait, lm.identity, direction, norm.float().numpy(), midpoint.float().numpy(), readout,
                       tuple(layers) if layers else middle_layers(n), info)


@dataclass(frozen=True)
class VectorPush:
    """Steer one row along a trait's vector: toward `pole` with `strength` (a fraction of each layer's typical
    residual norm) at `layers` (None: the vector's own default layers)."""

    vector: TraitVector
    pole: str
    strength: float
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pole", check_pole(self.pole))
        check_strength(self.strength)
        if self.layers is not None:
            object.__setattr__(self, "layers", check_layers(self.layers, self.vector.model.n_layers))

    def additions(self) -> dict[int, np.ndarray]:
        """What each steered layer gets added, per layer: [H]."""
        sign = 1.0 if self.pole == "high" else -1.0
        unit = self.vector.unit()
        return {layer: (sign * self.strength * self.vector.norm[layer] * unit[layer]).astype(np.float32)
                for layer in (self.layers or self.vector.layers)}


@contextmanager
def steer_vectors(lm: LoadedModel, rows: Sequence[VectorPush | None], steer_prompt: bool = False) -> Iterator[None]:
    """Add each row's vector while the block runs: rows[b] is a VectorPush or None (untouched). Only decoding steps
    are steered unless `steer_prompt` (then every real prompt position too, padding excluded)."""
    rows = list(rows)
    if not rows:
        raise ValueError("steer_vectors() needs at least one row")
    blocks = residual_modules(lm.sites)
    hidden = None
    per_layer: dict[int, torch.Tensor] = {}
    for b, push in enumerate(rows):
        if push is None:
            continue
        push.vector.check_model(lm.identity)
        for layer, add in push.additions().items():
            hidden = hidden or add.shape[0]
            if layer not in per_layer:
                per_layer[layer] = torch.zeros(len(rows), 1, add.shape[0])
            per_layer[layer][b, 0] += torch.from_numpy(add)
    state = {"on": False, "real": None}

    def on_call(_module, args, kwargs):
        call = read_call(args, kwargs)
        if call.batch != len(rows):
            raise ValueError(f"steer_vectors() was given {len(rows)} rows but the model ran a batch of {call.batch}")
        prompt = call.past == 0
        state["on"] = steer_prompt or not prompt
        state["real"] = call.real.unsqueeze(-1) if (state["on"] and prompt and call.real is not None) else None

    def make_hook(add: torch.Tensor):
        def hook(_module, _inputs, output):
            if not state["on"]:
                return None
            h = output[0] if isinstance(output, tuple) else output
            a = add.to(device=h.device, dtype=h.dtype)
            if state["real"] is not None:
                a = a * state["real"].to(h.dtype)
            h = h + a
            return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h
        return hook

    with hook_scope() as handles:
        if per_layer:
            handles.append(lm.sites.root.register_forward_pre_hook(on_call, with_kwargs=True))
            for layer, add in per_layer.items():
                handles.append(blocks[layer].register_forward_hook(make_hook(add.to(lm.device))))
        yield


@contextmanager
def read_trait(lm: LoadedModel, rows: Sequence[TraitVector | None]) -> Iterator[list[list[float]]]:
    """Record, per row, the read-out of every token the block's generate call chooses: value[b][t] is the
    projection (rescaled: +1 = our high answers' mean, -1 = our low answers') of the residual stream at the row's
    vector's read-out layer, at the position from which token t was chosen. Rows with None record nothing.

    Enter it BEFORE any steering context, so its hooks run first and read each layer's output before that layer's
    own steering addition. It reads; it never changes the computation."""
    rows = list(rows)
    blocks = residual_modules(lm.sites)
    values: list[list[float]] = [[] for _ in rows]
    by_layer: dict[int, list[int]] = {}
    for b, vec in enumerate(rows):
        if vec is not None:
            vec.check_model(lm.identity)
            by_layer.setdefault(vec.readout_layer, []).append(b)
    consts = {}
    for layer, idx in by_layer.items():
        unit = torch.stack([torch.from_numpy(rows[b].unit()[layer]) for b in idx])  # [k, H]
        mid = torch.tensor([float(rows[b].midpoint[layer]) for b in idx])
        scale = torch.tensor([max(float(rows[b].scale[layer]), 1e-12) for b in idx])
        consts[layer] = (torch.tensor(idx), unit.to(lm.device), mid, scale)

    def make_hook(layer: int):
        idx, unit, mid, scale = consts[layer]

        def hook(_module, _inputs, output):
            h = output[0] if isinstance(output, tuple) else output
            if h.shape[0] != len(rows):
                return None
            last = h[idx.to(h.device), -1].float()  # [k, H]: the state that chooses the next token
            proj = ((last * unit.float()).sum(-1).cpu() - mid) / scale
            for b, v in zip(idx.tolist(), proj.tolist()):
                values[b].append(v)
            return None
        return hook

    with hook_scope() as handles:
        for layer in consts:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield values
