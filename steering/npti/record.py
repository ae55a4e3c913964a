"""Recording neuron activity over generated tokens, for identification.

Counted positions: those whose input token is a generated token, up to but not including the row's first
end-of-sequence token. Never the prompt (the prompt pass is not recorded), never left padding (padding only occurs
in the prompt), never anything after a row's end-of-sequence (rows that finished early keep being fed padding
while the batch goes on; those steps are masked out).

Per neuron we keep how often it fired (activation > 0) and a histogram of its values, from which the 95th
percentile is read within one bin width. Decoding steps are copied into a small buffer, one copy per layer per
step; every `chunk` steps the buffer's counted positions are counted at once, the histogram by one
`scatter_add_` along the bin axis of a [bins, neurons] table (contiguous across neurons, so it vectorises).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

from ..engine.hooks import hook_scope, read_call
from ..engine.models import LoadedModel


@dataclass(frozen=True)
class Bins:
    """Histogram range. Values outside [low, high) land in the edge bins; SmolLM2's activations exceed the
    paper's 0-3 range (its 95th percentiles reach 12 and its maxima 16), so the default reaches 24.5, in bins
    of 0.025."""

    low: float = -0.5
    high: float = 24.5
    count: int = 1000

    @property
    def width(self) -> float:
        return (self.high - self.low) / self.count


@dataclass
class ActivationStats:
    """Firing counts and value histograms per neuron over the counted positions."""

    n_layers: int
    width: int
    bins: Bins = field(default_factory=Bins)
    n_tokens: int = 0
    fire: torch.Tensor | None = None  # [L, W] int64
    hist: torch.Tensor | None = None  # [bins, L, W] int32 (bin-major: neighbouring neurons share cache lines)
    max: torch.Tensor | None = None  # [L, W] float32
    row_tokens: list[int] = field(default_factory=list)  # counted positions per row, per generate call that decoded

    def __post_init__(self) -> None:
        shape = (self.n_layers, self.width)
        if self.fire is None:
            self.fire = torch.zeros(shape, dtype=torch.int64)
        if self.hist is None:
            self.hist = torch.zeros((self.bins.count,) + shape, dtype=torch.int32)
        if self.max is None:
            self.max = torch.full(shape, float("-inf"))

    def firing_probability(self) -> torch.Tensor:
        return self.fire.double().div(max(self.n_tokens, 1)).float()

    def quantile(self, q: float = 0.95) -> torch.Tensor:
        """Per-neuron q-quantile from the histogram: the midpoint of the bin that holds it, so within half a bin
        width of the exact value as long as it is inside the range (capped at the observed maximum)."""
        if self.n_tokens == 0:
            return torch.zeros(self.n_layers, self.width)
        rank = int(torch.tensor(q * self.n_tokens, dtype=torch.float64).ceil().clamp(min=1))
        # b = how many bins' running count stays below the rank, the running count taken a block of bins at a time
        # (a block's cumulative sums stay in cache: about 3x faster than one cumulative sum over the whole table)
        flat = self.hist.reshape(self.bins.count, -1)
        dtype = torch.int32 if self.n_tokens < 2**31 else torch.int64  # a running count never exceeds n_tokens
        below = torch.zeros(flat.shape[1], dtype=torch.int64)
        carried = torch.zeros(flat.shape[1], dtype=dtype)
        for start in range(0, self.bins.count, 64):
            cum = flat[start:start + 64].cumsum(0, dtype=dtype).add_(carried)
            below += (cum < rank).sum(0)
            carried = cum[-1]
        b = below.view(self.n_layers, self.width)
        value = self.bins.low + (b.double() + 0.5) * self.bins.width
        return torch.minimum(value.float(), self.max)

    def clipped(self, q: float = 0.95) -> torch.Tensor:
        """Neurons whose q-quantile lies beyond the histogram's range (so it is only known to be >= high)."""
        return self.quantile(q) >= self.bins.high

    def add_values(self, values: torch.Tensor) -> None:
        """Count values of shape [k, L, W]: k positions of every neuron. May modify `values` in place."""
        values = values.float()
        k = int(values.shape[0])
        self.n_tokens += k
        self.fire += (values > 0).view(torch.uint8).sum(0, dtype=torch.int32)  # 3x faster than a bool sum
        torch.maximum(self.max, values.amax(0), out=self.max)
        # bin index; truncation is floor here because values are clamped to >= 0 first
        b = values.sub_(self.bins.low).mul_(1.0 / self.bins.width).clamp_(0, self.bins.count - 1).long()
        ones = torch.ones(1, 1, dtype=self.hist.dtype).expand(k, self.n_layers * self.width)
        self.hist.view(self.bins.count, -1).scatter_add_(0, b.view(k, -1), ones)

    def save(self, path: str | Path) -> None:
        torch.save({"n_layers": self.n_layers, "width": self.width, "bins": asdict(self.bins),
                    "n_tokens": self.n_tokens, "fire": self.fire, "hist": self.hist, "max": self.max,
                    "row_tokens": self.row_tokens}, path)

    @classmethod
    def load(cls, path: str | Path) -> "ActivationStats":
        data = torch.load(path, weights_only=True)
        data["bins"] = Bins(**data["bins"])
        return cls(**data)


