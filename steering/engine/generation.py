"""Batched chat generation: left-padded prompts in, decoded answers out."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .hooks import leaves_no_hooks
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

    @classmethod
    def studio(cls) -> "Decoding":
        """The studio's decoding (sampling, 96 tokens): the one the sweep chooses the shipped defaults under."""
        return cls(max_new_tokens=96, do_sample=True)

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
    """Calls back once per decoding step, before the step's token is chosen; leaves the scores alone. `on_text`
    gets each row's answer so far (up to end-of-sequence) for streaming: it lags the chosen token by one step."""

    def __init__(self, on_step: Callable[[int], None] | None, on_text: Callable[[list[str]], None] | None,
                 lm: LoadedModel, prompt_length: int, eos: list[int]) -> None:
        self.on_step, self.on_text, self.steps = on_step, on_text, 0
        self.lm, self.prompt_length, self.eos = lm, prompt_length, eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        if self.on_step is not None:
            self.on_step(self.steps)
        if self.on_text is not None:
            self.on_text([_decode(self.lm, row, self.eos)[0]
                          for row in input_ids[:, self.prompt_length:].tolist()])
        return scores


class _RowSampler(LogitsProcessor):
    """Sampling with one generator per row: temperature, then nucleus (top-p) filtering, then a draw from the
    row's own generator. It returns scores that leave only the drawn token, so generate's greedy choice takes it.
    A row's answer so depends on its own seed, not on its place in the batch or on the other rows (a single
    batch-wide seed would tie every row's draws to the batch's composition)."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device: torch.device) -> None:
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p, self.device = temperature, top_p, device

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = ordered.softmax(-1)
        before = probs.cumsum(-1) - probs  # the mass of the tokens ranked above each token
        ordered = ordered.masked_fill(before >= self.top_p, float("-inf"))  # the top token always stays
        probs = ordered.softmax(-1).cpu()
        out = torch.full_like(scores, float("-inf"))
        for b, generator in enumerate(self.generators):
            pick = int(torch.multinomial(probs[b], 1, generator=generator))
            out[b, order[b, pick]] = 0.0
        return out


def _decode(lm: LoadedModel, row: list[int], eos: list[int]) -> tuple[str, int | None, list[int]]:
    """A row's generated ids decoded up to (not including) the first end-of-sequence: (text, eos position, ids)."""
    stop = next((i for i, t in enumerate(row) if t in eos), None)
    kept = row if stop is None else row[:stop]
    return lm.tokenizer.decode(kept, skip_special_tokens=True).strip(), stop, kept


@torch.no_grad()
def generate_chats(lm: LoadedModel, conversations: list[list[dict]], decoding: Decoding = Decoding(),
                   seed: int | list[int] = 0, adapters: list[str | None] | None = None,
                   on_step: Callable[[int], None] | None = None,
                   on_text: Callable[[list[str]], None] | None = None) -> list[Answer]:
    """Answer each conversation in one batched generate call. Wrap it in `steer(...)` to steer rows, or in
    `record_activations(...)` to record them.

    `seed` seeds sampling (greedy decoding ignores it): one int seeds the batch as a whole (torch's global
    generator), a list gives row b its own generator seeded with `seed[b]`, so a row's answer does not depend on
    the rest of the batch. `adapters[b]` names the LoRA adapter of row b (loaded with `adapters.attach_adapter`)
    or None for the base model; on a model with adapters loaded, rows that name none always run as the base model.
    `on_step(n)` is called at each of the batch's decoding steps (a progress bar); `on_text(texts)` with every
    row's answer so far (streaming)."""
    if not conversations:
        return []
    if isinstance(seed, list) and len(seed) != len(conversations):
        raise ValueError(f"{len(seed)} seeds for {len(conversations)} conversations")
    enc = encode_chats(lm, conversations)
    limit = getattr(getattr(lm.model, "config", None), "max_position_embeddings", None)
    prompt_length = enc["input_ids"].shape[1]
    if limit and prompt_length + decoding.max_new_tokens > limit:
        raise ValueError(f"the prompt ({prompt_length} tokens) plus {decoding.max_new_tokens} new "
                         f"tokens exceeds the model's context of {limit} tokens")
    eos = eos_ids(lm)
    per_row = row_adapters(lm, adapters, len(conversations))
    kwargs = decoding.kwargs()
    processors = []
    if decoding.do_sample and isinstance(seed, list):
        processors.append(_RowSampler(seed, decoding.temperature, decoding.top_p, lm.device))
        kwargs = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_p")} | {"do_sample": False}
    elif decoding.do_sample:
        torch.manual_seed(seed)
    if on_step is not None or on_text is not None:
        processors.append(_StepCounter(on_step, on_text, lm, prompt_length, eos))
    if processors:
        per_row["logits_processor"] = LogitsProcessorList(processors)
    with leaves_no_hooks(lm.model):  # peft's per-row adapter hooks survive an exception otherwise
        out = lm.model.generate(**enc, **kwargs, **per_row, eos_token_id=eos,
                                pad_token_id=lm.tokenizer.pad_token_id)
    answers = []
    for row in out[:, prompt_length:].tolist():
        text, stop, kept = _decode(lm, row, eos)
        pieces = tuple(lm.tokenizer.decode([t], skip_special_tokens=True) for t in kept)
        answers.append(Answer(text, len(row) if stop is None else stop + 1, stop is not None, pieces))
    return answers


_SENTENCE_END = re.compile(r"""[.!?…](?:["'”’)\]]*)(?=\s|$)""")


def trim_to_sentence(text: str, finished: bool) -> str:
    """What a page shows of an answer: the answer itself when it ended on its own; cut at the token limit, the
    answer up to its last complete sentence, or, where no sentence ends, up to its last whole word with "…".
    Raters then judge every method on whole sentences, and a cut answer's length no longer gives it away."""
    text = text.strip()
    if finished or not text:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if ends:
        return text[:ends[-1]]
    words = text.rsplit(None, 1)
    head = words[0] if len(words) == 2 else ""
    return (head.rstrip(",;:-– ") or text) + "…"
