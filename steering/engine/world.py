"""Data-parallel runs: identification and evaluation shared out over the processes a launcher started (`torchrun
--nproc-per-node N -m steering ...`, or `accelerate launch`), through torch.distributed.

A `World` is this process's rank among `size` processes. Work is cut into chunks (batches of questions, of answers
to make, of answers to judge) and chunk b belongs to rank b % size, so every rank makes the very batches a single
process would make, and the results are those of one process: counts and histograms are summed with
`all_reduce` (the maxima reduced with MAX), rows are gathered to every rank and put back in chunk order. Rank 0
alone writes files. `World()` is one process alone: every method is then a no-op that calls nothing of
torch.distributed, so single-process use needs no launcher and pays nothing.

`launched` joins the process group the launcher describes in the environment (WORLD_SIZE, RANK, MASTER_ADDR,
MASTER_PORT; LOCAL_RANK picks the GPU): gloo on a CPU, NCCL on CUDA."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")

__all__ = ["World", "launched"]


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run: rank `rank` of `size` (`World()`: one process)."""

    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> "World":
        """The process group this process has joined, or one process alone."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    def share(self, chunks: Sequence[T]) -> list[T]:
        """This rank's chunks: chunk b goes to rank b % size."""
        return list(chunks[self.rank::self.size])

    def rounds(self, chunks: Sequence[list[T]]) -> Iterator[tuple[list[T], int]]:
        """The chunks in rounds of one chunk per rank: this rank's chunk of each round ([] when none is left for
        it) and how many items the whole round holds. Every rank sees the same number of rounds, so a collective
        per round (`gather`) meets on every rank."""
        for start in range(0, len(chunks), self.size):
            mine = start + self.rank
            whole = sum(len(c) for c in chunks[start:start + self.size])
            yield (list(chunks[mine]) if mine < len(chunks) else []), whole

    def _everyone(self, mine: list[T]) -> list[list[T]]:
        """Every rank's list, in rank order, on every rank (pickled: rows, not tensors)."""
        if self.size == 1:
            return [list(mine)]
        import torch.distributed as dist

        parts: list[list[T] | None] = [None] * self.size
        dist.all_gather_object(parts, list(mine))
        return parts

    def gather(self, items: list[T]) -> list[T]:
        """Every rank's `items`, concatenated in rank order, on every rank."""
        return [item for part in self._everyone(items) for item in part]

    def interleave(self, mine: list[list[T]]) -> list[list[T]]:
        """The chunks every rank made from `share`, on every rank, back in chunk order (`mine`: this rank's results,
        one list per chunk it was given)."""
        parts = self._everyone(mine)
        return [parts[b % self.size][b // self.size] for b in range(sum(len(p) for p in parts))]

    def sum_stats(self, stats, chunk_rows: list[list[int]]):
        """Sum an `ActivationStats` over the ranks, in place, on every rank: token and firing counts and the
        histogram added, the maxima reduced with MAX. `chunk_rows` are the `row_tokens` entries each of this rank's
        chunks added (the last entries of `stats.row_tokens`, chunk by chunk); they are put back in chunk order
        across the ranks, so `row_tokens` too is what one process would hold."""
        if self.size == 1:
            return stats
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        for name, op in (("fire", dist.ReduceOp.SUM), ("hist", dist.ReduceOp.SUM), ("max", dist.ReduceOp.MAX)):
            tensor = getattr(stats, name).to(device)
            dist.all_reduce(tensor, op=op)
            setattr(stats, name, tensor.cpu())
        n = torch.tensor([stats.n_tokens], dtype=torch.int64, device=device)
        dist.all_reduce(n)
        stats.n_tokens = int(n.item())
        earlier = stats.row_tokens[:len(stats.row_tokens) - sum(len(c) for c in chunk_rows)]
        stats.row_tokens = earlier + [t for chunk in self.interleave(chunk_rows) for t in chunk]
        return stats


def _world_size(env) -> int:
    text = env.get("WORLD_SIZE", "1")
    try:
        size = int(text)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be a whole number (set by torchrun or accelerate), got {text!r}") from None
    if size < 1:
        raise ValueError(f"WORLD_SIZE must be at least 1, got {size}")
    return size


@contextmanager
def launched(device: str = "auto", env=os.environ) -> Iterator[World]:
    """The World of a run: when a launcher started this process as one of WORLD_SIZE > 1, join its process group
    (gloo, or NCCL when the run uses CUDA; each process on the GPU of its LOCAL_RANK) and leave it at the end;
    otherwise one process alone, with nothing set up."""
    size = _world_size(env)
    import torch.distributed as dist

    if size == 1 or dist.is_initialized():
        yield World.current()
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(env.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield World.current()
    finally:
        dist.destroy_process_group()
