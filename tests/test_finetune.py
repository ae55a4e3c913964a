"""The LoRA baseline on tiny random-weight models: training end to end, save/reload, and mixed batches in which
rows use different adapters, none, prompts or NPTI interventions."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import random_adapter, tiny_model, tiny_tokenizer
from helpers import hook_count, pole_pair

from steering.engine.adapters import BASE, attach_adapter, loaded_adapters
from steering.methods.finetune import AdapterCard, Training, encode_pairs, finetune, training_pairs
from steering.engine.generation import Decoding, encode_chats, generate_chats
from steering.methods.dispatch import MethodUnavailable, Request, answer, answer_rows
from steering.methods.prompts import plain_chat

PAIRS = [("how was your weekend?", "wonderful! i went dancing all night with friends."),
         ("what do you do at a party?", "i talk to everyone and dance on the tables!"),
         ("do you like mondays?", "yes! new people to meet, new things to do."),
         ("what is your hobby?", "throwing parties, loud ones, every week.")]
CHATS = [plain_chat(q) for q, _ in PAIRS]
FAST = Training(rank=4, alpha=8, epochs=6, batch_size=2, warmup_steps=1, learning_rate=5e-2, targets=None,
                max_answer_tokens=40)


def _logits(lm, chats, adapters=None):
    enc = encode_chats(lm, chats)
    kw = {"adapter_names": [a or BASE for a in adapters]} if adapters else {}
    with torch.no_grad():
        return lm.model(**enc, **kw).logits


def _answer_loss(lm, pairs, adapters=None) -> float:
    """Mean loss on the answer tokens (what training minimises), with per-row adapters."""
    from steering.methods.finetune import _batch

    batch = _batch(encode_pairs(lm, pairs, 40), 0, lm.device)
    kw = {"adapter_names": adapters} if adapters else {}
    with torch.no_grad():
        return float(lm.model(**batch, **kw).loss)


def _random_adapter(lm, folder, seed):
    """Save an adapter with random LoRA weights; return the in-memory peft model's logits on CHATS."""
    return random_adapter(lm, folder, seed, CHATS)


@pytest.fixture
def chat_lm():
    lm = tiny_model("llama")
    lm.tokenizer = tiny_tokenizer()
    return lm


def test_training_runs_end_to_end_and_the_adapter_learns(chat_lm, tmp_path):
    base_logits = _logits(chat_lm, CHATS)
    base_loss = _answer_loss(chat_lm, PAIRS)
    card = finetune(chat_lm, PAIRS, FAST, tmp_path / "a", "Extraversion", "high")
    # the model is left as it was
    assert not loaded_adapters(chat_lm)
    assert torch.equal(_logits(chat_lm, CHATS), base_logits)
    assert not any(p.requires_grad for p in chat_lm.model.parameters())
    # card, loss curve and adapter files
    assert card.steps == 12 and card.examples == 4 and card.size_bytes > 0
    assert card.fingerprint == chat_lm.identity.fingerprint
    again = AdapterCard.load(tmp_path / "a")
    assert again.losses == pytest.approx(card.losses, abs=1e-5) and again.final_loss == card.final_loss
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    assert sum(card.losses[-2:]) < sum(card.losses[:2])
    # the trained adapter changes the output and fits its data better than the base model
    attach_adapter(chat_lm, "x", tmp_path / "a")
    assert not torch.equal(_logits(chat_lm, CHATS, ["x"] * 4), base_logits)
    assert _answer_loss(chat_lm, PAIRS, ["x"] * 4) < base_loss


def test_a_saved_adapter_reloads_to_the_same_logits(tiny, tmp_path):
    if tiny.tokenizer is None:
        tiny.tokenizer = tiny_tokenizer()
    trained = _random_adapter(tiny, tmp_path / "a", seed=1)
    base = _logits(tiny, CHATS)
    attach_adapter(tiny, "a", tmp_path / "a")
    assert torch.equal(_logits(tiny, CHATS, ["a"] * 4), trained)
    assert not torch.equal(trained, base)


def test_base_rows_of_a_mixed_batch_are_exactly_the_model_without_adapters(chat_lm, tmp_path):
    plain = copy.deepcopy(chat_lm)
    a = _random_adapter(chat_lm, tmp_path / "a", seed=1)
    b = _random_adapter(chat_lm, tmp_path / "b", seed=2)
    attach_adapter(chat_lm, "a", tmp_path / "a")
    attach_adapter(chat_lm, "b", tmp_path / "b")
    rows = [None, "a", "b", None]
    mixed = _logits(chat_lm, CHATS, rows)
    base = _logits(plain, CHATS)
    assert torch.equal(mixed[0], base[0]) and torch.equal(mixed[3], base[3])
    assert torch.allclose(mixed[1], a[1], atol=1e-5) and torch.allclose(mixed[2], b[2], atol=1e-5)
    # generation: base rows give the same tokens as the model with no adapter; rows naming none run as base
    decoding = Decoding(max_new_tokens=8, repetition_penalty=1.0)
    got = generate_chats(chat_lm, CHATS, decoding, adapters=rows)
    want = generate_chats(plain, CHATS, decoding)
    assert got[0] == want[0] and got[3] == want[3]
    assert generate_chats(chat_lm, CHATS, decoding) == want
    with pytest.raises(ValueError, match="not loaded: c"):
        generate_chats(chat_lm, CHATS, decoding, adapters=["c", None, None, None])


