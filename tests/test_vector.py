"""Activation-vector steering, the trait read-out and teacher-forced reading, exactly, on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import capture, random_vector, tokens
from steering.npti.forced import encode_forced, record_forced, residual_stats
from steering.npti.profile import ProfileError
from steering.engine.sites import ModelIdentity, residual_modules
from steering.methods.vector import TraitVector, VectorPush, build_vector, read_trait, steer_vectors

PAIRS = [("how are you?", "i love big parties and loud music.", "i stay home and read quietly."),
         ("what now?", "let us call everyone over tonight!", "a calm walk alone, i think."),
         ("weekend plans?", "a festival with all my friends.", "tea, a book, and an early night.")]


def block_outputs(lm, ids):
    seen = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, out.clone()))
               for i, m in enumerate(residual_modules(lm.sites))]
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()
    return logits, seen


def hooks(lm) -> int:
    mods = residual_modules(lm.sites) + [lm.sites.root]
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)


def test_strength_zero_is_bit_identical_to_the_plain_model(tiny):
    ids = tokens(2)
    plain, _ = block_outputs(tiny, ids)
    vec = random_vector(tiny)
    with steer_vectors(tiny, [VectorPush(vec, "high", 0.0), VectorPush(vec, "low", 0.0)], steer_prompt=True):
        steered, _ = block_outputs(tiny, ids)
    assert torch.equal(plain, steered)
    assert hooks(tiny) == 0


def test_a_row_without_a_vector_is_untouched_while_others_are_steered(tiny):
    ids = tokens(3)
    plain, _ = block_outputs(tiny, ids)
    vec = random_vector(tiny, layers=(0, 1))
    with steer_vectors(tiny, [VectorPush(vec, "high", 0.5), None, VectorPush(vec, "low", 0.3)], steer_prompt=True):
        steered, _ = block_outputs(tiny, ids)
    assert torch.equal(plain[1], steered[1])
    assert not torch.allclose(plain[0], steered[0]) and not torch.allclose(plain[2], steered[2])


def test_the_addition_is_sign_times_strength_times_norm_times_unit_vector(tiny):
    ids = tokens(2)
    _, before = block_outputs(tiny, ids)
    vec = random_vector(tiny, seed=3, layers=(0,))
    with steer_vectors(tiny, [VectorPush(vec, "high", 0.7), VectorPush(vec, "low", 0.7)], steer_prompt=True):
        _, after = block_outputs(tiny, ids)
    unit = torch.from_numpy(vec.direction[0] / np.linalg.norm(vec.direction[0])).float()
    expected = 0.7 * float(vec.norm[0]) * unit
    torch.testing.assert_close(after[0][0] - before[0][0], expected.expand_as(before[0][0]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after[0][1] - before[0][1], -expected.expand_as(before[0][1]), atol=1e-5, rtol=1e-5)


def test_only_decoding_steps_are_steered_unless_asked(tiny):
    ids = tokens(2)
    plain, _ = block_outputs(tiny, ids)
    vec = random_vector(tiny)
    with steer_vectors(tiny, [VectorPush(vec, "high", 1.0)] * 2):
        prompt_pass, _ = block_outputs(tiny, ids)  # a forward with no cache is a prompt pass: untouched
    assert torch.equal(plain, prompt_pass)


def test_hooks_are_removed_when_generation_raises(tiny):
    vec = random_vector(tiny)
    with pytest.raises(ValueError, match="batch of 2"):
        with steer_vectors(tiny, [VectorPush(vec, "high", 1.0)], steer_prompt=True):
            block_outputs(tiny, tokens(2))
    assert hooks(tiny) == 0


def test_bad_vector_input_is_refused_with_one_clear_line(tiny, tiny_llama):
    vec = random_vector(tiny)
    with pytest.raises(ValueError, match="strength must be between 0 and 4"):
        VectorPush(vec, "high", 5.0)
    with pytest.raises(ValueError, match="layer 99 does not exist"):
        VectorPush(vec, "high", 1.0, (99,))
    other = ModelIdentity("other", tiny.sites.n_layers + 1, tiny.sites.width, "x")
    alien = TraitVector("Extraversion", other, np.ones((other.n_layers, 4)), np.ones(other.n_layers),
                        np.zeros(other.n_layers), 0, (0,))
    with pytest.raises(ProfileError, match="made for other"):
        alien.check_model(tiny.identity)


def test_a_vector_saves_and_loads_and_refuses_another_model(tiny, tmp_path):
    vec = random_vector(tiny, layers=(0, 1))
    vec.meta["defaults"] = {"high": {"strength": 0.2, "layers": [1]}}
    vec.save(tmp_path)
    back = TraitVector.load(tmp_path, "Extraversion", expect=tiny.identity)
    assert np.array_equal(back.direction, vec.direction.astype(np.float32)) and back.layers == (0, 1)
    assert back.meta["defaults"]["high"]["strength"] == 0.2
    other = ModelIdentity("other", tiny.sites.n_layers, tiny.sites.width + 1, "y")
    with pytest.raises(ProfileError, match="not for other"):
        TraitVector.load(tmp_path, "Extraversion", expect=other)


def test_the_readout_is_the_rescaled_projection_of_the_state_that_chose_each_token(tiny_chat):
    from steering.engine.generation import Decoding, generate_chats
    from steering.methods.prompts import plain_chat

    vec = build_vector(tiny_chat, "Extraversion", PAIRS, batch_size=2)
    chats = [plain_chat("hello there?"), plain_chat("hi?")]
    layer = residual_modules(tiny_chat.sites)[vec.readout_layer]
    states: list = []
    handle = layer.register_forward_hook(lambda _m, _i, out: states.append(out[:, -1].clone()))
    try:
        with read_trait(tiny_chat, [vec, None]) as values:
            answers = generate_chats(tiny_chat, chats, Decoding(max_new_tokens=5))
    finally:
        handle.remove()
    unit = torch.from_numpy(vec.unit()[vec.readout_layer]).float()
    expected = [((s[0] @ unit).item() - float(vec.midpoint[vec.readout_layer])) / float(vec.scale[vec.readout_layer])
                for s in states]
    assert values[1] == [] and len(values[0]) == len(states) >= answers[0].n_tokens
    np.testing.assert_allclose(values[0], expected, rtol=1e-4, atol=1e-4)
    assert hooks(tiny_chat) == 0


def test_reading_counts_the_answer_tokens_only(tiny_chat):
    examples = [(q, h) for q, h, _ in PAIRS]
    batch = encode_forced(tiny_chat, examples)
    one_by_one = record_forced(tiny_chat, examples, batch_size=1)
    assert one_by_one.n_tokens == int(batch.answer.sum())
    # the same counts by hand: a plain forward per example, positions from the answer's first token on
    fire = torch.zeros_like(one_by_one.fire)
    for q, a in examples:
        single = encode_forced(tiny_chat, [(q, a)])
        with capture(tiny_chat) as seen, torch.no_grad():
            tiny_chat.model(input_ids=single.input_ids)
        where = single.answer[0]
        for layer, calls in seen.items():
            fire[layer] += (calls[0][1][0][where] > 0).sum(0)
    assert torch.equal(fire, one_by_one.fire)
    batched = record_forced(tiny_chat, examples, batch_size=3)
    assert batched.n_tokens == one_by_one.n_tokens
    assert (batched.fire - one_by_one.fire).abs().max() <= 1  # right padding: equal up to float rounding


def test_the_vector_is_the_difference_of_the_poles_mean_residuals(tiny_chat):
    vec = build_vector(tiny_chat, "Extraversion", PAIRS, batch_size=2)
    high = residual_stats(tiny_chat, [(q, h) for q, h, _ in PAIRS]).mean()
    low = residual_stats(tiny_chat, [(q, lo) for q, _, lo in PAIRS]).mean()
    np.testing.assert_allclose(vec.direction, (high - low).float().numpy(), rtol=1e-4, atol=1e-5)
    assert 0 <= vec.readout_layer < tiny_chat.sites.n_layers


def test_a_corpus_with_one_pole_empty_is_refused(tiny_chat):
    from steering.npti.identify import identify_corpus

    empty_low = [(q, h, "") for q, h, _ in PAIRS]
    with pytest.raises(ValueError, match="no low-pole answers"):
        build_vector(tiny_chat, "Extraversion", empty_low)
    with pytest.raises(ValueError, match="no low-pole answers"):
        identify_corpus(tiny_chat, "Extraversion", empty_low)


def test_corpus_identification_selects_by_the_papers_rule(tiny_chat):
    from steering.npti.identify import Selection, identify_corpus

    result = identify_corpus(tiny_chat, "Extraversion", PAIRS, selection=Selection(top_k=10, min_diff=0.5))
    for profile in (result.high, result.low):
        assert profile.meta["source"] == "corpus" and len(profile) >= 10
        assert np.all(np.diff(profile.diff) <= 0)  # sorted by diff, descending
        assert np.all(profile.diff[10:] >= 0.5)
