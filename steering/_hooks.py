"""Hook plumbing shared by recording and induction: a scope that always removes its hooks, and what a forward
call is (the prompt pass or one decoding step, and which positions are real tokens)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch


@contextmanager
def hook_scope() -> Iterator[list]:
    """Collect hook handles; remove every one of them when the block ends, however it ends."""
    handles: list = []
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()
        handles.clear()


@dataclass(frozen=True)
class Call:
    """One forward call of the model as generate makes it."""

    input_ids: torch.Tensor | None  # [B, T], None when called with inputs_embeds
    batch: int
    length: int  # T, positions in this call
    past: int  # positions already in the cache; 0 for the prompt pass or a plain forward
    real: torch.Tensor | None  # [B, T] bool, False at padding; None when no attention mask was given


def read_call(args: tuple, kwargs: dict) -> Call:
    ids = kwargs.get("input_ids", args[0] if args else None)
    embeds = kwargs.get("inputs_embeds")
    shape = ids.shape if ids is not None else embeds.shape[:2]
    batch, length = int(shape[0]), int(shape[1])
    past = 0
    for key in ("cache", "past_key_values"):
        cache = kwargs.get(key)
        if cache is not None and hasattr(cache, "get_seq_length"):
            past = int(cache.get_seq_length())
            break
    mask = kwargs.get("attention_mask")
    if mask is None or mask.dim() != 2:
        return Call(ids, batch, length, past, None)
    return Call(ids, batch, length, past, mask[:, -length:].bool())
