"""Fluency measures for generated answers: repetition (repeated 4-gram share), diversity (distinct-2), and
perplexity of the answer under the unsteered model given the plain question."""

from __future__ import annotations

import math
import re

import torch

from ..engine.generation import encode_chats
from ..engine.adapters import base_only
from ..engine.models import LoadedModel
from ..methods.prompts import plain_chat


def words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """Share of the text's n-grams that repeat an earlier one: 0 for no repetition, near 1 for a loop."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def distinct_n(text: str, n: int = 2) -> float:
    """Unique n-grams over all n-grams (1 for an empty or one-word answer)."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return 1.0 if not grams else len(set(grams)) / len(grams)


@torch.no_grad()
def perplexity(lm: LoadedModel, questions: list[str], answers: list[str], batch_size: int = 8) -> list[float]:
    """Perplexity of each answer's tokens under `lm` (call it outside any steering block), given the chat prompt of
    the plain question. Empty answers get NaN."""
    tok = lm.tokenizer
    out: list[float] = []
    for i in range(0, len(answers), batch_size):
        qs, ans = questions[i:i + batch_size], answers[i:i + batch_size]
        prompt = encode_chats(lm, [plain_chat(q) for q in qs])
        answer_ids = [tok(a, add_special_tokens=False)["input_ids"] for a in ans]
        width = max(1, max(len(a) for a in answer_ids))
        pad = tok.pad_token_id
        ids = torch.full((len(ans), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ans), width), dtype=torch.long)
        for r, a in enumerate(answer_ids):
            ids[r, :len(a)] = torch.tensor(a, dtype=torch.long)
            mask[r, :len(a)] = 1
        full = torch.cat([prompt["input_ids"].cpu(), ids], 1).to(lm.device)
        full_mask = torch.cat([prompt["attention_mask"].cpu(), mask], 1).to(lm.device)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        with base_only(lm):
            logits = lm.model(input_ids=full, attention_mask=full_mask, position_ids=positions).logits.float()
        p = prompt["input_ids"].shape[1]
        logp = torch.log_softmax(logits[:, p - 1:-1], dim=-1).gather(-1, full[:, p:].unsqueeze(-1)).squeeze(-1)
        for r, a in enumerate(answer_ids):
            n = len(a)
            out.append(math.exp(-float(logp[r, :n].sum()) / n) if n else float("nan"))
    return out
