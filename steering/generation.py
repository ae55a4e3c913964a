"""Batched chat generation: left-padded prompts in, decoded answers out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .adapters import row_adapters
from .models import LoadedModel

MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class Decoding:
    """How to decode. Greedy with repetition penalty 1.1 is the paper's setting for identification."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 2048:
            raise ValueError(f"max_new_tokens must be between 1 and 2048, got {self.max_new_tokens}")

    def kwargs(self) -> dict:
        kw = asdict(self)
        if not self.do_sample:
            kw.pop("temperature")
            kw.pop("top_p")
        return kw


@dataclass(frozen=True)
class Answer:
    text: str
    n_tokens: int  # generated tokens, up to and including end-of-sequence
    finished: bool  # ended with end-of-sequence rather than the token limit
    pieces: tuple[str, ...] = ()  # the answer's tokens, each decoded on its own (end-of-sequence excluded)
    readout: tuple[tuple[str, float], ...] | None = None  # (piece, trait read-out) per token, where asked for


def eos_ids(lm: LoadedModel) -> list[int]:
    """Every token id that ends a row: the generation config's and the tokenizer's."""
    ids: set[int] = set()
    for source in (getattr(lm.model, "generation_config", None), lm.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


def check_question(text: str) -> str:
    """Refuse what no model should be asked: nothing, or more than MAX_PROMPT_CHARS characters."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the question is empty")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the question is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}")
    return text.strip()


def encode_chats(lm: LoadedModel, conversations: list[list[dict]]) -> dict:
    """Apply the chat template to each conversation and left-pad them into one batch."""
    tok = lm.tokenizer
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(lm.device) for k, v in enc.items()}


class _StepCounter(LogitsProcessor):
    """Calls back once per decoding step; leaves the scores alone."""

    def __init__(self, on_step: Callable[[int], None]) -> None:
        self.on_step, self.steps = on_step, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        self.on_step(self.steps)
        return scores


@torch.no_grad()
def generate_chats(lm: LoadedModel, conversations: list[list[dict]], decoding: Decoding = Decoding(),
                   seed: int = 0, adapters: list[str | None] | None = None,
                   on_step: Callable[[int], None] | None = None) -> list[Answer]:
    """Answer each conversation in one batched generate call. Wrap it in `steer(...)` to steer rows, or in
    `record_activations(...)` to record them. `seed` seeds sampling (greedy decoding ignores it).

    `adapters[b]` names the LoRA adapter of row b (loaded with `adapters.attach_adapter`) or None for the base
    model; on a model with adapters loaded, rows that name none always run as the base model. `on_step(n)` is
    called after each of the batch's decoding steps (a progress bar)."""
    if not conversations:
        return []
    enc = encode_chats(lm, conversations)
    limit = getattr(getattr(lm.model, "config", None), "max_position_embeddings", None)
    if limit and enc["input_ids"].shape[1] + decoding.max_new_tokens > limit:
        raise ValueError(f"the prompt ({enc['input_ids'].shape[1]} tokens) plus {decoding.max_new_tokens} new "
                         f"tokens exceeds the model's context of {limit} tokens")
    if decoding.do_sample:
        torch.manual_seed(seed)
    eos = eos_ids(lm)
    per_row = row_adapters(lm, adapters, len(conversations))
    if on_step is not None:
        per_row["logits_processor"] = LogitsProcessorList([_StepCounter(on_step)])
    out = lm.model.generate(**enc, **decoding.kwargs(), **per_row, eos_token_id=eos,
                            pad_token_id=lm.tokenizer.pad_token_id)
    answers = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        kept = row if stop is None else row[:stop]
        pieces = tuple(lm.tokenizer.decode([t], skip_special_tokens=True) for t in kept)
        answers.append(Answer(lm.tokenizer.decode(kept, skip_special_tokens=True).strip(),
                              len(row) if stop is None else stop + 1, stop is not None, pieces))
    return answers
