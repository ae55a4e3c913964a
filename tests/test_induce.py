"""Induction: exact where the maths is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import capture, hook_count, pole_pair, random_profile, tokens

from steering import Intervention, steer
from steering.npti.profile import ProfileError
from steering.engine.sites import ModelIdentity


def logits(lm, ids, **kw):
    with torch.no_grad():
        return lm.model(input_ids=ids, **kw).logits


def generate(lm, ids, n=8, **kw):
    with torch.no_grad():
        return lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False, pad_token_id=0, **kw)


def test_strength_zero_is_bit_exact_inside_and_after(tiny):
    high, _ = pole_pair(tiny)
    ids = tokens()
    before = logits(tiny, ids)
    gen_before = generate(tiny, ids)
    with steer(tiny, [Intervention(high, 0.0)] * 2, steer_prompt=True):
        assert hook_count(tiny) > 0
        inside = logits(tiny, ids)
        gen_inside = generate(tiny, ids)
    assert torch.equal(inside, before)
    assert torch.equal(gen_inside, gen_before)
    assert hook_count(tiny) == 0
    assert torch.equal(logits(tiny, ids), before)


def test_steering_changes_output_and_leaves_model_unchanged_after(tiny):
    high, low = pole_pair(tiny, n=40)
    ids = tokens()
    before, gen_before = logits(tiny, ids), generate(tiny, ids)
    with steer(tiny, [Intervention(high, 4.0, low)] * 2, steer_prompt=True):
        assert not torch.equal(logits(tiny, ids), before)
    assert hook_count(tiny) == 0
    assert torch.equal(logits(tiny, ids), before)
    assert torch.equal(generate(tiny, ids), gen_before)


def test_hooks_are_removed_when_the_block_raises(tiny):
    high, low = pole_pair(tiny)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny, [Intervention(high, 1.0, low)] * 2):
            generate(tiny, tokens(), n=2)
            raise RuntimeError("boom")
    assert hook_count(tiny) == 0


def test_batch_size_mismatch_raises_inside_generate_and_cleans_up(tiny_llama):
    high, _ = pole_pair(tiny_llama)
    with pytest.raises(ValueError, match="2 rows but the model ran a batch of 3"):
        with steer(tiny_llama, [Intervention(high, 1.0)] * 2):
            generate(tiny_llama, tokens(batch=3))
    assert hook_count(tiny_llama) == 0


def test_only_chosen_neurons_change_by_the_papers_formula(tiny):
    """Per layer, compare the steered output with the activation function applied to the same input: the only
    differences are the target's neurons (by p95 * strength * sigmoid(10 (diff - 0.15)) when every neuron is kept)
    and the opposite's neurons, clamped at <= 0."""
    high, low = pole_pair(tiny, n=30)
    strength = 1.3
    ids = tokens()
    with steer(tiny, [Intervention(high, strength, low)] * 2, keep_prob=1.0, steer_prompt=True), capture(tiny) as seen:
        logits(tiny, ids)
    expected_add = high.p95 * strength / (1 + np.exp(-10 * (high.diff - 0.15)))
    for layer, module in enumerate(tiny.sites.modules):
        (inp, out), = seen[layer]
        with torch.no_grad():
            plain = module(inp)  # no steering hooks now: the plain activation of the same input
        changed = set((out != plain).nonzero()[:, 2].tolist())
        t = high.layer == layer
        o = low.layer == layer
        target_idx = set(high.index[t].tolist())
        assert changed <= target_idx | set(low.index[o].tolist())
        for j, add in zip(high.index[t], expected_add[t]):
            torch.testing.assert_close(out[..., j] - plain[..., j], torch.full_like(plain[..., j], float(add)))
        clamped = out[..., torch.from_numpy(low.index[o])]
        assert (clamped <= 0).all()
        torch.testing.assert_close(clamped, plain[..., torch.from_numpy(low.index[o])].clamp(max=0))


def test_prompt_pass_untouched_by_default(tiny):
    high, low = pole_pair(tiny, n=40)
    ids = tokens()
    before = logits(tiny, ids)
    with steer(tiny, [Intervention(high, 3.0, low)] * 2):
        assert torch.equal(logits(tiny, ids), before)


def test_unsteered_row_in_a_steered_batch_generates_as_unsteered(tiny):
    high, low = pole_pair(tiny, n=40)
    ids = tokens(batch=2)
    plain = generate(tiny, ids, n=10)
    with steer(tiny, [Intervention(high, 4.0, low), None]):
        mixed = generate(tiny, ids, n=10)
    assert torch.equal(mixed[1], plain[1])
    assert not torch.equal(mixed[0], plain[0])