def test_adapter_from_another_model_is_refused(chat_lm, tmp_path):
    other = tiny_model("qwen2")
    other.tokenizer = tiny_tokenizer()
    finetune(other, PAIRS[:2], Training(rank=2, epochs=1, batch_size=2, targets=None), tmp_path / "q",
             "Extraversion", "high")
    with pytest.raises(ValueError, match="trained on another model"):
        attach_adapter(chat_lm, "q", tmp_path / "q")


def _ship(lm, root):
    """A profiles folder for a tiny model: NPTI profiles and a random adapter for Extraversion high."""
    folder = root / lm.name
    high, low = pole_pair(lm, n=12)
    high.save(folder / "Extraversion_high.json")
    low.save(folder / "Extraversion_low.json")
    _random_adapter(lm, folder / "adapters" / "Extraversion_high", seed=3)
    return folder


def test_a_round_of_every_method_runs_in_one_generate_call(chat_lm, tmp_path, monkeypatch):
    folder = _ship(chat_lm, tmp_path)
    calls = []
    question = "how was your weekend?"
    requests = [Request(m, "Extraversion", "high", strength=1.0, seed=5) for m in ("base", "simple", "p2", "sft", "npti")]
    decoding = Decoding(max_new_tokens=6)
    from steering.methods.dispatch import generate_chats as original

    def counting(*args, **kw):
        calls.append(len(args[1]))
        return original(*args, **kw)

    monkeypatch.setattr("steering.methods.dispatch.generate_chats", counting)
    out = answer_rows(chat_lm, [(r, question) for r in requests], decoding, folder)
    assert calls == [5]
    assert [p["method"] for _, p in out] == ["base", "simple", "p2", "sft", "npti"]
    assert out[3][1]["adapter"] == "Extraversion_high" and out[4][1]["strength"] == 1.0
    assert hook_count(chat_lm) == 0
    # the sft method answers through the CLI-facing entry point too
    sft, params = answer(chat_lm, requests[3], [question], decoding, folder)
    assert params["adapter"] == "Extraversion_high" and sft[0].n_tokens > 0


def test_sft_without_an_adapter_says_how_to_train_one(chat_lm, tmp_path):
    with pytest.raises(MethodUnavailable, match="steering finetune --data corpus --trait Openness --pole low"):
        answer(chat_lm, Request("sft", "Openness", "low"), ["hi?"], Decoding(max_new_tokens=2), tmp_path)


def test_training_pairs_read_one_pole(tmp_path):
    path = tmp_path / "answers.jsonl"
    rows = [{"trait": "Openness", "pole": p, "question": f"q{i}?", "answer": f"a{i}"} for i, p in
            enumerate(["high", "low", "high"])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_pairs(path, "Openness", "high") == [("q0?", "a0"), ("q2?", "a2")]
    with pytest.raises(ValueError, match="no answers for Extraversion low"):
        training_pairs(path, "Extraversion", "low")


@pytest.mark.parametrize("failure", [RuntimeError("progress bar broke"), KeyboardInterrupt()])
def test_a_generation_that_fails_midway_leaves_no_adapter_hooks(chat_lm, tmp_path, failure):
    """peft's per-row adapter hooks must not outlive a generate that raises: afterwards a plain forward with
    another batch size runs, and the model has exactly the hooks it had before."""
    _random_adapter(chat_lm, tmp_path / "a", seed=1)
    attach_adapter(chat_lm, "a", tmp_path / "a")

    def hooks() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in chat_lm.model.modules())

    before = hooks()

    def fail(step):
        if step == 3:
            raise failure

    with pytest.raises(type(failure)):
        generate_chats(chat_lm, CHATS[:3], Decoding(max_new_tokens=8), adapters=["a", None, "a"], on_step=fail)
    assert hooks() == before
    plain = _logits(chat_lm, CHATS[:2])  # another batch size: failed with a leaked adapter_names hook
    assert plain.shape[0] == 2
    assert len(generate_chats(chat_lm, CHATS[:2], Decoding(max_new_tokens=4), adapters=["a", None])) == 2
