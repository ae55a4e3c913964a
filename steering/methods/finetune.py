"""The fine-tuned baseline: a LoRA adapter per trait pole, trained by supervised fine-tuning on pairs (plain
question -> the answer the model gave under that pole's persona prompt). The persona-prompted answers are the ones
identification kept, so the adapter learns to answer as the persona without being told to.

Training is plain PyTorch over a peft model: right-padded batches, loss on the answer tokens only, AdamW, a
linear warm-up then constant learning rate. On a CUDA device with a 4-bit base this is QLoRA."""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..engine.generation import eos_ids
from ..engine.models import LoadedModel
from .prompts import plain_chat
from .questions import read_questions
from ..traits import check_pole, check_trait

ADAPTER_FORMAT = "persona-studio/lora-adapter"


@dataclass(frozen=True)
class Training:
    """How to train one adapter. Small on purpose: rank 8 on the attention query and value projections of the
    top 15 layers keeps an adapter of the default model under 1 MB, and backpropagating through half the layers
    is what makes two epochs over ~165 answers take minutes on a CPU."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] | None = ("q_proj", "v_proj")  # None: peft's default for the architecture
    top_layers: int | None = 15  # adapt only the last N layers (None: every layer)
    learning_rate: float = 1e-3
    epochs: int = 2
    batch_size: int = 8
    warmup_steps: int = 4
    max_answer_tokens: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rank", "alpha", "epochs", "batch_size", "max_answer_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")


# Training on the corpus: its answers run to ~120 tokens and should be learnt whole (so the adapter also learns to
# stop); three epochs over ~110 pairs.
CORPUS_TRAINING = Training(epochs=3, max_answer_tokens=160)


@dataclass
class AdapterCard:
    """What was trained and how it went; saved as training.json beside the adapter, with loss.csv."""

    trait: str
    pole: str
    model: str
    fingerprint: str
    examples: int
    steps: int
    seconds: float
    final_loss: float
    losses: list[float] = field(repr=False)
    training: dict = field(default_factory=dict)
    size_bytes: int = 0

    def summary(self) -> dict:
        """The manifest entry: everything but the per-step losses."""
        out = asdict(self)
        out.pop("losses")
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "training.json").write_text(json.dumps({"format": ADAPTER_FORMAT, **self.summary()}, indent=1) + "\n")
        with open(folder / "loss.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss"])
            for i, loss in enumerate(self.losses, 1):
                w.writerow([i, f"{loss:.5f}"])

    @classmethod
    def load(cls, folder: Path) -> "AdapterCard":
        data = json.loads((Path(folder) / "training.json").read_text())
        if data.pop("format", None) != ADAPTER_FORMAT:
            raise ValueError(f"{folder}/training.json is not a {ADAPTER_FORMAT} card")
        with open(Path(folder) / "loss.csv") as f:
            losses = [float(r["loss"]) for r in csv.DictReader(f)]
        return cls(**data, losses=losses)


def training_pairs(answers: str | Path, trait: str, pole: str) -> list[tuple[str, str]]:
    """(question, persona-prompted answer) for one pole, from an identification answers file."""
    trait, pole = check_trait(trait), check_pole(pole)
    rows = read_questions(answers)
    pairs = [(r["question"], r["answer"]) for r in rows
             if r.get("trait", trait) == trait and r.get("pole") == pole and str(r.get("answer", "")).strip()]
    if not pairs:
        raise ValueError(f"{answers}: no answers for {trait} {pole}")
    return pairs


def corpus_pairs(trait: str, pole: str, root: Path | None = None) -> list[tuple[str, str]]:
    """(question, that pole's corpus answer) for one pole, from the corpus's train split."""
    from .corpus import load_corpus

    pole = check_pole(pole)
    return [(p.question, p.answer(pole)) for p in load_corpus(trait, "train", root)]


def encode_pairs(lm: LoadedModel, pairs: list[tuple[str, str]], max_answer_tokens: int) -> list[tuple[list[int], int]]:
    """Token ids of prompt + answer for each pair, and where the answer starts. An answer longer than the limit is
    cut; a whole answer ends with end-of-sequence so the adapter also learns when to stop."""
    tok = lm.tokenizer
    eos = eos_ids(lm)
    out = []
    for question, answer in pairs:
        prompt = tok.apply_chat_template(plain_chat(question), tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(answer.strip(), add_special_tokens=False)["input_ids"]
        a_ids = a_ids[:max_answer_tokens] if len(a_ids) > max_answer_tokens else a_ids + eos[:1]
        out.append((p_ids + a_ids, len(p_ids)))
    return out


def _batch(examples: list[tuple[list[int], int]], pad: int, device) -> dict:
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, start) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, start: len(ids)] = torch.tensor(ids[start:])
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def lora_config(training: Training, n_layers: int):
    from peft import LoraConfig

    layers = None
    if training.top_layers and training.top_layers < n_layers:
        layers = list(range(n_layers - training.top_layers, n_layers))
    return LoraConfig(r=training.rank, lora_alpha=training.alpha, lora_dropout=training.dropout,
                      target_modules=list(training.targets) if training.targets else None,
                      layers_to_transform=layers, task_type="CAUSAL_LM")


def finetune(lm: LoadedModel, pairs: list[tuple[str, str]], training: Training, out: str | Path,
             trait: str, pole: str, progress=None, data: str = "persona") -> AdapterCard:
    """Train one LoRA adapter on `pairs` and save it (peft format) with its card and loss curve in `out`.

    The model is left as it was: the adapter is unloaded from it after saving. `progress` is a tqdm-like
    callable for a progress bar."""
    out = Path(out)
    if not pairs:
        raise ValueError("no training pairs: nothing to fine-tune on")
    random.seed(training.seed)
    torch.manual_seed(training.seed)
    examples = encode_pairs(lm, pairs, training.max_answer_tokens)
    model = _with_adapter(lm, training)
    steps_per_epoch = math.ceil(len(examples) / training.batch_size)
    bar = progress(total=steps_per_epoch * training.epochs, desc=f"LoRA {trait} {pole}") if progress else None
    started = time.perf_counter()
    try:
        losses = _train(lm, model, examples, training, bar)
        seconds = time.perf_counter() - started
        _save_adapter(model, out)
    finally:
        if bar:
            bar.close()
        _unload(lm, model)
    size = sum(f.stat().st_size for f in out.iterdir() if f.suffix == ".safetensors")
    tail = losses[-steps_per_epoch:]
    card = AdapterCard(trait, pole, lm.name, lm.identity.fingerprint, len(examples), len(losses), round(seconds, 1),
                       round(sum(tail) / len(tail), 4), losses,
                       {**asdict(training), "targets": list(training.targets or []), "quantization": lm.quantization,
                        "device": lm.device.type, "data": data},
                       size)
    card.save(out)
    return card


def _with_adapter(lm: LoadedModel, training: Training):
    """`lm.model` wrapped with a fresh LoRA adapter shaped by `training`, in training mode; a 4-bit or 8-bit base is
    prepared for k-bit training first (QLoRA), which needs CUDA."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    base = lm.model
    if lm.quantization in ("nf4", "int8"):
        if lm.device.type != "cuda":
            raise ValueError("training on a 4-bit or 8-bit base (QLoRA) needs a CUDA device; on a CPU load the "
                             "model with --quantization none")
        base = prepare_model_for_kbit_training(base)
    model = get_peft_model(base, lora_config(training, lm.identity.n_layers))
    model.train()
    return model


def _train(lm: LoadedModel, model, examples: list[tuple[list[int], int]], training: Training, bar) -> list[float]:
    """`training.epochs` passes over the examples, each in a fresh random order, with AdamW on the adapter's
    parameters and a linear warm-up then constant learning rate; the loss of every step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=training.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, training.warmup_steps)))
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else eos_ids(lm)[0]
    losses: list[float] = []
    for _ in range(training.epochs):
        order = list(range(len(examples)))
        random.shuffle(order)
        for i in range(0, len(order), training.batch_size):
            batch = _batch([examples[j] for j in order[i: i + training.batch_size]], pad, lm.device)
            losses.append(_step(model, batch, params, optimizer, scheduler))
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def _step(model, batch: dict, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler) -> float:
    """One optimisation step on one batch, gradients clipped to norm 1; the batch's loss."""
    loss = model(**batch).loss
    loss.backward()
    loss = loss.detach()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _save_adapter(model, out: Path) -> None:
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # peft's empty model card template; training.json says it all


def _unload(lm: LoadedModel, model) -> None:
    """Take the LoRA layers out again, so `lm.model` is the plain, frozen, eval-mode model it was."""
    model.unload()
    lm.model.eval()
    for p in lm.model.parameters():
        p.requires_grad_(False)