def test_rows_carry_different_profiles_and_strengths(tiny_llama):
    high, low = pole_pair(tiny_llama, n=30)
    ids = tokens(batch=3)
    rows = [Intervention(high, 2.0, low), Intervention(low, 1.0, high), None]
    with steer(tiny_llama, rows, keep_prob=1.0, steer_prompt=True), capture(tiny_llama) as seen:
        logits(tiny_llama, ids)
    inp, out = seen[0][0]
    with torch.no_grad():
        plain = tiny_llama.sites.modules[0](inp)
    for b, iv in enumerate(rows[:2]):
        t = iv.profile.layer == 0
        j = torch.from_numpy(iv.profile.index[t])
        torch.testing.assert_close(out[b][..., j] - plain[b][..., j],
                                   torch.from_numpy(iv.additions()[t]).expand_as(plain[b][..., j]))
    assert torch.equal(out[2], plain[2])


def test_several_poles_on_one_row_add_up_and_a_push_beats_a_clamp(tiny_llama):
    ext_high, ext_low = pole_pair(tiny_llama, n=20, seed=3)
    # Neuroticism's low pole pushes one neuron that Extraversion's low pole would clamp.
    neu_low = random_profile(tiny_llama, "low", n=10, seed=7, trait="Neuroticism")
    neu_low.layer[0], neu_low.index[0] = ext_low.layer[0], ext_low.index[0]
    neu_high = random_profile(tiny_llama, "high", n=10, seed=8, trait="Neuroticism")
    row = [Intervention(ext_high, 1.0, ext_low), Intervention(neu_low, 1.0, neu_high)]
    layer, j = int(ext_low.layer[0]), int(ext_low.index[0])
    with steer(tiny_llama, [row], keep_prob=1.0, steer_prompt=True), capture(tiny_llama) as seen:
        logits(tiny_llama, tokens(batch=1))
    inp, out = seen[layer][0]
    with torch.no_grad():
        plain = tiny_llama.sites.modules[layer](inp)
    torch.testing.assert_close(out[..., j] - plain[..., j],
                               torch.full_like(plain[..., j], float(Intervention(neu_low, 1.0).additions()[0])))


def test_same_seed_same_output_different_seed_different_mask(tiny_llama):
    high, low = pole_pair(tiny_llama, n=60)
    ids = tokens(batch=1)

    def run(seed):
        with steer(tiny_llama, [Intervention(high, 2.0, low)], seeds=seed), capture(tiny_llama) as seen:
            out = generate(tiny_llama, ids, n=4)
        return out, torch.cat([o for _, o in seen[0][1:]], dim=1)  # decoding steps only

    out1, act1 = run(5)
    out2, act2 = run(5)
    _, act3 = run(6)
    assert torch.equal(out1, out2) and torch.equal(act1, act2)
    assert not torch.equal(act1, act3)


def test_steer_prompt_leaves_left_padding_alone(tiny_llama):
    high, low = pole_pair(tiny_llama, n=40)
    ids = tokens(batch=2)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    with torch.no_grad(), capture(tiny_llama) as plain:
        tiny_llama.model(input_ids=ids, attention_mask=mask)
    with torch.no_grad(), steer(tiny_llama, [Intervention(high, 3.0, low)] * 2, steer_prompt=True), \
            capture(tiny_llama) as steered:
        tiny_llama.model(input_ids=ids, attention_mask=mask)
    _, out = steered[0][0]
    _, ref = plain[0][0]
    assert torch.equal(out[1, :3], ref[1, :3])
    assert not torch.equal(out[1, 3:], ref[1, 3:])


def test_bad_interventions_are_refused(tiny_llama):
    high, low = pole_pair(tiny_llama)
    for bad in (-0.1, 4.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            Intervention(high, bad)
    with pytest.raises(ValueError, match="other pole"):
        Intervention(high, 1.0, high)
    other = random_profile(tiny_llama, "low", trait="Openness")
    with pytest.raises(ValueError, match="other pole"):
        Intervention(high, 1.0, other)


def test_profile_for_another_model_is_refused(tiny_llama):
    high, _ = pole_pair(tiny_llama)
    high.model = ModelIdentity("other", tiny_llama.sites.n_layers, tiny_llama.sites.width, "0" * 16)
    with pytest.raises(ProfileError, match="made for other"):
        with steer(tiny_llama, [Intervention(high, 1.0)]):
            pass
    assert hook_count(tiny_llama) == 0
