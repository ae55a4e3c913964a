"""The real default model end to end (slow): GGUF -> cached safetensors -> nf4; identify; steer; texts differ."""

from __future__ import annotations

import pytest

from steering import Intervention, load_model, steer
from steering.engine.generation import Decoding, generate_chats
from steering.npti.identify import identify
from steering.methods.prompts import plain_chat

pytestmark = pytest.mark.slow

DESCRIPTIONS = {
    "high": ["You are outgoing and talkative. You love parties, meeting new people and being the centre of attention; "
             "a crowd gives you energy and you always speak up first.",
             "You are cheerful, energetic and sociable. You fill your weekends with friends, you make conversation "
             "with strangers easily, and you feel restless when you are alone for long."],
    "low": ["You are quiet and reserved. You prefer a book or one close friend to a crowd, you rarely start "
            "conversations, and social events leave you drained and eager to go home.",
            "You are a private, solitary person. You keep to yourself, speak only when you have something to say, "
            "and you recharge by spending long stretches of time alone."],
}
QUESTIONS = [
    "Your neighbour invites you to a street party where you will know almost no one. How do you spend the evening?",
    "You have a free Saturday with no plans. What do you do?",
    "A new colleague joins your team. How do you get to know them?",
    "How do you feel about speaking up in a large meeting?",
    "Friends ask you to join a group trip with people you have never met. What do you say?",
    "What is your idea of a perfect birthday?",
]



@pytest.fixture(scope="module")
def default_lm(default_home):
    """bf16, what the app runs on a CPU (bitsandbytes' 4-bit path is slow on some CPUs and, with a LoRA adapter
    attached, broken on others: see test_a_lora_adapter_is_refused_where_it_would_break_a_4bit_model)."""
    return load_model("default", quantization="bf16", home=default_home)


def test_default_model_loads_from_the_packaged_gguf(default_lm, default_home):
    assert default_lm.identity.n_layers == 30 and default_lm.identity.width == 1536
    assert default_lm.name == "SmolLM2-135M-Instruct" and default_lm.quantization == "bf16"
    nf4 = load_model("default", quantization="nf4", home=default_home)
    assert nf4.quantization == "nf4" and nf4.identity == default_lm.identity
    [answer] = generate_chats(nf4, [plain_chat(QUESTIONS[1])], Decoding(max_new_tokens=12))
    assert answer.text


def test_a_lora_adapter_never_leaves_a_4bit_model_broken(default_home):
    """On a CPU with AVX512-BF16, attaching a peft LoRA adapter to bitsandbytes' 4-bit layers garbled even the base
    path (measured: mean log-probability per token -16.5 instead of -2.8 with the adapter switched off), for good.
    So adapters are refused on a 4-bit model on a CPU, before anything is touched, with the fix in the message."""
    import torch

    from steering.engine.adapters import loaded_adapters
    from steering.npti.forced import answer_logprob
    from steering.methods.dispatch import load_adapter

    lm = load_model("default", quantization="nf4", home=default_home)
    example = [("How was your weekend?", "It was lovely, thanks. I went for a long walk and read a book.")]
    before = answer_logprob(lm, example)
    with pytest.raises(ValueError, match="--quantization bf16"):
        load_adapter(lm, "Extraversion", "high")
    assert not loaded_adapters(lm)
    after = answer_logprob(lm, example)
    assert torch.allclose(torch.tensor(before), torch.tensor(after), atol=1e-3)


def test_identify_then_steer_changes_the_text(default_lm, tmp_path):
    result = identify(default_lm, "Extraversion", QUESTIONS, DESCRIPTIONS, decoding=Decoding(max_new_tokens=40),
                      batch_size=6, answers_path=tmp_path / "answers.jsonl")
    assert len(result.high) >= 2000 and len(result.low) >= 2000
    assert result.stats["high"].n_tokens > 100
    chats = [plain_chat(q) for q in QUESTIONS[:2]]
    decoding = Decoding(max_new_tokens=32)
    plain = generate_chats(default_lm, chats, decoding)
    rows = [Intervention(result.high, 1.0, result.low), Intervention(result.low, 1.0, result.high)]
    with steer(default_lm, rows, seeds=0):
        steered = generate_chats(default_lm, chats, decoding)
    assert all(a.text for a in steered)
    assert [a.text for a in steered] != [a.text for a in plain]
    assert steered[0].text != plain[0].text and steered[1].text != plain[1].text


