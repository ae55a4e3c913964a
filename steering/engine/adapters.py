"""Serving LoRA adapters in mixed batches: many adapters loaded into one peft model, and each row of a batch
names its own (or none). peft applies a row's adapter to that row alone, so a base row computes exactly what the
model computes with no adapter at all."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .models import LoadedModel

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


def adapter_name(trait: str, pole: str) -> str:
    return f"{trait}_{pole}"


def loaded_adapters(lm: LoadedModel) -> set[str]:
    """Names of the adapters loaded into the model (none while it is not a peft model)."""
    config = getattr(lm.model, "peft_config", None)
    return set(config) if isinstance(config, dict) else set()


def check_adapter(lm: LoadedModel, folder: Path) -> None:
    """Refuse an adapter trained on a different architecture, with both identities in the message."""
    card = folder / "training.json"
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no LoRA adapter (adapter_config.json is missing)")
    if card.is_file():
        trained_on = json.loads(card.read_text()).get("fingerprint")
        if trained_on and trained_on != lm.identity.fingerprint:
            raise ValueError(f"the adapter in {folder} was trained on another model (fingerprint {trained_on}); "
                             f"this model is {lm.identity.name} ({lm.identity.fingerprint})")


def attach_adapter(lm: LoadedModel, name: str, folder: str | Path) -> None:
    """Load the adapter in `folder` under `name` (once). The first adapter wraps `lm.model` in a peft model in
    place; from then on rows that name no adapter run as the base model (see `row_adapters`)."""
    from peft import PeftModel

    if name == BASE:
        raise ValueError(f"{BASE!r} is reserved for rows without an adapter")
    if name in loaded_adapters(lm):
        return
    folder = Path(folder)
    check_adapter(lm, folder)
    if lm.quantization in ("nf4", "int8") and lm.device.type == "cpu" and not isinstance(lm.model, PeftModel):
        raise ValueError(
            f"LoRA adapters are not served on a {lm.quantization} model on a CPU: peft's layers over bitsandbytes' "
            "CPU kernels garbled even the base model on a CPU with AVX512-BF16 (the model cannot be restored "
            "afterwards); load the model with --quantization bf16 (the app's CPU default) to use the adapters")
    if isinstance(lm.model, PeftModel):
        lm.model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    else:
        before = _probe_logits(lm.model)
        lm.model = PeftModel.from_pretrained(lm.model, str(folder), adapter_name=name, is_trainable=False)
        with lm.model.disable_adapter():
            after = _probe_logits(lm.model)
        if not torch.allclose(before, after, rtol=1e-3, atol=1e-3):
            lm.model = lm.model.unload()
            raise ValueError(
                f"a LoRA adapter changed this {lm.quantization} model's base path on {lm.device.type} (with the "
                f"adapter switched off its logits moved by up to {float((before - after).abs().max()):.3g}): reload "
                "the model, and use --quantization bf16 to serve the LoRA adapters")
    lm.model.eval()


@torch.no_grad()
def _probe_logits(model) -> torch.Tensor:
    """The model's logits on a fixed short input: attaching an adapter must leave the base path exactly as it was."""
    device = next(model.parameters()).device
    ids = torch.arange(3, 11, device=device).unsqueeze(0)
    return model(input_ids=ids).logits.float().cpu()


def row_adapters(lm: LoadedModel, names: list[str | None] | None, batch: int) -> dict:
    """The generate() keyword for per-row adapters: {} for a model without adapters, else adapter_names with
    BASE for every row that names none."""
    loaded = loaded_adapters(lm)
    names = list(names) if names is not None else [None] * batch
    if len(names) != batch:
        raise ValueError(f"{len(names)} adapter names for {batch} rows")
    wanted = {n for n in names if n}
    if missing := wanted - loaded:
        raise ValueError(f"adapters not loaded: {', '.join(sorted(missing))}")
    if not loaded:
        return {}
    return {"adapter_names": [n or BASE for n in names]}


def base_only(lm: LoadedModel):
    """A context in which plain forward calls run the base model even where adapters are loaded (peft would
    otherwise apply its active adapter to every row)."""
    from contextlib import nullcontext

    disable = getattr(lm.model, "disable_adapter", None)
    return disable() if disable is not None and loaded_adapters(lm) else nullcontext()
