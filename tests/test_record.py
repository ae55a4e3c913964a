"""Recording counts exactly the generated tokens of each row: not the prompt, not padding, not past EOS."""

from __future__ import annotations

import pytest
import torch
from helpers import capture, hook_count
from transformers import LogitsProcessor, LogitsProcessorList

from steering import ActivationStats, Bins, record_activations

EOS = 2


class ForceStops(LogitsProcessor):
    """Row b emits EOS as its stops[b]-th generated token (None: never), and never EOS before."""

    def __init__(self, prompt_len: int, stops: list[int | None]):
        self.prompt_len, self.stops = prompt_len, stops

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len + 1  # the generated token about to be chosen, 1-based
        scores = scores.clone()
        for b, stop in enumerate(self.stops):
            scores[b, EOS] = -float("inf")
            if stop == step:
                scores[b] = -float("inf")
                scores[b, EOS] = 0.0
        return scores


def test_counts_exactly_the_generated_tokens_of_each_row(tiny):
    lm = tiny
    ids = torch.randint(3, 40, (3, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    mask[2, :4] = 0
    ids[mask == 0] = 0
    stops, max_new = [3, 7, None], 10
    bins = Bins(-0.5, 0.5, 200)
    with torch.no_grad(), record_activations(lm, [EOS], bins, chunk=4) as stats:
        out = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                pad_token_id=0, eos_token_id=EOS,
                                logits_processor=LogitsProcessorList([ForceStops(ids.shape[1], stops)]))
    assert hook_count(lm) == 0
    # Row b's counted inputs are its generated tokens before EOS; the last generated token is never an input.
    expected_rows = [3 - 1, 7 - 1, max_new - 1]
    assert stats.row_tokens == expected_rows
    assert stats.n_tokens == sum(expected_rows)

    # Recompute from one plain forward over the finished sequences, at exactly those positions.
    full_mask = torch.cat([mask, torch.ones(3, out.shape[1] - ids.shape[1], dtype=mask.dtype)], dim=1)
    with torch.no_grad(), capture(lm) as seen:
        lm.model(input_ids=out, attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0))
    p = ids.shape[1]
    values = torch.stack([
        torch.cat([seen[layer][0][1][b, p:p + n] for b, n in enumerate(expected_rows)]) for layer in seen
    ], dim=1).float()  # [tokens, L, W]
    assert values.shape[0] == stats.n_tokens
    assert torch.equal(stats.fire, (values > 0).sum(0))
    assert torch.equal(stats.hist.sum(0), torch.full_like(stats.hist.sum(0), stats.n_tokens))
    torch.testing.assert_close(stats.max, values.amax(0), rtol=0, atol=1e-5)

    # The 95th percentile from the histogram is within one bin width of the exact one.
    k = int(torch.tensor(0.95 * stats.n_tokens).ceil())
    exact = values.sort(0).values[k - 1]
    assert (stats.quantile(0.95) - exact).abs().max() <= bins.width


def test_prompt_pass_alone_records_nothing_and_stats_round_trip(tiny_llama, tmp_path):
    with torch.no_grad(), record_activations(tiny_llama, [EOS]) as stats:
        tiny_llama.model(input_ids=torch.randint(3, 40, (2, 5)))
    assert stats.n_tokens == 0 and int(stats.fire.sum()) == 0
    with torch.no_grad(), record_activations(tiny_llama, [EOS], stats=stats):
        tiny_llama.model.generate(input_ids=torch.randint(3, 40, (2, 5)), max_new_tokens=5, min_new_tokens=5,
                                  do_sample=False, pad_token_id=0)
    assert stats.row_tokens == [4, 4]
    stats.save(tmp_path / "s.pt")
    again = ActivationStats.load(tmp_path / "s.pt")
    assert again.n_tokens == stats.n_tokens and torch.equal(again.hist, stats.hist)
    assert torch.equal(again.quantile(), stats.quantile())


def test_hooks_removed_when_generation_raises(tiny_llama):
    with pytest.raises(RuntimeError, match="stop"):
        with record_activations(tiny_llama, [EOS]):
            raise RuntimeError("stop")
    assert hook_count(tiny_llama) == 0