def test_every_shipped_profile_fits_the_real_default_model(default_lm):
    from steering import POLES, TRAITS
    from steering.methods.dispatch import load_pole

    for trait in TRAITS:
        for pole in POLES:
            target, other = load_pole(default_lm, trait, pole)  # checks identity against the loaded model
            assert target.pole == pole and other.pole != pole


def _margin(lm, pairs, adapter=None) -> float:
    """How much more likely (mean log-probability per token) the model finds the corpus's high answers than its low
    answers to the same questions, read with teacher forcing."""
    from steering.npti.forced import answer_logprob

    high = answer_logprob(lm, [(p.question, p.high) for p in pairs], [adapter] * len(pairs) if adapter else None)
    low = answer_logprob(lm, [(p.question, p.low) for p in pairs], [adapter] * len(pairs) if adapter else None)
    return sum(high) / len(high) - sum(low) / len(low)


@pytest.mark.parametrize("trait", ["Openness", "Conscientiousness", "Extraversion", "Agreeableness", "Neuroticism"])
def test_each_shipped_adapter_and_vector_makes_its_poles_answers_more_likely(default_lm, trait):
    """Direction of effect without sampling or a judge: on 8 development pairs the model is scored reading our high
    and our low answers. The high adapter (and the vector pushed high) must raise the high answers' likelihood
    relative to the low ones' above the base model's margin, the low ones must lower it. (This replaces a check on
    the old embedding proxy, which was too noisy to gate anything: it flipped on a CPU with other 4-bit kernels.)"""
    from steering.methods.corpus import load_corpus
    from steering.methods.dispatch import load_adapter, load_vector
    from steering.methods.vector import VectorPush, steer_vectors

    pairs = load_corpus(trait, "dev")[:8]
    base = _margin(default_lm, pairs)
    high = _margin(default_lm, pairs, load_adapter(default_lm, trait, "high"))
    low = _margin(default_lm, pairs, load_adapter(default_lm, trait, "low"))
    assert high > base > low, (high, base, low)  # measured gaps 0.04-0.43 (Agreeableness low is the smallest)
    vec = load_vector(default_lm, trait)
    margins = {}
    for pole in ("high", "low"):
        push = VectorPush(vec, pole, 0.07)
        with steer_vectors(default_lm, [push] * len(pairs), steer_prompt=True):
            margins[pole] = _margin(default_lm, pairs)
    assert margins["high"] > base > margins["low"], (margins, base)


def test_a_round_of_every_method_is_one_batch_on_the_real_model(default_lm):
    from steering.methods.dispatch import METHODS, Request, answer_rows

    rows = [(Request(m, "Extraversion", "low", seed=3), QUESTIONS[0]) for m in METHODS]
    out = answer_rows(default_lm, rows, Decoding(max_new_tokens=24))
    assert [p["method"] for _, p in out] == list(METHODS)
    assert all(a.text for a, _ in out)
    assert len({a.text for a, _ in out}) >= 4  # prompts, adapter and neurons each change the answer


def test_generate_npti_and_sft_work_for_all_ten_poles_with_shipped_artefacts(default_lm, default_home, tmp_path,
                                                                     monkeypatch):
    import json

    from steering import POLES, TRAITS
    from steering.cli import main

    monkeypatch.setenv("PERSONA_STUDIO_HOME", str(default_home))  # reuse the converted model
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": QUESTIONS[0]}) + "\n")
    for trait in TRAITS:
        for pole in POLES:
            out = tmp_path / f"{trait}_{pole}.jsonl"
            for method in ("npti", "sft"):
                assert main(["generate", "--model", "default", "--questions", str(questions), "--method", method,
                             "--trait", trait, "--pole", pole, "--max-new-tokens", "6", "--out", str(out)]) == 0
                row = json.loads(out.read_text())
                assert row["answer"] and row["method"] == method
                assert row["strength"] > 0 if method == "npti" else row["adapter"] == f"{trait}_{pole}"
