"""Batched generation's user-facing promises: per-row seeds, streaming text, and answers trimmed to whole
sentences for the pages."""

from __future__ import annotations

import pytest

from steering.engine.generation import Decoding, generate_chats, trim_to_sentence

SAMPLED = Decoding(max_new_tokens=12, do_sample=True, temperature=1.0, top_p=0.95)


def _chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_a_row_seed_gives_the_same_answer_whatever_else_is_in_the_batch(tiny_chat):
    # equal-length prompts: no padding, so the row's logits do not depend on its neighbours either
    alone = generate_chats(tiny_chat, [_chat("abcd")], SAMPLED, seed=[7])
    batch = generate_chats(tiny_chat, [_chat("wxyz"), _chat("abcd"), _chat("mnop")], SAMPLED, seed=[1, 7, 3])
    moved = generate_chats(tiny_chat, [_chat("abcd"), _chat("abcd")], SAMPLED, seed=[7, 8])
    assert batch[1] == alone[0] == moved[0]
    assert moved[1].text != moved[0].text  # a different seed, a different draw (random weights: near-uniform)


def test_row_seeds_differ_from_one_batch_seed_and_are_reproducible(tiny_chat):
    chats = [_chat("abcd")] * 3
    first = generate_chats(tiny_chat, chats, SAMPLED, seed=[1, 2, 3])
    assert generate_chats(tiny_chat, chats, SAMPLED, seed=[1, 2, 3]) == first
    assert len({a.text for a in first}) == 3
    with pytest.raises(ValueError, match="2 seeds for 3"):
        generate_chats(tiny_chat, chats, SAMPLED, seed=[1, 2])


def test_streamed_text_grows_to_the_final_answer(tiny_chat):
    seen: list[list[str]] = []
    answers = generate_chats(tiny_chat, [_chat("ab"), _chat("abcdef")], SAMPLED, seed=[4, 5], on_text=seen.append)
    assert len(seen) == SAMPLED.max_new_tokens
    assert seen[0] == ["", ""]
    for b, answer in enumerate(answers):
        texts = [step[b] for step in seen]
        assert all(len(a) <= len(b_) for a, b_ in zip(texts, texts[1:]))
        assert answer.text.startswith(texts[-1])  # the stream lags the chosen token by one step


@pytest.mark.parametrize("text, finished, shown", [
    ("I would go. Then I might need to", False, "I would go."),
    ("Really? Yes! And then", False, "Really? Yes!"),
    ('She said "fine." Then we', False, 'She said "fine."'),
    ("It ends here.", False, "It ends here."),
    ("no sentence ends in this long run of words so I might need to", False,
     "no sentence ends in this long run of words so I might need…"),
    ("an answer that ended on its own without a stop", True, "an answer that ended on its own without a stop"),
    ("version 2.5 is", False, "version 2.5…"),
    ("", False, ""),
])
def test_trimmed_answers_end_on_a_sentence_or_a_marked_cut(text, finished, shown):
    assert trim_to_sentence(text, finished) == shown


def test_no_trimmed_answer_ends_mid_word():
    words = "one two three. four five six seven! eight nine ten".split()
    for n in range(1, len(words) + 1):
        for cut in range(1, len(words[n - 1]) + 1):
            raw = " ".join(words[:n - 1] + [words[n - 1][:cut]])
            shown = trim_to_sentence(raw, finished=False)
            assert shown.endswith((".", "!", "?", "…")), shown
            assert raw.startswith(shown.rstrip("…"))
            if shown.endswith("…") and " " in raw:
                assert raw[len(shown) - 1] == " "  # the cut is at a space: the last shown word is whole
