"""The real default model end to end (slow): GGUF -> cached safetensors -> nf4; identify; steer; texts differ."""

from __future__ import annotations

import pytest

from steering import Intervention, load_model, steer
from steering.generation import Decoding, generate_chats
from steering.identify import identify
from steering.prompts import plain_chat

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
    return load_model("default", quantization="nf4", home=default_home)


def test_default_model_loads_from_the_packaged_gguf(default_lm, tmp_path_factory):
    assert default_lm.identity.n_layers == 30 and default_lm.identity.width == 1536
    assert default_lm.name == "SmolLM2-135M-Instruct" and default_lm.quantization == "nf4"


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
    from steering.methods import load_pole

    for trait in TRAITS:
        for pole in POLES:
            target, other = load_pole(default_lm, trait, pole)  # checks identity against the loaded model
            assert target.pole == pole and other.pole != pole


# The traits whose shipped artefacts move the offline proxy apart most clearly: NPTI's defaults on Openness (see the
# strength sweep in the manifest), and the LoRA adapters on Extraversion, the one trait whose persona-prompted
# training answers themselves score above (high) and below (low) the base model's answers on the proxy.
NPTI_PROXY_TRAIT = "Openness"
SFT_PROXY_TRAIT = "Extraversion"


@pytest.fixture(scope="module")
def proxy_score(default_lm):
    """Mean proxy score of a method's answers to every development question of a trait, with the strength sweep's
    protocol (96 new tokens, greedy); memoised, so the base model is scored once per trait."""
    from functools import cache

    from steering import bank
    from steering.methods import Request, answer
    from steering.proxy import TraitProxy

    proxy = TraitProxy()

    @cache
    def score(trait: str, method: str, pole: str = "high") -> float:
        questions = bank.questions(trait, "dev")
        answers, _ = answer(default_lm, Request(method, trait, pole), questions, Decoding(max_new_tokens=96))
        return float(proxy.score(trait, [a.text for a in answers]).mean())

    return score


def test_shipped_high_and_low_profiles_move_the_proxy_in_opposite_directions(proxy_score):
    """At the shipped default strengths, on development questions the search never saw. The effect is small on this
    135M model and the proxy is weak (see the README): this checks direction, not size."""
    t = NPTI_PROXY_TRAIT
    high, base, low = proxy_score(t, "npti", "high"), proxy_score(t, "base"), proxy_score(t, "npti", "low")
    assert high > base > low, (high, base, low)


def test_shipped_adapters_separate_the_poles_on_the_proxy(proxy_score):
    """The fine-tuned baseline, same protocol. The high adapter moves the proxy up from the base model and well
    above the low adapter. The low adapter does NOT move it below the base model: answering in the first person as
    a persona at all lifts this proxy (measured: base 0.032, high 0.048, low 0.036 on Extraversion), although its
    texts read introverted ("I'd rather be alone than with others ..."). See the README: the proxy is weak."""
    t = SFT_PROXY_TRAIT
    high, base, low = proxy_score(t, "sft", "high"), proxy_score(t, "base"), proxy_score(t, "sft", "low")
    assert high > base and high - low > 0.005, (high, base, low)


def test_a_round_of_all_five_methods_is_one_batch_on_the_real_model(default_lm):
    from steering.methods import METHODS, Request, answer_rows

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