@contextmanager
def record_activations(lm: LoadedModel, eos_token_ids: Iterable[int], bins: Bins = Bins(),
                       chunk: int = 16, stats: ActivationStats | None = None) -> Iterator[ActivationStats]:
    """Record every generate call made inside the block; the stats are complete when the block ends.

    Pass `stats` to keep adding to earlier counts."""
    sites = lm.sites
    stats = stats or ActivationStats(sites.n_layers, sites.width, bins)
    eos = torch.tensor(sorted(set(int(i) for i in eos_token_ids)), dtype=torch.long)
    recorder = _Recorder(stats, eos, chunk, lm)
    with hook_scope() as handles:
        handles.append(sites.root.register_forward_pre_hook(recorder.on_call, with_kwargs=True))
        for layer, module in enumerate(sites.modules):
            handles.append(module.register_forward_hook(recorder.layer_hook(layer)))
        yield stats
        recorder.end_call()


class _Recorder:
    """The hooks' shared state: the buffer of decoding steps not yet counted ([chunk, L, B, W], with which rows
    count at each step), the buffer slot the current step's layers copy into, and per row whether it has ended and
    how many positions it has counted in the current generate call."""

    def __init__(self, stats: ActivationStats, eos: torch.Tensor, chunk: int, lm: LoadedModel) -> None:
        self.stats, self.eos, self.chunk, self.lm = stats, eos, chunk, lm
        self.buf: torch.Tensor | None = None  # [chunk, L, B, W]
        self.alive: torch.Tensor | None = None  # [chunk, B] bool: the buffered positions that count
        self.n = 0  # buffered steps
        self.slot: int | None = None  # where the layers copy the current step; None: not recording
        self.done: torch.Tensor | None = None  # [B] bool: the row has seen its end-of-sequence
        self.rows: torch.Tensor | None = None  # [B] counted positions per row in this generate call
        self.steps = 0  # decoding steps in this generate call

    def flush(self) -> None:
        n = self.n
        if n:
            buf, alive = self.buf[:n], self.alive[:n]  # [n, L, B, W], [n, B]
            self.stats.add_values(buf.permute(0, 2, 1, 3)[alive.to(buf.device)].cpu())
        self.n = 0

    def end_call(self) -> None:
        self.flush()
        if self.rows is not None and self.steps:
            self.stats.row_tokens.extend(self.rows.tolist())
        self.rows, self.steps = None, 0

    def on_call(self, _module, args, kwargs):
        call = read_call(args, kwargs)
        if call.past == 0:  # a new prompt pass: the previous generate call is over
            self._start(call.batch)
            return None
        if call.length != 1 or call.input_ids is None:
            raise ValueError("recording expects generate's one-token decoding steps")
        if self.n == self.chunk:
            self.flush()
        token = call.input_ids[:, -1].cpu()
        is_eos = torch.isin(token, self.eos)
        alive = ~self.done & ~is_eos
        self.done |= is_eos
        self.rows += alive
        self.steps += 1
        self.alive[self.n] = alive
        self.slot = self.n
        self.n += 1
        return None

    def _start(self, batch: int) -> None:
        self.end_call()
        self.slot = None
        self.done = torch.zeros(batch, dtype=torch.bool)
        self.rows = torch.zeros(batch, dtype=torch.long)
        sites = self.lm.sites
        shape = (self.chunk, sites.n_layers, batch, sites.width)
        if self.buf is None or self.buf.shape != shape:
            self.buf = torch.empty(shape, dtype=torch.float32, device=self.lm.device)
            self.alive = torch.zeros(self.chunk, batch, dtype=torch.bool)

    def layer_hook(self, layer: int):
        def hook(_module, _inputs, output):
            slot = self.slot
            if slot is not None:
                self.buf[slot, layer].copy_(output[:, -1])
            return None
        return hook
