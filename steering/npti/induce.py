"""Neuron-based personality trait induction (NPTI): shift a trait pole's neurons while the model generates.

For the target pole's neurons, at every decoding step, `a += p95 * strength * sigmoid(10 * (diff - 0.15))`,
each neuron kept independently with probability 0.9 per step; the opposite pole's neurons are clamped to
`a = min(a, 0)`. The prompt pass is left untouched unless `steer_prompt=True`.

The cheap formulation: each row's interventions are folded once, at the start of the block, into a dense
ceiling tensor (+inf where nothing is clamped, 0 where it is) and a flat list of pushed neurons with their
additions. Keep-masks are drawn for the pushed neurons only (a few percent of all neurons), 32 steps at a time;
a decoding step scatters its masked additions into a dense [batch, layers, width] tensor with one op; each
layer's hook is then one in-place add and (only if some row clamps) one minimum on a [batch, width] slice. Rows
that carry nothing get a zero addition and an infinite ceiling, which leaves them exactly as they were.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..engine.hooks import hook_scope, read_call
from ..engine.models import LoadedModel
from .profile import NeuronProfile

MAX_STRENGTH = 4.0
KEEP_PROB = 0.9
MASK_BLOCK = 32  # decoding steps whose keep-masks are drawn at once


def check_strength(strength: float) -> float:
    if not np.isfinite(strength) or not 0.0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"strength must be between 0 and {MAX_STRENGTH:g} (the paper used 0.6 to 1.5); "
                         f"got {strength!r}")
    return float(strength)


@dataclass(frozen=True)
class Intervention:
    """Push one trait pole on one row: `profile`'s neurons up by `strength`, `opposite`'s neurons clamped at 0."""

    profile: NeuronProfile
    strength: float = 1.0
    opposite: NeuronProfile | None = None

    def __post_init__(self) -> None:
        check_strength(self.strength)
        opp = self.opposite
        if opp is not None and (opp.trait != self.profile.trait or opp.pole == self.profile.pole):
            raise ValueError(f"the opposite of {self.profile.name} must be the same trait's other pole, "
                             f"not {opp.name}")

    def additions(self) -> np.ndarray:
        """What each of the profile's neurons gets added (before the keep-mask)."""
        p = self.profile
        return p.p95 * np.float32(self.strength) / (1.0 + np.exp(-10.0 * (p.diff - 0.15), dtype=np.float32))


Row = Intervention | Sequence[Intervention] | None


def _as_list(row: Row) -> list[Intervention]:
    if row is None:
        return []
    if isinstance(row, Intervention):
        return [row]
    return list(row)


