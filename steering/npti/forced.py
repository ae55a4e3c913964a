"""Teacher forcing: let the model READ trait-expressive answers instead of generating under a persona prompt.

Each example is the plain question as the user turn (no system prompt) and a given answer as the assistant turn,
run through the model in one forward pass per batch. Only the answer's positions count: the positions whose INPUT
token is an answer token (the same rule as recording over generated tokens, where a generated token counts at the
position it is fed in), never the prompt and never padding. Batches are right-padded, so every row's prompt starts
at position 0.

Two readers share the encoding: `record_forced` counts MLP neuron firing into an `ActivationStats` (NPTI's
identification from the corpus), and `residual_stats` sums the residual stream after each decoder layer (the
activation vectors)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..engine.hooks import hook_scope
from ..engine.models import LoadedModel
from ..engine.world import World
from ..methods.prompts import plain_chat
from .record import ActivationStats, Bins
from ..engine.sites import residual_modules


@dataclass(frozen=True)
class ForcedBatch:
    input_ids: torch.Tensor  # [B, T], right-padded
    attention_mask: torch.Tensor  # [B, T]
    answer: torch.Tensor  # [B, T] bool: positions whose input token is an answer token


def encode_forced(lm: LoadedModel, examples: Sequence[tuple[str, str]], max_answer_tokens: int = 192) -> ForcedBatch:
    """(question, answer) pairs as right-padded chat sequences, the answer after the assistant turn's opening (no
    end-of-sequence appended: reading stops at the answer's last token)."""
    tok = lm.tokenizer
    rows, starts = [], []
    for question, text in examples:
        if not text.strip():
            raise ValueError(f"an empty answer cannot be read (question {question[:60]!r})")
        prompt = tok.apply_chat_template(plain_chat(question), tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(text.strip(), add_special_tokens=False)["input_ids"][:max_answer_tokens]
        rows.append(p_ids + a_ids)
        starts.append(len(p_ids))
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    answer = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (r, s) in enumerate(zip(rows, starts)):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
        answer[b, s: len(r)] = True
    return ForcedBatch(ids, mask, answer)


def _batches(examples: Sequence, batch_size: int, progress: Callable | None, desc: str, world: World = World()):
    """The examples in batches, this rank's share of them (all of them in one process), with a progress bar on
    rank 0."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    chunks = world.share([examples[i:i + batch_size] for i in range(0, len(examples), batch_size)])
    return progress(chunks, desc=desc) if progress and world.writer else chunks


@torch.no_grad()
def _forward(lm: LoadedModel, batch: ForcedBatch) -> None:
    from ..engine.adapters import base_only

    with base_only(lm):
        lm.model(input_ids=batch.input_ids.to(lm.device), attention_mask=batch.attention_mask.to(lm.device),
                 use_cache=False)


def _read_answers(lm: LoadedModel, modules: Sequence, examples: Sequence[tuple[str, str]], batch_size: int,
                  progress: Callable | None, desc: str, world: World = World()):
    """Teacher-force the examples batch by batch with a hook on each of `modules` (one per layer); yield each batch
    and the modules' outputs at its answer positions, [k answer tokens, layers, width], row-major."""
    seen: list[torch.Tensor | None] = [None] * len(modules)

    def make_hook(layer: int):
        def hook(_module, _inputs, output):
            seen[layer] = output[0] if isinstance(output, tuple) else output
        return hook

    with hook_scope() as handles:
        for layer, module in enumerate(modules):
            handles.append(module.register_forward_hook(make_hook(layer)))
        for chunk in _batches(list(examples), batch_size, progress, desc, world):
            batch = encode_forced(lm, chunk)
            _forward(lm, batch)
            where = batch.answer.to(lm.device)
            yield batch, torch.stack([s[where] for s in seen], dim=1)
            seen[:] = [None] * len(modules)


def record_forced(lm: LoadedModel, examples: Sequence[tuple[str, str]], *, batch_size: int = 8, bins: Bins = Bins(),
                  stats: ActivationStats | None = None, progress: Callable | None = None,
                  desc: str = "reading", world: World = World()) -> ActivationStats:
    """Neuron firing and value histograms over the answers' tokens, read with teacher forcing. Under a launcher
    (`world`), each rank reads its share of the batches and the counts are summed over the ranks (a `stats` passed
    in must then hold this rank's counts only)."""
    stats = stats or ActivationStats(lm.sites.n_layers, lm.sites.width, bins)
    rows: list[list[int]] = []
    for batch, values in _read_answers(lm, lm.sites.modules, examples, batch_size, progress, desc, world):
        stats.add_values(values.float().cpu())
        rows.append(batch.answer.sum(1).tolist())
        stats.row_tokens.extend(rows[-1])
    return world.sum_stats(stats, rows)


@dataclass
class ResidualStats:
    """Sums over answer tokens of the residual stream after each decoder layer: [L, H] sums, [L] norm sums."""

    sum: torch.Tensor
    norm_sum: torch.Tensor
    n_tokens: int = 0

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.n_tokens, 1)


def residual_stats(lm: LoadedModel, examples: Sequence[tuple[str, str]], *, batch_size: int = 8,
                   progress: Callable | None = None, desc: str = "reading",
                   per_example: list | None = None) -> ResidualStats:
    """Residual-stream sums over the answers' tokens, per layer (float64 accumulators). With `per_example`, each
    example's mean residual [L, H] is appended to it (for read-out layer choice)."""
    acc: ResidualStats | None = None
    for batch, values in _read_answers(lm, residual_modules(lm.sites), examples, batch_size, progress, desc):
        values = values.double().cpu()  # [k, L, H]
        if acc is None:
            acc = ResidualStats(torch.zeros(values.shape[1:], dtype=torch.float64),
                                torch.zeros(values.shape[1], dtype=torch.float64))
        acc.sum += values.sum(0)
        acc.norm_sum += values.norm(dim=-1).sum(0)
        acc.n_tokens += int(values.shape[0])
        if per_example is not None:
            for part in torch.split(values, batch.answer.sum(1).tolist()):
                per_example.append(part.mean(0))
    if acc is None:
        raise ValueError("no examples to read")
    return acc


@torch.no_grad()
def answer_logprob(lm: LoadedModel, examples: Sequence[tuple[str, str]], adapters: Sequence[str | None] | None = None,
                   batch_size: int = 8) -> list[float]:
    """Mean log-probability per answer token of each (question, answer), read with teacher forcing; rows may name a
    loaded LoRA adapter each (`adapters`, None = the base model). Wrap it in `steer(..., steer_prompt=True)` or
    `steer_vectors(..., steer_prompt=True)` to score under steering: a direction that moves the model toward a
    pole makes that pole's corpus answers more likely."""
    from ..engine.adapters import row_adapters

    out: list[float] = []
    names = list(adapters) if adapters is not None else [None] * len(examples)
    for i in range(0, len(examples), batch_size):
        chunk = list(examples[i:i + batch_size])
        batch = encode_forced(lm, chunk)
        ids = batch.input_ids.to(lm.device)
        logits = lm.model(input_ids=ids, attention_mask=batch.attention_mask.to(lm.device), use_cache=False,
                          **row_adapters(lm, names[i:i + batch_size], len(chunk))).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        target = batch.answer[:, 1:].to(lm.device)  # position t predicts token t + 1
        out.extend(((logp * target).sum(1) / target.sum(1).clamp(min=1)).tolist())
    return out
