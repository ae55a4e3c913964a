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


# each hook dict of a module, with the dicts torch keys alike for the same handle
_HOOK_DICTS = {"_forward_hooks": ("_forward_hooks_with_kwargs", "_forward_hooks_always_called"),
               "_forward_pre_hooks": ("_forward_pre_hooks_with_kwargs",)}


@contextmanager
def leaves_no_hooks(model: torch.nn.Module) -> Iterator[None]:
    """Whatever hooks are added to `model`'s modules inside the block, by code we do not control, are removed when
    it ends, however it ends. peft's per-row `adapter_names` forward registers pre-forward hooks and removes them
    without a `finally`: a generate that raises (a progress callback, a steering hook, a KeyboardInterrupt) leaves
    them on the model, and every later forward with another batch size fails. Hooks present before the block stay."""
    before = {id(m): {name: set(getattr(m, name)) for name in _HOOK_DICTS} for m in model.modules()}
    try:
        yield
    finally:
        for module in model.modules():
            known = before.get(id(module), {})
            for name, companions in _HOOK_DICTS.items():
                for key in set(getattr(module, name)) - known.get(name, set()):
                    for dict_name in (name, *companions):
                        getattr(module, dict_name, {}).pop(key, None)


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