def _dense(lm: LoadedModel, rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold every row's interventions into add [B, L, W] and ceiling [B, L, W].

    A neuron that one of a row's poles pushes is never clamped by another pole of the same row: the push is the
    explicit request."""
    n_layers, width = lm.sites.n_layers, lm.sites.width
    add = torch.zeros(len(rows), n_layers, width)
    ceiling = torch.full((len(rows), n_layers, width), float("inf"))
    for b, row in enumerate(rows):
        for iv in _as_list(row):
            iv.profile.check_model(lm.identity)
            add[b].index_put_((torch.from_numpy(iv.profile.layer), torch.from_numpy(iv.profile.index)),
                              torch.from_numpy(iv.additions()), accumulate=True)
            if iv.opposite is not None:
                iv.opposite.check_model(lm.identity)
                ceiling[b][torch.from_numpy(iv.opposite.layer), torch.from_numpy(iv.opposite.index)] = 0.0
        ceiling[b][add[b] != 0] = float("inf")
    return add, ceiling


@contextmanager
def steer(lm: LoadedModel, rows: Sequence[Row], seeds: int | Sequence[int] = 0, keep_prob: float = KEEP_PROB,
          steer_prompt: bool = False) -> Iterator[None]:
    """Steer the batch row by row while the block runs: `rows[b]` is one Intervention, several (e.g. high
    Extraversion and low Neuroticism), or None for an untouched row. The model's batch must have len(rows) rows.

    `seeds[b]` seeds row b's keep-masks with a generator of its own, so a row's masks do not depend on which other
    rows share its batch (an int `seeds` seeds row b with seeds + b, which does depend on the row's position). With
    `steer_prompt`, the prompt pass is steered too (padding excluded)."""
    rows = list(rows)
    seeds = _row_seeds(rows, seeds, keep_prob)
    device, dtype = lm.device, lm.sites.dtype
    add, ceiling = (t.to(device) for t in _dense(lm, rows))
    pushes = _Pushes(add, seeds, keep_prob, dtype, device)
    ops = _LayerOps(add, ceiling.to(dtype))
    del add
    state = _StepState()
    on_call = _call_hook(len(rows), ops, pushes, state, steer_prompt)
    with hook_scope() as handles:
        handles.append(lm.sites.root.register_forward_pre_hook(on_call, with_kwargs=True))
        for layer, module in enumerate(lm.sites.modules):
            handles.append(module.register_forward_hook(_layer_hook(ops.adds[layer], ops.caps[layer], state)))
        yield


def _row_seeds(rows: list[Row], seeds: int | Sequence[int], keep_prob: float) -> list[int]:
    """Check `steer`'s arguments; one keep-mask seed per row."""
    if not rows:
        raise ValueError("steer() needs at least one row")
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    seeds = [seeds + b for b in range(len(rows))] if isinstance(seeds, int) else [int(s) for s in seeds]
    if len(seeds) != len(rows):
        raise ValueError(f"{len(seeds)} seeds for {len(rows)} rows")
    return seeds


class _Pushes:
    """The pushed neurons of all rows, as flat positions in [B, L, W] with their additions, and their keep-masks.

    Only the pushed neurons need a keep-mask: draw for those alone (a few percent of all neurons), for MASK_BLOCK
    steps at a time. Row b's generator yields the same stream as one draw per step would."""

    def __init__(self, add: torch.Tensor, seeds: list[int], keep_prob: float, dtype: torch.dtype,
                 device: torch.device) -> None:
        n_neurons = add.shape[1] * add.shape[2]
        flat = {b: add[b].reshape(-1).nonzero().squeeze(1) for b in range(add.shape[0])}
        pushed = [b for b in flat if len(flat[b])]
        self.where = torch.cat([flat[b] + b * n_neurons for b in pushed]) if pushed else None
        self.values = torch.cat([add[b].reshape(-1)[flat[b]] for b in pushed]).to(dtype) if pushed else None
        self.sizes = [len(flat[b]) for b in pushed]
        self.generators = [torch.Generator(device=device).manual_seed(seeds[b]) for b in pushed]
        self.keep_prob, self.device = keep_prob, device
        self.masks: list[torch.Tensor] = []  # keep-masks drawn ahead, one [n_pushed] row per step

    def next_mask(self) -> torch.Tensor:
        if not self.masks:
            block = torch.cat([torch.rand(MASK_BLOCK, n, generator=g, device=self.device)
                               for n, g in zip(self.sizes, self.generators)], dim=1) < self.keep_prob
            self.masks.extend(block.unbind(0))
        return self.masks.pop(0)

    def draw_into(self, delta: torch.Tensor) -> None:
        """This step's masked additions, scattered into the dense per-step addition (untouched elsewhere)."""
        if self.where is not None:
            delta.view(-1)[self.where] = self.values * self.next_mask()


class _LayerOps:
    """The dense per-step addition `delta` [B, L, W] and, per layer, views into it and into the ceiling, or None
    where a layer has nothing to add or clamp, so the hook skips the op."""

    def __init__(self, add: torch.Tensor, ceiling: torch.Tensor) -> None:
        self.delta = torch.zeros(add.shape, dtype=ceiling.dtype, device=add.device)
        n_layers = add.shape[1]
        self.adds = [self.delta[:, l].unsqueeze(1) if bool(add[:, l].any()) else None for l in range(n_layers)]
        self.caps = [ceiling[:, l].unsqueeze(1) if bool((ceiling[:, l] == 0).any()) else None
                     for l in range(n_layers)]
        self.active = any(a is not None for a in self.adds) or any(c is not None for c in self.caps)


def _call_hook(n_rows: int, ops: _LayerOps, pushes: _Pushes, state: _StepState, steer_prompt: bool):
    """The pre-forward hook: check the batch, tell the layer hooks whether and how to steer this call, and draw
    this step's additions."""

    def on_call(_module, args, kwargs):
        call = read_call(args, kwargs)
        if call.batch != n_rows:
            raise ValueError(f"steer() was given {n_rows} rows but the model ran a batch of {call.batch}")
        prompt = call.past == 0
        state.on = ops.active and (steer_prompt or not prompt)
        state.real = call.real.unsqueeze(-1) if (state.on and prompt and call.real is not None) else None
        state.inplace = not torch.is_grad_enabled()
        if state.on:
            pushes.draw_into(ops.delta)
        return None
    return on_call


def _layer_hook(plus: torch.Tensor | None, cap: torch.Tensor | None, state: _StepState):
    """One layer's forward hook: add `plus`, then clamp at `cap`, as `state` says for this call."""

    def hook(_module, _inputs, output):
        if not state.on:
            return None
        real = state.real  # [B, T, 1] at a steered prompt pass with padding, else None
        if real is None and state.inplace:  # the common case, a decoding step: no new tensors
            if plus is not None:
                output.add_(plus)
            if cap is not None:
                torch.minimum(output, cap, out=output)
            return None
        steered = output if plus is None else output + (plus if real is None else plus * real)
        if cap is not None:
            capped = torch.minimum(steered, cap)
            steered = capped if real is None else torch.where(real, capped, steered)
        return steered
    return hook


class _StepState:
    """What the pre-forward hook tells the layer hooks about the current forward call."""

    __slots__ = ("on", "real", "inplace")

    def __init__(self) -> None:
        self.on = False
        self.real: torch.Tensor | None = None
        self.inplace = True
